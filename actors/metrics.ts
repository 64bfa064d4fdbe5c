/**
 * Prometheus metrics of one member (prom-client): a registry per process with the process
 * defaults (CPU, memory, event-loop lag), gauges read from the member's status when scraped
 * (nothing on the hot path), and counters/histograms for the volume's IO.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { BlockBackend } from '../nbd/backend.js';

export class MemberMetrics {
  readonly registry = new Registry();

  constructor(role: string, id: string) {
    this.registry.setDefaultLabels({ role, member: id });
    collectDefaultMetrics({ register: this.registry, prefix: 'freebs_' });
  }

  /** A gauge whose value(s) are read when scraped. */
  gauge(name: string, help: string, read: (set: (value: number, labels?: Record<string, string>) => void) => void, labelNames: string[] = []): void {
    new Gauge({
      name,
      help,
      labelNames,
      registers: [this.registry],
      collect() {
        this.reset();
        read((value, labels) => (labels ? this.set(labels, value) : this.set(value)));
      },
    });
  }

  counter(name: string, help: string, labelNames: string[] = []): Counter {
    return new Counter({ name, help, labelNames, registers: [this.registry] });
  }

  /** Answers GET /metrics; false for any other request. */
  serve(req: IncomingMessage, res: ServerResponse): boolean {
    if (req.method !== 'GET' || req.url !== '/metrics') return false;
    this.registry.metrics().then(
      (text) => {
        res.writeHead(200, { 'content-type': this.registry.contentType });
        res.end(text);
      },
      (err: unknown) => {
        res.writeHead(500, { 'content-type': 'text/plain' });
        res.end(`metrics failed: ${(err as Error).message}\n`);
      },
    );
    return true;
  }
}

type Op = 'read' | 'write' | 'trim' | 'zero' | 'flush' | 'cache';

/** Counts, sizes, latencies and errors of every request a volume serves. */
export function instrumentVolume(backend: BlockBackend, metrics: MemberMetrics): BlockBackend {
  const requests = metrics.counter('freebs_io_requests_total', 'IO requests completed, by operation', ['op']);
  const bytes = metrics.counter('freebs_io_bytes_total', 'Bytes read or written, by operation', ['op']);
  const errors = metrics.counter('freebs_io_errors_total', 'IO requests that failed, by operation and error code', ['op', 'code']);
  const seconds = new Histogram({
    name: 'freebs_io_seconds',
    help: 'IO latency from request to reply, by operation',
    labelNames: ['op'],
    buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [metrics.registry],
  });
  const timed = <T>(op: Op, size: number, run: () => Promise<T>): Promise<T> => {
    const end = seconds.startTimer({ op });
    return run().then(
      (value) => {
        end();
        requests.inc({ op });
        if (size > 0) bytes.inc({ op }, size);
        return value;
      },
      (err: unknown) => {
        end();
        const code = (err as { code?: unknown }).code;
        errors.inc({ op, code: typeof code === 'string' ? code : 'EIO' });
        throw err;
      },
    );
  };
  const instrumented: BlockBackend = {
    get sizeBytes() {
      return backend.sizeBytes;
    },
    readOnly: backend.readOnly,
    canMultiConn: backend.canMultiConn,
    ...(backend.minimumBlockSizeBytes !== undefined ? { minimumBlockSizeBytes: backend.minimumBlockSizeBytes } : {}),
    ...(backend.preferredBlockSizeBytes !== undefined ? { preferredBlockSizeBytes: backend.preferredBlockSizeBytes } : {}),
    read: (offset, length) => timed('read', length, () => backend.read(offset, length)),
    write: (offset, data, options) => timed('write', data.length, () => backend.write(offset, data, options)),
    trim: (offset, length, options) => timed('trim', 0, () => backend.trim(offset, length, options)),
    writeZeroes: (offset, length, options) => timed('zero', 0, () => backend.writeZeroes(offset, length, options)),
    flush: () => timed('flush', 0, () => backend.flush()),
    close: () => backend.close?.() ?? Promise.resolve(),
  };
  if (backend.cache) {
    const cache = backend.cache.bind(backend);
    instrumented.cache = (offset, length) => timed('cache', 0, () => cache(offset, length));
  }
  return instrumented;
}

/** What a replica reports about itself (ReplicaProcess.status). */
export interface ReplicaGaugeSource {
  state: string;
  epoch: number;
  appliedVersion: number;
  durableVersion: number;
  sync: { targetVersion: number } | null;
}

export function replicaGauges(metrics: MemberMetrics, status: () => ReplicaGaugeSource): void {
  metrics.gauge('freebs_epoch', 'Configuration epoch this member holds', (set) => set(status().epoch));
  metrics.gauge('freebs_replica_applied_version', 'Last version applied to the store', (set) => set(status().appliedVersion));
  metrics.gauge('freebs_replica_durable_version', 'Last version made durable', (set) => set(status().durableVersion));
  metrics.gauge('freebs_replica_state', 'Replica machine state (1 for the current one)', (set) => set(1, { state: status().state }), ['state']);
  metrics.gauge('freebs_sync_remaining_versions', 'Versions still to receive in the running SYNC (0 when none)', (set) => {
    const s = status();
    set(s.sync ? Math.max(0, s.sync.targetVersion - s.appliedVersion) : 0);
  });
}

/** What the driver reports about itself (DriverProcess.status). */
export interface DriverGaugeSource {
  epoch: number;
  lastVersion: number;
  committedVersion: number;
  durableCommittedVersion: number;
  inFlight: number;
  replicas: Record<string, { link: string; appliedVersion: number; durableVersion: number }>;
}

export function driverGauges(metrics: MemberMetrics, status: () => DriverGaugeSource): void {
  metrics.gauge('freebs_epoch', 'Configuration epoch this member holds', (set) => set(status().epoch));
  metrics.gauge('freebs_driver_last_version', 'Last version handed out to a write', (set) => set(status().lastVersion));
  metrics.gauge('freebs_driver_committed_version', 'Highest version a majority applied', (set) => set(status().committedVersion));
  metrics.gauge('freebs_driver_durable_version', 'Highest version a majority made durable', (set) => set(status().durableCommittedVersion));
  metrics.gauge('freebs_driver_in_flight', 'Requests in flight to the replicas', (set) => set(status().inFlight));
  metrics.gauge('freebs_replica_lag_versions', 'Versions a replica is behind the last one handed out', (set) => {
    const s = status();
    for (const [replica, r] of Object.entries(s.replicas)) set(Math.max(0, s.lastVersion - r.appliedVersion), { replica });
  }, ['replica']);
  metrics.gauge('freebs_replica_link_up', 'Whether the driver has a link to the replica', (set) => {
    for (const [replica, r] of Object.entries(status().replicas)) set(r.link === 'up' ? 1 : 0, { replica });
  }, ['replica']);
}

/** What the controller reports (controllerStatus). */
export interface ControllerGaugeSource {
  epoch: number;
  chain: string[];
  members: Record<string, { liveness: string | null; lagVersions: number | null; msSinceHeartbeat: number | null }>;
}

export function controllerGauges(metrics: MemberMetrics, status: () => ControllerGaugeSource): void {
  metrics.gauge('freebs_epoch', 'Configuration epoch this member holds', (set) => set(status().epoch));
  metrics.gauge('freebs_chain_length', 'Replicas in the current chain', (set) => set(status().chain.length));
  metrics.gauge('freebs_member_liveness', 'Liveness of each member (1 for its current state)', (set) => {
    for (const [member, m] of Object.entries(status().members)) set(1, { peer: member, liveness: m.liveness ?? 'unknown' });
  }, ['peer', 'liveness']);
  metrics.gauge('freebs_member_lag_versions', 'Versions a member is behind the head', (set) => {
    for (const [member, m] of Object.entries(status().members)) if (m.lagVersions !== null) set(m.lagVersions, { peer: member });
  }, ['peer']);
  metrics.gauge('freebs_member_seconds_since_heartbeat', 'Time since the last heartbeat of each member', (set) => {
    for (const [member, m] of Object.entries(status().members)) if (m.msSinceHeartbeat !== null) set(m.msSinceHeartbeat / 1000, { peer: member });
  }, ['peer']);
}

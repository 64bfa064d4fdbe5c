/**
 * An NBD client, as the kernel is one: a few requests in flight at once (writes, FUA writes,
 * trims, write-zeroes, reads, flushes) on a small volume, so that requests overlap on the same
 * blocks. It talks to the driver machine the way actors/replicated-volume.ts does (io.* events,
 * `reply` intentions) and tells the checker what it sent and what came back.
 */
import type { RecordKind } from '../protocol/frames.js';
import { blockData, type Checker } from './checker.js';
import type { DriverReply, SimDriver } from './driver.js';
import type { Rng } from './rng.js';
import type { Scheduler } from './scheduler.js';
import type { Trace } from './trace.js';

export type OpKind = RecordKind | 'read' | 'flush';

export interface ClientOp {
  id: number;
  kind: OpKind;
  fua: boolean;
  offsetBytes: number;
  lengthBytes: number;
  data?: Uint8Array;
  invokedAt: number;
  /** Newest version of a write acknowledged to the client before this one was sent. */
  ackedBefore: number;
  /** Version the driver gave it (mutations), or the version a flush covers. */
  version?: number;
  done: boolean;
  ok?: boolean;
  code?: string;
  onDone?: (op: ClientOp) => void;
}

export interface WorkloadOptions {
  clients: number;
  blocks: number;
  blockBytes: number;
  maxBlocksPerOp: number;
  thinkMs: [number, number];
  /** Relative weights of the operation kinds. */
  mix: Record<'write' | 'fua' | 'trim' | 'zero' | 'read' | 'flush', number>;
}

export interface WorkloadStats {
  issued: number;
  ok: Record<OpKind, number>;
  failed: Record<OpKind, number>;
}

export class Workload {
  private nextOpId = 1;
  private readonly inFlight = new Map<number, ClientOp>();
  private issuing = false;
  readonly stats: WorkloadStats = {
    issued: 0,
    ok: { write: 0, trim: 0, zero: 0, read: 0, flush: 0 },
    failed: { write: 0, trim: 0, zero: 0, read: 0, flush: 0 },
  };

  constructor(
    private readonly sched: Scheduler,
    private readonly rng: Rng,
    private readonly trace: Trace,
    private readonly checker: Checker,
    private driver: SimDriver,
    private readonly options: WorkloadOptions,
  ) {
    driver.onReply = (e) => this.settle(e);
  }

  /**
   * The driver process died: the NBD connection drops, every request in flight fails (the
   * client cannot know which writes made it), and the client reconnects to the new driver.
   */
  driverRestarted(driver: SimDriver): void {
    this.driver = driver;
    driver.onReply = (e) => this.settle(e);
    for (const op of [...this.inFlight.values()]) {
      this.inFlight.delete(op.id);
      op.done = true;
      op.ok = false;
      op.code = 'ERR_LINK_DOWN';
      this.stats.failed[op.kind]++;
      this.trace.log('client', () => `op ${op.id} ${op.kind} failed: the driver died`);
      op.onDone?.(op);
    }
  }

  get idle(): boolean {
    return this.inFlight.size === 0;
  }

  get pending(): ClientOp[] {
    return [...this.inFlight.values()];
  }

  /** Start the client loops. */
  start(): void {
    this.issuing = true;
    for (let c = 0; c < this.options.clients; c++) this.sched.after(this.rng.real(0, 5), () => this.loop());
  }

  /** Let the requests in flight finish; send no more. */
  stopIssuing(): void {
    this.issuing = false;
  }

  private loop(): void {
    if (!this.issuing) return;
    // No NBD export until the driver is attached (actors/driver.ts): the client waits to reconnect.
    if (!this.driver.attached) {
      this.sched.after(50, () => this.loop());
      return;
    }
    this.issue(this.randomOp(), () => {
      this.sched.after(this.rng.real(this.options.thinkMs[0], this.options.thinkMs[1]), () => this.loop());
    });
  }

  private randomOp(): Pick<ClientOp, 'kind' | 'fua' | 'offsetBytes' | 'lengthBytes'> {
    const { mix, blocks, blockBytes, maxBlocksPerOp } = this.options;
    const kinds = Object.entries(mix) as Array<[keyof WorkloadOptions['mix'], number]>;
    let pick = this.rng.real(0, kinds.reduce((s, [, w]) => s + w, 0));
    let chosen: keyof WorkloadOptions['mix'] = 'write';
    for (const [k, w] of kinds) {
      if (pick < w) {
        chosen = k;
        break;
      }
      pick -= w;
    }
    const n = this.rng.range(1, maxBlocksPerOp);
    const first = this.rng.int(blocks - n + 1);
    const range = { offsetBytes: first * blockBytes, lengthBytes: n * blockBytes };
    switch (chosen) {
      case 'fua':
        return { kind: 'write', fua: true, ...range };
      case 'flush':
        return { kind: 'flush', fua: false, offsetBytes: 0, lengthBytes: 0 };
      case 'trim':
      case 'zero':
        return { kind: chosen, fua: this.rng.chance(0.2), ...range };
      default:
        return { kind: chosen, fua: false, ...range };
    }
  }

  /** Send one request; `then` runs when it is answered. */
  issue(req: Pick<ClientOp, 'kind' | 'fua' | 'offsetBytes' | 'lengthBytes'>, then?: (op: ClientOp) => void): ClientOp {
    const op: ClientOp = { id: this.nextOpId++, ...req, invokedAt: this.sched.now, ackedBefore: this.checker.maxAckedVersion, done: false };
    if (then) op.onDone = then;
    this.inFlight.set(op.id, op);
    this.stats.issued++;
    const actor = this.driver.actor;
    const { blockBytes } = this.options;
    this.trace.log('client', () => `op ${op.id} ${op.kind}${op.fua ? '+fua' : ''} @${op.offsetBytes}+${op.lengthBytes}`);
    switch (op.kind) {
      case 'read':
        actor.send({ type: 'io.read', reqId: op.id, offsetBytes: op.offsetBytes, lengthBytes: op.lengthBytes });
        break;
      case 'flush':
        op.version = actor.getSnapshot().context.lastVersion;
        actor.send({ type: 'io.flush', reqId: op.id });
        break;
      default: {
        if (op.kind === 'write') {
          const data = new Uint8Array(op.lengthBytes);
          for (let b = 0; b < op.lengthBytes / blockBytes; b++) data.set(blockData(op.id, op.offsetBytes / blockBytes + b, blockBytes), b * blockBytes);
          op.data = data;
        }
        const before = actor.getSnapshot().context.lastVersion;
        actor.send({ type: 'io.write', reqId: op.id, kind: op.kind as RecordKind, offsetBytes: op.offsetBytes, lengthBytes: op.lengthBytes, ...(op.data ? { data: op.data } : {}), fua: op.fua });
        // The driver numbered it (or refused it) while handling the event, synchronously; its
        // frames leave at the end of this step, so no replica can have applied it yet.
        const ctx = actor.getSnapshot().context;
        if (ctx.lastVersion !== before && ctx.writes.get(ctx.lastVersion)?.reqId === op.id) {
          op.version = ctx.lastVersion;
          this.checker.recordVersion({ v: op.version, kind: op.kind as RecordKind, offsetBytes: op.offsetBytes, lengthBytes: op.lengthBytes, ...(op.data ? { data: op.data } : {}), opId: op.id });
        }
      }
    }
    return op;
  }

  private settle(e: DriverReply): void {
    const op = this.inFlight.get(e.reqId);
    if (!op) {
      this.checker.fail(`the driver answered request ${e.reqId}, which is not in flight (answered twice?)`);
      return;
    }
    this.inFlight.delete(op.id);
    op.done = true;
    op.ok = e.ok;
    const ctx = this.driver.actor.getSnapshot().context;
    if (e.ok) {
      this.stats.ok[op.kind]++;
      if (op.kind === 'read') {
        if (!e.data || e.data.length !== op.lengthBytes) {
          this.checker.fail(`read op ${op.id} got ${e.data?.length ?? 0} bytes for ${op.lengthBytes}`);
        } else {
          this.checker.checkRead(`read op ${op.id} @${op.offsetBytes}+${op.lengthBytes}`, op.offsetBytes, e.data, op.ackedBefore, ctx.lastVersion);
        }
      } else if (op.kind === 'flush') {
        this.checker.maxFlushedVersion = Math.max(this.checker.maxFlushedVersion, op.version ?? 0);
      } else {
        if (op.version === undefined) this.checker.fail(`op ${op.id} (${op.kind}) succeeded without ever getting a version`);
        else {
          this.checker.maxAckedVersion = Math.max(this.checker.maxAckedVersion, op.version);
          if (op.fua) this.checker.maxFlushedVersion = Math.max(this.checker.maxFlushedVersion, op.version);
        }
      }
    } else {
      this.stats.failed[op.kind]++;
      op.code = e.code;
    }
    this.trace.log('client', () => `op ${op.id} ${op.kind} ${e.ok ? 'ok' : `failed ${e.code}: ${e.message}`}${op.version !== undefined ? ` (v${op.version})` : ''}`);
    op.onDone?.(op);
  }
}

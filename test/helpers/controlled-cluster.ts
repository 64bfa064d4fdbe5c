/**
 * Controller-managed clusters for tests, started with the real `freebs` commands an operator
 * uses: replicas with --controller, a controller with its local spawner (replacements are its
 * children, in DIR/ID like the others), and a driver with --controller. Everything binds
 * 127.0.0.1 on OS-picked ports in a temp dir, and is stopped by PID at the end — replacement
 * replicas too, found in /proc by their --dir under the cluster's temp dir (even one still
 * starting, before it wrote DIR/ID/replica.pid).
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { Logger } from 'pino';
import { openLsvdStore } from '../../actors/lsvd-store.js';
import { createLogger } from '../../actors/logger.js';
import { hasExited, spawnMember, stopMember, waitForLine, type MemberProcess } from '../../actors/member-process.js';
import { isReplicaUnder, stopPid } from '../../actors/pids.js';
import type { ControllerStatus } from '../../machines/controller.js';
import { waitUntil } from './processes.js';

export interface ControlledCluster {
  dir: string;
  heartbeatMs: number;
  sizeBytes: number;
  replicaCount: number;
  /** http://127.0.0.1:PORT of the controller (/status); ws:// of the same port for members. */
  controllerUrl: string;
  nbdUri: string;
  nbdPort: number;
  driverHttpUrl: string;
  /** Link (and /status) ports of the replicas the cluster started with. */
  replicaPorts: Record<string, number>;
  /** The controller's /status, or null while it is unreachable. */
  status(): Promise<ControllerStatus | null>;
  /** PID of a replica (initial or spawned by the controller), 'controller' or 'driver'; null if not running. */
  pidOf(id: string): number | null;
  /** Signal a member by PID (SIGKILL, SIGSTOP, SIGCONT…). */
  signal(id: string, signal: NodeJS.Signals): void;
  /** Start the controller again (after a kill) on its old port and state directory. */
  restartController(): Promise<void>;
  /**
   * Wait until the controller's chain has N members (none of `exclude`), all active, caught up
   * and serving at an epoch newer than `afterEpoch` — and, unless sameVersion is false (writes
   * still going on), at one version; resolves with that status.
   */
  healed(options: { afterEpoch: number; timeoutMs?: number; exclude?: string[]; sameVersion?: boolean }): Promise<ControllerStatus>;
  /** Data directory of a replica. */
  replicaDir(id: string): string;
  /** Stop everything by PID; remove the data unless keepData. Idempotent. */
  stop(options?: { keepData?: boolean }): Promise<void>;
  /** Stop everything, then open each replica's LSVD and hash its content. */
  contentHashes(ids: string[]): Promise<Record<string, { version: number; hash: string }>>;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

const quiet: Logger = createLogger('test', 'warn');

/** PIDs of `freebs replica` processes whose --dir lies under `dir` (this cluster's, by construction). */
function replicaProcessesUnder(dir: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const argv = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      if (argv.includes('replica') && argv.some((a) => a.startsWith(dir + path.sep))) pids.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

export async function startControlledCluster(options: { replicas?: number; sizeBytes?: number; heartbeatMs?: number } = {}): Promise<ControlledCluster> {
  const n = options.replicas ?? 3;
  const sizeBytes = options.sizeBytes ?? 64 * 1024 * 1024;
  const heartbeatMs = options.heartbeatMs ?? 250;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'freebs-controlled-'));
  const logDir = path.join(dir, 'logs');
  const common = ['--cluster', 'freebs', '--heartbeat-ms', String(heartbeatMs)];
  // Replicas must know the controller's address before it can know theirs: the controller's port
  // is picked first (a short bind-and-release race); the replicas take theirs from the OS and
  // dial the controller until it listens.
  const controllerPort = await freePort();
  const controllerWs = `ws://127.0.0.1:${controllerPort}`;
  const controllerUrl = `http://127.0.0.1:${controllerPort}`;
  const members = new Map<string, MemberProcess>();
  let controller: MemberProcess | null = null;
  let driver: MemberProcess | null = null;
  let stopped = false;

  const stopAll = async () => {
    if (driver) await stopMember(driver);
    if (controller) await stopMember(controller);
    await Promise.all([...members.values()].map((m) => stopMember(m)));
    // Replacements the controller started outlive it (their own process group). One may still
    // be starting (no pid file yet): find them by their --dir under this cluster's directory.
    for (let round = 0; round < 3; round++) {
      const pids = replicaProcessesUnder(dir);
      if (pids.length === 0) break;
      await Promise.all(pids.map((pid) => stopPid(pid)));
    }
  };

  try {
    const ids = Array.from({ length: n }, (_, i) => `r${i + 1}`);
    const ports = await Promise.all(
      ids.map(async (id) => {
        const member = spawnMember(id, [
          'replica', '--id', id, '--dir', path.join(dir, id), '--size', String(sizeBytes), '--host', '127.0.0.1',
          '--port', '0', '--controller', controllerWs, ...common,
        ], logDir);
        members.set(id, member);
        const line = await waitForLine(member, /^replica \S+ listening on ws:\/\/[\d.]+:(\d+)/);
        return Number(/:(\d+) /.exec(line)![1]);
      }),
    );
    const chain = ids.map((id, i) => `${id}=ws://127.0.0.1:${ports[i]}`).join(',');
    const controllerArgs = [
      'controller', '--dir', dir, '--chain', chain, '--size', String(sizeBytes), '--replicas', String(n),
      '--host', '127.0.0.1', '--port', String(controllerPort), ...common,
    ];
    const startController = async () => {
      controller = spawnMember('controller', controllerArgs, logDir);
      await waitForLine(controller, /^controller listening/);
    };
    // The driver dials the controller until it listens: both start at once.
    driver = spawnMember('driver', [
      'driver', '--controller', controllerWs, '--size', String(sizeBytes), '--host', '127.0.0.1', '--nbd-port', '0', '--http-port', '0', ...common,
    ], logDir);
    const [, ready] = await Promise.all([startController(), waitForLine(driver, /^driver ready: (nbd:\/\/\S+)/)]);
    const nbdUri = /(nbd:\/\/\S+)/.exec(ready)![1];
    const nbdPort = Number(/:(\d+)\//.exec(nbdUri)![1]);
    const driverHttpUrl = /(http:\/\/[\d.]+:\d+)/.exec(ready)![1];

    const pidOf = (id: string): number | null => {
      const own = id === 'controller' ? controller : id === 'driver' ? driver : members.get(id);
      if (own) return hasExited(own) ? null : (own.child.pid ?? null);
      try {
        const pid = Number(readFileSync(path.join(dir, id, 'replica.pid'), 'utf8'));
        return Number.isInteger(pid) && pid > 0 && isReplicaUnder(pid, dir) ? pid : null;
      } catch {
        return null;
      }
    };

    const status = async (): Promise<ControllerStatus | null> => {
      try {
        const res = await fetch(`${controllerUrl}/status`, { signal: AbortSignal.timeout(2000) });
        return res.ok ? ((await res.json()) as ControllerStatus) : null;
      } catch {
        return null;
      }
    };

    const cluster: ControlledCluster = {
      dir,
      heartbeatMs,
      sizeBytes,
      replicaCount: n,
      controllerUrl,
      nbdUri,
      nbdPort,
      driverHttpUrl,
      replicaPorts: Object.fromEntries(ids.map((id, i) => [id, ports[i]])),
      status,
      pidOf,
      signal(id, signal) {
        const pid = pidOf(id);
        if (pid === null) throw new Error(`${id} is not running`);
        process.kill(pid, signal);
      },
      async restartController() {
        if (controller && !hasExited(controller)) throw new Error('the controller is still running');
        await startController();
      },
      async healed({ afterEpoch, timeoutMs = 30_000, exclude = [], sameVersion = true }) {
        return waitUntil(
          async () => {
            const s = await status();
            if (!s || s.epoch <= afterEpoch || s.chain.length !== n || s.pendingReplacements.length > 0) return null;
            if (s.chain.some((id) => exclude.includes(id))) return null;
            const chain = s.chain.map((id) => s.members[id]);
            const ok = chain.every(
              (m) =>
                m && m.liveness === 'active' && m.replicaState === 'serving' && m.caughtUp && m.epoch === s.epoch &&
                (!sameVersion || m.appliedVersion === chain[0].appliedVersion),
            );
            return ok ? s : null;
          },
          `the chain back to ${n} replicas serving${sameVersion ? ' at one version' : ''} (after epoch ${afterEpoch}${exclude.length > 0 ? `, without ${exclude.join(', ')}` : ''})`,
          timeoutMs,
          100,
        );
      },
      replicaDir: (id) => path.join(dir, id),
      async stop({ keepData = false } = {}) {
        if (!stopped) {
          stopped = true;
          await stopAll();
        }
        if (!keepData) rmSync(dir, { recursive: true, force: true });
      },
      async contentHashes(ids) {
        await cluster.stop({ keepData: true });
        const out: Record<string, { version: number; hash: string }> = {};
        for (const id of ids) {
          const store = await openLsvdStore(path.join(dir, id), undefined, quiet);
          try {
            out[id] = { version: store.version, hash: await store.contentHash() };
          } finally {
            await store.close();
          }
        }
        return out;
      },
    };
    return cluster;
  } catch (err) {
    await stopAll();
    throw new Error(`controlled cluster did not start (logs in ${logDir}): ${(err as Error).message}`);
  }
}

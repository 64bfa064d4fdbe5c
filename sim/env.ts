/**
 * What every simulated process shares: the clock, the network, the disks, the checker, the
 * parameters of the run, and the directory of live processes.
 */
import type { ControllerPersistedState } from '../machines/controller.js';
import type { MemberId } from '../protocol/frames.js';
import type { Checker } from './checker.js';
import type { SimController } from './controller.js';
import type { SimStore } from './disk.js';
import type { SimDriver } from './driver.js';
import type { Network } from './network.js';
import type { SimReplica } from './replica.js';
import type { Rng } from './rng.js';
import type { Scheduler } from './scheduler.js';
import type { Trace } from './trace.js';

export interface SimParams {
  replicaCount: number;
  /** T: heartbeat period, the driver's and the controller's tick. */
  heartbeatMs: number;
  blockBytes: number;
  blocks: number;
  clusterId: string;
  volumeName: string;
  /** Disk timings. */
  flushMs: [number, number];
  readMs: [number, number];
  /** Reading one old record back from the log (a SYNC from disk), one image chunk. */
  recordReadMs: [number, number];
  imageChunkReadMs: [number, number];
  imageCommitMs: [number, number];
  imageChunkBytes: number;
  /** How long a replacement replica takes to start. */
  spawnMs: [number, number];
  /** Chance that a crash tears the last record that reached the disk. */
  tornChance: number;
  /** Link timings (protocol/limits.ts). */
  reconnectMinMs: number;
  reconnectMaxMs: number;
  stableLinkMs: number;
  helloTimeoutMs: number;
}


export interface SimEnv {
  readonly sched: Scheduler;
  readonly net: Network;
  readonly trace: Trace;
  readonly checker: Checker;
  readonly params: SimParams;
  /** Timing jitter of processes: dial backoff, disk latencies, spawn times. */
  readonly rng: Rng;
  /** Disks outlive processes: a restarted replica opens its old store. */
  readonly stores: Map<MemberId, SimStore>;
  /** The live (or last) process of each replica id. */
  readonly replicas: Map<MemberId, SimReplica>;
  controller: SimController | null;
  /** The controller's state file: written before anything it emits after a persist. */
  persisted: ControllerPersistedState | null;
  driver: SimDriver | null;
  /** Start (or restart) replica `id` on its disk, a fresh one if it never had one. */
  startReplica(id: MemberId): SimReplica;
}

export const driverId = 'd';

export function urlOf(id: MemberId): string {
  return `sim://${id}`;
}

export function idOf(url: string): MemberId {
  return url.startsWith('sim://') ? url.slice('sim://'.length) : url;
}

export function between(env: SimEnv, [lo, hi]: [number, number]): number {
  return env.rng.real(lo, hi);
}

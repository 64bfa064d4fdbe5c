/**
 * One simulated run: a 3-replica cluster (driver, replicas, controller: the real machines)
 * over the simulated network and disks, a client workload, seeded faults, then healing and
 * the end checks. Everything comes from one seed; the same seed replays the same run.
 *
 * Phases:
 * 1. faults: the workload runs while faults are injected. Faults that take a replica out
 *    (crash, isolation, a cut link to it) come one at a time, and only once the chain is whole
 *    again (N members serving, caught up) — the design promises no loss with at most ⌊(N−1)/2⌋
 *    replicas failed at once, so that is what is tested. Faults that lose no data (controller
 *    crash, link breaks, slow links, controller or driver partitions) come any time.
 * 2. heal: partitions heal, the controller comes back, crashed replicas may restart; the
 *    workload stops sending and its requests in flight are answered.
 * 3. quiesce: the cluster must converge: N members serving in the controller's epoch, all at the
 *    driver's last version, the driver holding nothing uncommitted.
 * 4. final: writes and a flush must succeed, a read of the whole volume must return the
 *    history's content, and every member's disk must hold that same content.
 */
import type { ChainMember, MemberId } from '../protocol/frames.js';
import { quorumSize } from '../machines/chain.js';
import { Checker, firstDifference, SimFailure } from './checker.js';
import { SimController } from './controller.js';
import { SimStore } from './disk.js';
import { SimDriver } from './driver.js';
import { driverId, urlOf, type SimEnv, type SimParams } from './env.js';
import { Network, defaultNetworkOptions } from './network.js';
import { SimReplica } from './replica.js';
import { Rng } from './rng.js';
import { Scheduler } from './scheduler.js';
import { Trace, type TraceLine } from './trace.js';
import { Workload, type WorkloadOptions, type WorkloadStats } from './workload.js';
import { controllerId } from './controller-link.js';

export interface RunOptions {
  seed: number;
  /** Keep a trace (a failing seed is replayed with it on). */
  trace?: boolean;
  /** Keep only the last lines of the trace. */
  traceKeep?: number;
  /** Simulated ms of the fault phase. */
  faultMs?: number;
  /** No faults at all (a baseline). */
  noFaults?: boolean;
  /** Also crash and restart the driver (kill -9: its uncommitted writes die with it). */
  driverCrashes?: boolean;
}

export interface RunResult {
  seed: number;
  ok: boolean;
  failure: string | null;
  /** Cluster state when the run ended. */
  state: string;
  trace: TraceLine[];
  simMs: number;
  steps: number;
  faults: Record<string, number>;
  workload: WorkloadStats;
  lastVersion: number;
  readsChecked: number;
  appendsChecked: number;
  params: string;
}

type FaultKind =
  | 'crashReplica'
  | 'isolateReplica'
  | 'cutReplicaLink'
  | 'isolateHeadWithDriver'
  | 'crashController'
  | 'isolateController'
  | 'cutDriverController'
  | 'breakLink'
  | 'slowLink'
  | 'crashDriver';

/** Faults that take a replica out: one at a time, and only into a whole chain. */
const replicaFaults = new Set<FaultKind>(['crashReplica', 'isolateReplica', 'cutReplicaLink', 'isolateHeadWithDriver']);

const faultWeights: Record<FaultKind, number> = {
  crashReplica: 4,
  isolateReplica: 2,
  cutReplicaLink: 2,
  isolateHeadWithDriver: 1,
  crashController: 2,
  isolateController: 1,
  cutDriverController: 1,
  breakLink: 4,
  slowLink: 2,
  crashDriver: 1,
};

export function runSeed(options: RunOptions): RunResult {
  const root = new Rng(options.seed);
  const paramRng = root.fork();
  const netRng = root.fork();
  const procRng = root.fork();
  const faultRng = root.fork();
  const workRng = root.fork();
  const diskRng = root.fork();

  const heartbeatMs = paramRng.pick([100, 200, 500]);
  const params: SimParams = {
    replicaCount: 3,
    heartbeatMs,
    blockBytes: 512,
    blocks: 16,
    clusterId: 'sim',
    volumeName: 'vol',
    flushMs: [0.2, paramRng.pick([2, 10, 40])],
    readMs: [0.05, 1],
    recordReadMs: [0.01, 0.3],
    imageChunkReadMs: [0.05, 2],
    imageCommitMs: [0.5, 20],
    imageChunkBytes: 2048,
    spawnMs: [50, 2000],
    tornChance: 0.3,
    reconnectMinMs: 50,
    reconnectMaxMs: 2000,
    stableLinkMs: 10_000,
    helloTimeoutMs: 5000,
  };
  const workloadOptions: WorkloadOptions = {
    clients: paramRng.range(1, 4),
    blocks: params.blocks,
    blockBytes: params.blockBytes,
    maxBlocksPerOp: paramRng.range(1, 4),
    thinkMs: [0, paramRng.pick([4, 10, 30, 100])],
    mix: { write: 8, fua: 1, trim: 1, zero: 1, read: 6, flush: 2 },
  };
  const faultMs = options.faultMs ?? 12_000;
  const meanFaultGapMs = paramRng.pick([300, 800, 2000]);
  const retention = (): number => (diskRng.chance(0.3) ? diskRng.range(2, 40) : Infinity);

  const sched = new Scheduler();
  const trace = new Trace(options.trace ?? false, () => sched.now, options.traceKeep);
  const checker = new Checker(params.blocks, params.blockBytes);
  const net = new Network(sched, netRng, trace, defaultNetworkOptions);
  const env: SimEnv = {
    sched,
    net,
    trace,
    checker,
    params,
    rng: procRng,
    stores: new Map(),
    replicas: new Map(),
    controller: null,
    persisted: null,
    driver: null,
    startReplica(id: MemberId): SimReplica {
      let store = env.stores.get(id);
      if (!store) {
        store = new SimStore(params.blocks * params.blockBytes, retention());
        store.onAppend = (record) => checker.checkAppend(id, record);
        env.stores.set(id, store);
      }
      const replica = new SimReplica(env, id, store);
      env.replicas.set(id, replica);
      trace.log(id, `starts on a disk at v${store.version} (durable ${store.durableVersion})`);
      replica.start();
      return replica;
    },
  };

  const initialChain: ChainMember[] = ['r1', 'r2', 'r3'].map((id) => ({ id, url: urlOf(id) }));
  for (const m of initialChain) env.startReplica(m.id);
  const startController = (): void => {
    const controller = new SimController(env, initialChain, env.persisted);
    env.controller = controller;
    trace.log(controllerId, env.persisted ? `starts from its state file (e${env.persisted.epoch})` : 'starts');
    controller.start();
  };
  startController();
  const driver = (): SimDriver => env.driver!;
  env.driver = new SimDriver(env, driverId);
  driver().start();
  const workload = new Workload(sched, workRng, trace, checker, driver(), workloadOptions);

  // The flush promise: when the driver answers a flush (or FUA write) ok, a majority of its
  // chain has the covered versions on disk.
  const checkDurableMajority = (what: string, v: number): void => {
    const chain = driver().actor.getSnapshot().context.chain;
    const durable = chain.filter((m) => (env.stores.get(m.id)?.durableVersion ?? 0) >= v).length;
    if (durable < quorumSize(chain.length)) {
      checker.fail(`${what} answered ok, but only ${durable} of the ${chain.length} disks of the driver's chain hold v${v} durably`);
    }
  };
  const watchFlushes = (d: SimDriver): void => {
    const settle = d.onReply!;
    d.onReply = (e) => {
      if (e.ok) {
        const op = workload.pending.find((o) => o.id === e.reqId);
        if (op && op.version !== undefined && (op.kind === 'flush' || op.fua)) checkDurableMajority(`${op.kind} op ${op.id}${op.fua ? ' (FUA)' : ''}`, op.version);
      }
      settle(e);
    };
  };
  watchFlushes(driver());

  const restartDriver = (): void => {
    if (driver().alive) return;
    // Versions the dead driver handed out that no disk ever took may be handed out again.
    checker.forgetVersionsAfter(Math.max(...[...env.stores.values()].map((st) => st.highestVersionEver)));
    env.driver = new SimDriver(env, driverId);
    trace.log(driverId, 'starts');
    driver().start();
    workload.driverRestarted(driver());
    watchFlushes(driver());
  };

  const faults: Record<string, number> = {};
  let replicaFaultActive = false;
  let faultsOn = !options.noFaults;
  const crashed = new Set<MemberId>();

  const persistedChain = (): ChainMember[] => env.persisted?.chain ?? initialChain;
  /** The chain is whole: N members alive, serving in the current epoch, holding what is committed. */
  const healthy = (): boolean => {
    const persisted = env.persisted;
    if (!persisted || persisted.chain.length < params.replicaCount) return false;
    const d = driver().actor.getSnapshot();
    if (!d.matches('attached') || d.context.epoch !== persisted.epoch) return false;
    for (const m of persisted.chain) {
      const r = env.replicas.get(m.id);
      if (!r?.alive) return false;
      const s = r.actor.getSnapshot();
      if (!s.matches('serving') || s.context.epoch !== persisted.epoch || s.context.appliedVersion < d.context.committedVersion) return false;
    }
    return true;
  };

  const liveReplicas = (): SimReplica[] => [...env.replicas.values()].filter((r) => r.alive);
  const allNodes = (): MemberId[] => [driverId, controllerId, ...liveReplicas().map((r) => r.id)];

  const restartLater = (id: MemberId, delayMs: number, then?: () => void): void => {
    sched.after(delayMs, () => {
      if (env.replicas.get(id)?.alive) return;
      crashed.delete(id);
      env.startReplica(id);
      then?.();
    });
  };

  const inject = (): void => {
    const kinds = (Object.keys(faultWeights) as FaultKind[])
      .filter((k) => k !== 'crashDriver' || options.driverCrashes)
      .filter((k) => !replicaFaults.has(k) || (!replicaFaultActive && healthy()));
    let pick = faultRng.real(0, kinds.reduce((s, k) => s + faultWeights[k], 0));
    let kind = kinds[0];
    for (const k of kinds) {
      if (pick < faultWeights[k]) {
        kind = k;
        break;
      }
      pick -= faultWeights[k];
    }
    faults[kind] = (faults[kind] ?? 0) + 1;
    const chain = persistedChain().map((m) => m.id);
    const healIn = (lo: number, hi: number, heal: () => void, replicaFault: boolean): void => {
      if (replicaFault) replicaFaultActive = true;
      sched.after(faultRng.real(lo, hi), () => {
        heal();
        if (replicaFault) replicaFaultActive = false;
      });
    };
    switch (kind) {
      case 'crashReplica': {
        const victim = faultRng.pick(chain);
        const r = env.replicas.get(victim);
        if (!r?.alive) break;
        const report = r.store.crash(diskRng, params.tornChance);
        r.crash();
        crashed.add(victim);
        replicaFaultActive = true;
        const when = faultRng.next();
        const delayMs = when < 0.4 ? faultRng.real(20, 4 * heartbeatMs) : when < 0.8 ? faultRng.real(1000, 8000) : Infinity;
        trace.log('fault', `crash ${victim}: disk v${report.before} (durable ${report.durable}) → recovered v${report.after}${report.torn ? ', torn tail cut' : ''}; ${delayMs === Infinity ? 'stays down' : `restarts in ${Math.round(delayMs)} ms`}`);
        if (delayMs === Infinity) replicaFaultActive = false;
        else restartLater(victim, delayMs, () => (replicaFaultActive = false));
        break;
      }
      case 'isolateReplica': {
        const victim = faultRng.pick(chain);
        trace.log('fault', `isolate ${victim}`);
        const heal = net.isolate([victim]);
        healIn(200, 6000, () => {
          trace.log('fault', `heal ${victim}'s isolation`);
          heal();
        }, true);
        break;
      }
      case 'cutReplicaLink': {
        const a = faultRng.pick(chain);
        const b = faultRng.pick([...chain.filter((x) => x !== a), driverId]);
        trace.log('fault', `cut ${a}↔${b}`);
        net.block(a, b);
        healIn(200, 6000, () => {
          trace.log('fault', `heal ${a}↔${b}`);
          net.unblock(a, b);
        }, true);
        break;
      }
      case 'isolateHeadWithDriver': {
        const head = chain[0];
        trace.log('fault', `partition {${driverId}, ${head}} | the rest`);
        const heal = net.isolate([driverId, head]);
        healIn(500, 6000, () => {
          trace.log('fault', `heal the partition of {${driverId}, ${head}}`);
          heal();
        }, true);
        break;
      }
      case 'crashController': {
        if (!env.controller?.alive) break;
        env.controller.crash();
        const delayMs = faultRng.chance(0.5) ? faultRng.real(10, 1000) : faultRng.real(1000, 6000);
        trace.log('fault', `crash the controller; restarts in ${Math.round(delayMs)} ms`);
        sched.after(delayMs, () => {
          if (!env.controller?.alive) startController();
        });
        break;
      }
      case 'isolateController': {
        trace.log('fault', 'isolate the controller');
        const heal = net.isolate([controllerId]);
        healIn(200, 5000, () => {
          trace.log('fault', "heal the controller's isolation");
          heal();
        }, false);
        break;
      }
      case 'cutDriverController': {
        trace.log('fault', `cut ${driverId}↔${controllerId}`);
        net.block(driverId, controllerId);
        healIn(200, 5000, () => {
          trace.log('fault', `heal ${driverId}↔${controllerId}`);
          net.unblock(driverId, controllerId);
        }, false);
        break;
      }
      case 'crashDriver': {
        if (!driver().alive) break;
        driver().crash();
        const delayMs = faultRng.real(10, 3000);
        trace.log('fault', `crash the driver; restarts in ${Math.round(delayMs)} ms`);
        sched.after(delayMs, restartDriver);
        break;
      }
      case 'breakLink': {
        const conns = net.openConns();
        if (conns.length === 0) break;
        net.breakConn(faultRng.pick(conns), 'fault: connection reset');
        break;
      }
      case 'slowLink': {
        const nodes = allNodes();
        const from = faultRng.pick(nodes);
        const to = faultRng.pick(nodes.filter((n) => n !== from));
        const factor = faultRng.real(5, 200);
        const forMs = faultRng.real(100, 3000);
        trace.log('fault', `slow ${from}→${to} ×${factor.toFixed(0)} for ${Math.round(forMs)} ms`);
        net.slowDown(from, to, factor, forMs);
        break;
      }
    }
  };

  const scheduleFault = (): void => {
    const gap = -Math.log(1 - faultRng.next()) * meanFaultGapMs;
    sched.after(gap, () => {
      if (!faultsOn) return;
      inject();
      scheduleFault();
    });
  };

  let failure: string | null = null;
  const stop = (): boolean => checker.failure !== null;
  const run = (untilMs: number, done?: () => boolean): void => {
    sched.runUntil(untilMs, () => stop() || (done?.() ?? false));
  };

  // Boot: the driver attaches through the controller, then the client starts.
  run(10_000, () => driver().attached);
  if (!driver().attached && !stop()) checker.fail('the driver did not attach within 10 s of boot');
  if (!stop()) {
    trace.log('sim', 'driver attached; workload starts');
    workload.start();
    if (faultsOn) scheduleFault();
    run(sched.now + faultMs);
  }

  // Heal.
  if (!stop()) {
    faultsOn = false;
    trace.log('sim', 'faults stop; healing');
    net.healAll();
    if (!env.controller?.alive) startController();
    restartDriver();
    for (const id of [...crashed]) {
      if (persistedChain().some((m) => m.id === id) || faultRng.chance(0.5)) restartLater(id, faultRng.real(0, 500));
    }
    run(sched.now + 2000);
    workload.stopIssuing();
  }

  // Quiesce.
  const converged = (): boolean => quiet() === null;
  const quiet = (): string | null => {
    const ctl = env.controller;
    if (!ctl?.alive) return 'the controller is down';
    if (!workload.idle) return `${workload.pending.length} client requests in flight`;
    const chain = ctl.chain;
    if (chain.length !== params.replicaCount) return `the chain has ${chain.length} members`;
    const d = driver().actor.getSnapshot();
    const dc = d.context;
    if (!d.matches('attached')) return `the driver is ${String(d.value)}`;
    if (dc.epoch !== ctl.epoch) return `the driver is in epoch ${dc.epoch}, the controller in ${ctl.epoch}`;
    if (dc.writes.size > 0 || dc.flushes.length > 0 || dc.reads.size > 0) return `the driver holds ${dc.writes.size} writes (not yet on every disk), ${dc.flushes.length} flushes, ${dc.reads.size} reads`;
    for (const m of chain) {
      const r = env.replicas.get(m.id);
      if (!r?.alive) return `${m.id} is down`;
      const s = r.actor.getSnapshot();
      if (!s.matches('serving')) return `${m.id} is ${String(s.value)}`;
      if (s.context.epoch !== ctl.epoch) return `${m.id} is in epoch ${s.context.epoch}`;
      if (r.store.version !== dc.lastVersion || s.context.appliedVersion !== dc.lastVersion) {
        return `${m.id} is at v${r.store.version} (machine ${s.context.appliedVersion}), the driver at v${dc.lastVersion}`;
      }
    }
    return null;
  };
  const quiesce = (what: string, forMs: number): void => {
    if (stop()) return;
    const deadline = sched.now + forMs;
    // Poll in simulated time: a task every 50 ms keeps the clock moving even when all is quiet.
    const poll = (): void => {
      if (sched.now < deadline && !converged()) sched.after(50, poll);
    };
    poll();
    run(deadline, converged);
    if (!stop() && !converged()) checker.fail(`${what}: not converged ${Math.round(forMs / 1000)} s after faults stopped: ${quiet()}`);
  };
  quiesce('after healing', 90_000);

  // Final: the volume takes writes again and reads back the history.
  if (!stop()) {
    trace.log('sim', 'converged; final writes, flush and read');
    const finalOps: Array<() => ReturnType<Workload['issue']>> = [];
    for (let i = 0; i < 4; i++) {
      const n = Math.min(params.blocks, 4);
      const first = (i * 5) % (params.blocks - n + 1);
      finalOps.push(() => workload.issue({ kind: 'write', fua: false, offsetBytes: first * params.blockBytes, lengthBytes: n * params.blockBytes }));
    }
    finalOps.push(() => workload.issue({ kind: 'flush', fua: false, offsetBytes: 0, lengthBytes: 0 }));
    finalOps.push(() => workload.issue({ kind: 'read', fua: false, offsetBytes: 0, lengthBytes: params.blocks * params.blockBytes }));
    for (const start of finalOps) {
      if (stop()) break;
      const op = start();
      run(sched.now + 40_000, () => op.done);
      if (!op.done) checker.fail(`final ${op.kind} op ${op.id} not answered within 40 s of a quiet cluster`);
      else if (!op.ok) checker.fail(`final ${op.kind} op ${op.id} failed on a quiet cluster: ${op.code}`);
    }
    quiesce('after the final writes', 30_000);
  }
  if (!stop()) {
    const ctl = env.controller!;
    const lastVersion = driver().actor.getSnapshot().context.lastVersion;
    if (lastVersion < checker.maxAckedVersion) checker.fail(`the driver is at v${lastVersion}, below an acknowledged write v${checker.maxAckedVersion}`);
    const expected = checker.contentAt(lastVersion);
    for (const m of ctl.chain) {
      const got = env.stores.get(m.id)!.snapshot();
      const at = firstDifference(expected, got);
      if (at >= 0) checker.fail(`${m.id}'s disk differs from the history at v${lastVersion}, byte ${at} (block ${Math.floor(at / params.blockBytes)})`);
    }
  }

  failure = checker.failure;
  const state = [
    `t=${(sched.now / 1000).toFixed(3)} s, T=${heartbeatMs} ms`,
    env.controller
      ? `controller${env.controller.alive ? '' : ' (dead)'}: e${env.controller.epoch} chain [${env.controller.chain.map((m) => m.id).join(',')}] pending [${(env.persisted?.pendingReplacements ?? []).map((p) => p.id).join(',')}]`
      : 'controller: none',
    driver().describe(),
    ...[...env.replicas.values()].map((r) => r.describe()),
    `client: ${workload.pending.map((o) => `op ${o.id} ${o.kind}${o.version !== undefined ? ` v${o.version}` : ''} since ${(o.invokedAt / 1000).toFixed(3)}s`).join(', ') || 'idle'}`,
  ].join('\n');
  return {
    seed: options.seed,
    ok: failure === null,
    failure,
    state,
    trace: trace.all(),
    simMs: sched.now,
    steps: sched.steps,
    faults,
    workload: workload.stats,
    lastVersion: driver().actor.getSnapshot().context.lastVersion,
    readsChecked: checker.readsChecked,
    appendsChecked: checker.appendsChecked,
    params: `T=${heartbeatMs}ms clients=${workloadOptions.clients} maxBlocks=${workloadOptions.maxBlocksPerOp} think≤${workloadOptions.thinkMs[1]}ms faultGap≈${meanFaultGapMs}ms`,
  };
}

export { SimFailure };

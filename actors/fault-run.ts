/**
 * One fault-injection run (`freebs inject`): start a cluster (actors/fault-cluster.ts), write a
 * canary range once, run the verifying workload (actors/verifier.ts) against the driver's NBD
 * export, carry out the scenario's steps on time, watch the controller's /status throughout, then
 * judge: no acknowledged write lost, every block verifies, no client error the scenario does not
 * allow, the worst stall, the time to heal back to N serving replicas, one version everywhere,
 * and — with the processes stopped — identical LSVD content on every chain member.
 *
 * The result is one JSON document (format `freebs-fault-run`, documented in
 * deploy/faults/README.md): the verdict, the timeline of steps and events, and the controller's
 * status sampled through the run. Times in it are ms since `startedAtMs`.
 */
import { cpSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Logger } from 'pino';
import type { ControllerStatus } from '../machines/controller.js';
import { NbdClient } from '../nbd/client.js';
import { corruptRecord } from './corrupt.js';
import { FaultCluster } from './fault-cluster.js';
import { createLogger } from './logger.js';
import { openLsvdStore } from './lsvd-store.js';
import { resolveMs, schedule, type Scenario, type TimedStep } from './scenario.js';
import { chainWhole, formatScrubReport, repairLocal, scrub, type RepairResult, type ScrubReport } from './scrub.js';
import { Verifier, type VerifierReport, type VerifyResult } from './verifier.js';

export const faultRunFormat = 'freebs-fault-run';
export const faultRunFormatVersion = 1;

export interface FaultRunOptions {
  scenario: Scenario;
  /** Where the cluster lives; a fresh temp directory by default. */
  dir?: string;
  /** Keep the data and logs (they are kept anyway when the verdict fails). */
  keep?: boolean;
  /** Overrides the scenario's T (the CI profile runs every scenario at 250 ms). */
  heartbeatMs?: number;
  /** Progress lines for people. */
  onProgress?: (line: string) => void;
  /** Abort: skip the remaining steps, stop the cluster, and fail the verdict ("interrupted"). */
  signal?: AbortSignal;
}

export interface TimelineEntry {
  atMs: number;
  /** `step`: a scenario step; `event`: something the run noticed (a member exited, the chain changed). */
  kind: 'step' | 'event';
  text: string;
  /** Steps: when it was due, who it resolved to, how long it took, whether it worked. */
  plannedAtMs?: number;
  target?: string;
  durationMs?: number;
  ok?: boolean;
  detail?: string;
}

export interface Snapshot {
  atMs: number;
  /** The controller's /status; null while it did not answer. */
  status: ControllerStatus | null;
}

export interface ScrubRecord {
  atMs: number;
  mode: 'check' | 'repair';
  report: ScrubReport;
  repair: RepairResult | null;
  /** After a repair: the scrub again. */
  after: ScrubReport | null;
}

export interface Verdict {
  pass: boolean;
  /** Why it failed, one line each. */
  failures: string[];
  lostAckedWrites: number;
  /** Up to 20 of them: block, generation found, generation acknowledged. */
  lost: VerifyResult['lost'];
  verify: { blocksChecked: number; ok: number; corrupt: number } | null;
  canaryIntact: boolean | null;
  clientErrors: Record<string, number>;
  writesSent: number;
  writesAcked: number;
  flushesAcked: number;
  reconnects: number;
  worstStallMs: number;
  /** When the last fault step (kill, term, stop, partition, drop, delay, corrupt) ran, and how long after it the chain was whole for good. */
  lastFaultAtMs: number | null;
  healMs: number | null;
  healed: boolean;
  finalEpoch: number | null;
  finalChain: string[];
  versionsEqual: boolean;
  /** Content hash of each chain member's LSVD, read with every process stopped. */
  hashes: Record<string, { version: number; hash: string } | { error: string }>;
  identical: boolean | null;
  scrubs: ScrubRecord[];
}

export interface FaultRunResult {
  format: typeof faultRunFormat;
  version: typeof faultRunFormatVersion;
  scenario: { name: string; description: string | null; file: string | null };
  startedAt: string;
  startedAtMs: number;
  /** When the workload started (ms since startedAtMs): step times count from here. */
  workloadStartMs: number;
  durationMs: number;
  profile: {
    heartbeatMs: number;
    replicas: number;
    sizeBytes: number;
    workloadMs: number;
    workload: Scenario['workload'];
    canary: { offsetBytes: number; lengthBytes: number };
  };
  dir: string;
  kept: boolean;
  /** Where the run's time went (ms): start, steady, workload (steps included), heal, verify, stop, compare. */
  phases: Record<string, number>;
  timeline: TimelineEntry[];
  snapshots: Snapshot[];
  verdict: Verdict;
  /** The controller's visualizer trace (protocol/trace.ts) with the steps added as events, if it answered. */
  trace: unknown;
}

const MiB = 1024 * 1024;
const POLL_MS = 100;
/** Steps that break something (the others wait, observe or mend). */
const faultActions = new Set<string>(['kill', 'term', 'stop', 'partition', 'drop', 'delay', 'slow-disk', 'corrupt']);
const quiet: Logger = createLogger('inject', 'warn');

function canaryBytes(lengthBytes: number): Buffer {
  const buf = Buffer.alloc(lengthBytes);
  for (let i = 0; i < lengthBytes; i += 4) buf.writeUInt32LE((Math.imul(i + 1, 0x9e3779b1) ^ 0xc0ffee) >>> 0, i);
  return buf;
}

/** What changed between two statuses that a person would want in the timeline. */
function describeChange(before: ControllerStatus | null, now: ControllerStatus): string[] {
  const out: string[] = [];
  if (!before || before.epoch !== now.epoch || before.chain.join() !== now.chain.join()) out.push(`epoch ${now.epoch}: ${now.chain.join(' → ')}`);
  for (const [id, m] of Object.entries(now.members)) {
    const was = before?.members[id];
    if (was?.liveness !== m.liveness && m.liveness !== null && before) out.push(`${id} ${m.liveness}`);
    if (was?.replicaState !== m.replicaState && before && m.role !== 'driver') out.push(`${id} ${m.replicaState}`);
  }
  return out;
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}

class Interrupted extends Error {}

export async function runFaultScenario(options: FaultRunOptions): Promise<FaultRunResult> {
  const sc = options.scenario;
  const T = options.heartbeatMs ?? sc.heartbeatMs;
  const progress = options.onProgress ?? (() => undefined);
  const startedAtMs = Date.now();
  const since = () => Date.now() - startedAtMs;
  const stamp = (ms: number) => `+${(ms / 1000).toFixed(2)}s`;
  const say = (line: string) => progress(`[${sc.name}] ${stamp(since())} ${line}`);
  const dir = path.resolve(options.dir ?? mkdtempSync(path.join(os.tmpdir(), `freebs-inject-${sc.name}-`)));
  const timeline: TimelineEntry[] = [];
  const phases: Record<string, number> = {};
  let phaseAtMs = 0;
  const phase = (name: string) => {
    const now = since();
    phases[name] = now - phaseAtMs;
    phaseAtMs = now;
  };
  const snapshots: Snapshot[] = [];
  const failures: string[] = [];
  const scrubs: ScrubRecord[] = [];
  const event = (text: string) => {
    timeline.push({ atMs: since(), kind: 'event', text });
    say(text);
  };
  const workloadMs = resolveMs(sc.duration, T);
  const healWithinMs = resolveMs(sc.expect.healWithin, T);
  const blockBytes = sc.workload.blockBytes;
  const canary = { offsetBytes: Math.ceil((sc.workload.blocks * blockBytes) / MiB) * MiB + MiB, lengthBytes: MiB };
  if (canary.offsetBytes + canary.lengthBytes > sc.sizeBytes) throw new Error(`the volume (${sc.sizeBytes} bytes) is too small for ${sc.workload.blocks} blocks and the canary MiB`);

  say(`starting ${sc.replicas} replicas, the controller and the driver in ${dir} (T = ${T} ms)`);
  const cluster = await FaultCluster.start({
    dir,
    replicas: sc.replicas,
    sizeBytes: sc.sizeBytes,
    heartbeatMs: T,
    ...(sc.tmpfs ? { tmpfs: sc.tmpfs } : {}),
    onExit: (id, how) => {
      event(`${id} exited on its own (${how}); see ${path.join(dir, 'logs', `${id}.log`)}`);
      failures.push(`${id} exited without being told to (${how})`);
    },
  });

  phase('start');
  let verifier: Verifier | null = null;
  let workloadStartMs = 0;
  let pollTimer: ReturnType<typeof setInterval> | null = null;
  let progressTimer: ReturnType<typeof setInterval> | null = null;
  const polls: Array<{ atMs: number; whole: boolean }> = [];
  let pollsClosed = false;
  let trace: unknown = null;
  let verifierReport: VerifierReport | null = null;
  let verifyResult: VerifyResult | null = null;
  let canaryIntact: boolean | null = null;
  let lastFaultAtMs: number | null = null;
  let settleAfterMs = 0;
  let versionsEqual = false;
  let finalStatus: ControllerStatus | null = null;
  let hashes: Verdict['hashes'] = {};
  const corrupted = new Set<string>();
  let paused = false;
  let kept = false;

  try {
    // Steady state first: the chain whole, everyone serving.
    const steadyDeadline = Date.now() + 60_000;
    for (;;) {
      const s = await cluster.status();
      if (s && chainWhole(s) && s.members[s.driverId]?.liveness === 'active') break;
      if (Date.now() > steadyDeadline) throw new Error(`the cluster did not reach a whole chain within 60 s; logs in ${cluster.logDir}`);
      await sleep(POLL_MS);
    }
    phase('steady');
    // The canary: written once, never again; the corrupt step damages its record.
    const client = await NbdClient.connect(cluster.nbdUri);
    await client.write(canary.offsetBytes, canaryBytes(canary.lengthBytes));
    await client.flush();
    await client.disconnect();

    let last: ControllerStatus | null = null;
    let lastKeptAtMs = -Infinity;
    let polling = false;
    pollTimer = setInterval(() => {
      if (polling) return;
      polling = true;
      void cluster.status().then((s) => {
        polling = false;
        // A poll still in flight when the final one was taken must not come after it.
        if (pollsClosed) return;
        const atMs = since();
        polls.push({ atMs, whole: s !== null && chainWhole(s) });
        const changes = s ? describeChange(last, s) : [];
        // Every T, and whenever something changed.
        if (changes.length > 0 || atMs - lastKeptAtMs >= T || (s === null) !== (last === null)) {
          snapshots.push({ atMs, status: s });
          lastKeptAtMs = atMs;
        }
        if (s === null && last !== null) event('the controller does not answer');
        if (s && last) for (const c of changes) event(c);
        if (s) last = s;
        else if (last) last = null;
      });
    }, POLL_MS);

    verifier = new Verifier({
      uri: cluster.nbdUri,
      blocks: sc.workload.blocks,
      blockBytes,
      queueDepth: sc.workload.queueDepth,
      flushEvery: sc.workload.flushEvery,
      seed: sc.workload.seed,
    });
    await verifier.start();
    workloadStartMs = since();
    say(`workload: ${sc.workload.queueDepth} writers over ${sc.workload.blocks} blocks of ${blockBytes} bytes for ${workloadMs} ms`);
    let lastAcked = 0;
    progressTimer = setInterval(() => {
      const p = verifier!.progress;
      const s = cluster.knownStatus;
      const errors = Object.values(p.clientErrors).reduce((a, b) => a + b, 0);
      const chain = s ? `epoch ${s.epoch} ${s.chain.map((id) => `${id}:${s.members[id]?.replicaState ?? '?'}`).join(' → ')}` : 'controller silent';
      say(`${paused ? 'paused; ' : ''}${p.writesAcked} writes acked (+${p.writesAcked - lastAcked}), ${errors} client errors, worst stall ${p.worstStallMs} ms; ${chain}`);
      lastAcked = p.writesAcked;
    }, 2000);

    const waitWhole = async (timeoutMs: number): Promise<ControllerStatus> => {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const s = await cluster.status();
        if (s && chainWhole(s)) return s;
        if (Date.now() > deadline) throw new Error(`the chain was not whole within ${timeoutMs} ms`);
        await sleep(POLL_MS);
      }
    };
    const pause = async () => {
      if (paused || !verifier) return;
      await verifier.stop();
      await verifier.close();
      paused = true;
    };
    const resume = async () => {
      if (!paused || !verifier) return;
      for (let i = 0; ; i++) {
        try {
          await verifier.start();
          break;
        } catch (err) {
          if (i > 50) throw err;
          await sleep(200);
        }
      }
      paused = false;
    };

    const runStep = async (step: TimedStep): Promise<{ target?: string; detail?: string }> => {
      switch (step.action) {
        case 'kill': {
          const id = await cluster.resolve(step.target);
          return { target: id, detail: `pid ${await cluster.kill(id)}` };
        }
        case 'stop':
        case 'cont': {
          const id = await cluster.resolve(step.target);
          const pid = cluster.signal(id, step.action === 'stop' ? 'SIGSTOP' : 'SIGCONT');
          return { target: id, detail: `pid ${pid}` };
        }
        case 'term': {
          const id = await cluster.resolve(step.target);
          const pid = await cluster.terminate(id);
          return { target: id, detail: `pid ${pid} exited` };
        }
        case 'restart': {
          const id = await cluster.resolve(step.target);
          const line = await cluster.restart(id, { expectRefused: step.expectRefused });
          return { target: id, detail: line };
        }
        case 'partition':
        case 'drop':
        case 'delay': {
          const id = await cluster.resolve(step.target);
          const proxy = cluster.proxyOf(id);
          const from = step.from ? await Promise.all(step.from.map((f) => cluster.resolve(f))) : undefined;
          const links = from ? `links from ${from.join(', ')} into ${id}` : `every link into ${id}`;
          if (step.action === 'partition') proxy.partition(from);
          else if (step.action === 'delay') proxy.delay(resolveMs(step.delay, T), from);
          else return { target: id, detail: `${proxy.drop(from)} connection(s) reset (${links})` };
          return { target: id, detail: links };
        }
        case 'heal': {
          if (step.target === 'all') {
            for (const p of cluster.proxies) p.heal();
            const disks = await cluster.healDisks();
            return { target: 'all', detail: disks.length > 0 ? `every link; the disks of ${disks.join(', ')}` : 'every link' };
          }
          const id = await cluster.resolve(step.target);
          const from = step.from ? await Promise.all(step.from.map((f) => cluster.resolve(f))) : undefined;
          // A slow disk is lifted with the member's network faults (unless only some links heal).
          const disk = !from && cluster.isDiskSlowed(id);
          if (disk) await cluster.setDiskDelays(id, {});
          cluster.proxyOf(id).heal(from);
          return { target: id, detail: `${from ? `links from ${from.join(', ')}` : 'every link'}${disk ? ' and its disk' : ''}` };
        }
        case 'slow-disk': {
          const id = await cluster.resolve(step.target);
          const latencyMs = resolveMs(step.latency, T);
          await cluster.setDiskDelays(id, { writeDelayMs: latencyMs, syncDelayMs: latencyMs, readDelayMs: step.reads ? latencyMs : 0 });
          return { target: id, detail: 'in force (its log says so)' };
        }
        case 'corrupt': {
          const id = await cluster.resolve(step.target);
          const running = cluster.isRunning(id);
          const r = await corruptRecord(cluster.replicaDir(id), canary);
          if (running) corrupted.add(id);
          return { target: id, detail: `${r.flippedBytes} bytes flipped in the record of version ${r.version} at ${r.segment}:${r.positionBytes} (${running ? 'while it runs' : 'while it is down'})` };
        }
        case 'scrub': {
          const wasPaused = paused;
          await pause();
          const report = await scrub({ controller: cluster.controllerUrl, settleTimeoutMs: 20_000, log: (l) => say(`scrub: ${l}`) });
          for (const line of formatScrubReport(report).split('\n')) say(line);
          const record: ScrubRecord = { atMs: since(), mode: step.mode, report, repair: null, after: null };
          scrubs.push(record);
          const missed = [...corrupted].filter((id) => report.chain.includes(id) && !report.bad.includes(id));
          if (missed.length > 0) failures.push(`the scrub did not find the damage on ${missed.join(', ')}`);
          const wrongly = report.bad.filter((id) => !corrupted.has(id));
          if (wrongly.length > 0) failures.push(`the scrub flagged ${wrongly.join(', ')}, whose data was not damaged`);
          if (step.mode === 'repair' && report.bad.length > 0) {
            record.repair = await repairLocal({ controller: cluster.controllerUrl, dir, report, healTimeoutMs: healWithinMs, log: (l) => say(`scrub: ${l}`), onStop: (id) => cluster.expectExit(id) });
            for (const id of report.bad) corrupted.delete(id);
            record.after = await scrub({ controller: cluster.controllerUrl, settleTimeoutMs: 20_000 });
            say(`after the repair: ${formatScrubReport(record.after).split('\n')[0]}`);
            if (record.after.bad.length > 0 || record.after.ambiguous.length > 0) failures.push(`the chain still differs after the repair: ${record.after.bad.join(', ')}`);
          }
          if (!wasPaused) await resume();
          return { detail: report.bad.length === 0 ? `${report.chunksCompared} chunks agree` : `differs: ${report.bad.join(', ')}${record.repair ? `; replaced, chain now ${record.repair.chain.join(' → ')}` : ''}` };
        }
        case 'wait':
          if (step.until === 'healed') {
            const s = await waitWhole(healWithinMs);
            return { detail: `whole: ${s.chain.join(' → ')} at epoch ${s.epoch}` };
          }
          await sleep(resolveMs(step.until, T));
          return {};
        case 'pause':
          await pause();
          return {};
        case 'resume':
          await resume();
          return {};
        case 'resize': {
          const id = await cluster.resolve(step.target);
          cluster.resizeTmpfs(id, step.sizeBytes);
          return { target: id };
        }
      }
    };

    const aborted = () => {
      if (options.signal?.aborted) throw new Interrupted('interrupted');
    };
    for (const step of schedule(sc, T)) {
      const dueMs = workloadStartMs + step.atMs;
      if (since() < dueMs) await sleep(dueMs - since(), options.signal);
      aborted();
      const atMs = since();
      const entry: TimelineEntry = { atMs, kind: 'step', text: step.text, plannedAtMs: dueMs, ...(step.note ? { detail: step.note } : {}) };
      timeline.push(entry);
      try {
        const r = await runStep(step);
        entry.ok = true;
        if (r.target !== undefined) entry.target = r.target;
        if (r.detail !== undefined) entry.detail = entry.detail ? `${entry.detail}; ${r.detail}` : r.detail;
      } catch (err) {
        entry.ok = false;
        entry.detail = (err as Error).message;
        failures.push(`step "${step.text}" at ${step.at.text} failed: ${(err as Error).message}`);
      }
      entry.durationMs = since() - atMs;
      say(`${entry.ok ? '' : 'FAILED '}${step.text}${entry.target && entry.target !== step.text.split(' ')[1] ? ` → ${entry.target}` : ''}${entry.detail ? `: ${entry.detail}` : ''}`);
      // Heal time counts from the last fault, not from a remedy (heal, cont, restart, resize).
      if (faultActions.has(step.action)) lastFaultAtMs = atMs;
      // A failure is noticed 4T after it happened: give it 5T before judging the chain; after a
      // remedy (heal, cont, restart), 2T for what it sets off (a member rejoining) to start.
      settleAfterMs = since() + (faultActions.has(step.action) ? 5 : step.action === 'wait' || step.action === 'scrub' ? 0 : 2) * T;
    }
    const endMs = Math.max(workloadStartMs + workloadMs, settleAfterMs);
    if (since() < endMs) await sleep(endMs - since(), options.signal);
    aborted();
    if (paused) await resume();
    verifierReport = await verifier.stop();
    phase('workload');
    say(`workload stopped: ${verifierReport.writesAcked} of ${verifierReport.writesSent} writes acknowledged, worst stall ${verifierReport.worstStallMs} ms`);

    // Quiet now: the chain must be whole and every member at one version.
    const healDeadline = Math.max(Date.now() + 5000, startedAtMs + settleAfterMs + healWithinMs);
    for (;;) {
      const s = await cluster.status();
      if (s && chainWhole(s)) {
        finalStatus = s;
        const versions = new Set(s.chain.map((id) => s.members[id].appliedVersion));
        if (versions.size === 1) {
          versionsEqual = true;
          break;
        }
      }
      if (Date.now() > healDeadline || options.signal?.aborted) break;
      await sleep(POLL_MS);
    }
    pollsClosed = true;
    polls.push({ atMs: since(), whole: versionsEqual });
    phase('heal');
    finalStatus ??= await cluster.status();
    if (!versionsEqual) {
      failures.push(
        finalStatus && chainWhole(finalStatus)
          ? `the chain members never reached one version (${finalStatus.chain.map((id) => `${id}@${finalStatus!.members[id].appliedVersion}`).join(', ')})`
          : `the chain was not whole again (${sc.replicas} replicas serving) within ${healWithinMs} ms of the last fault`,
      );
    }
    if (pollTimer) clearInterval(pollTimer);
    if (progressTimer) clearInterval(progressTimer);
    snapshots.push({ atMs: since(), status: finalStatus });

    if (cluster.pidOf('driver') === null) failures.push('the driver is not running at the end: nothing to verify through');
    else {
      say('verifying every block written, through the driver');
      verifyResult = await verifier.verify();
      const c = await NbdClient.connect(cluster.nbdUri);
      canaryIntact = (await c.read(canary.offsetBytes, canary.lengthBytes)).equals(canaryBytes(canary.lengthBytes));
      await c.disconnect();
      if (!canaryIntact) failures.push('the canary range does not read back as written');
    }
    await verifier.close();
    phase('verify');

    say('fetching the controller\'s trace');
    // The controller's trace, with the steps on its timeline (its clock is the wall clock too).
    try {
      const res = await fetch(`${cluster.controllerUrl}/viz/trace.json`, { signal: AbortSignal.timeout(5000) });
      if (res.ok) {
        const t = (await res.json()) as { records?: Array<Record<string, unknown>> };
        const steps = timeline
          .filter((e) => e.kind === 'step')
          .map((e) => ({ kind: 'event', type: 'alert', node: e.target ?? null, atMs: startedAtMs + e.atMs, text: `fault injected: ${e.text}${e.detail ? ` (${e.detail})` : ''}`, data: { fault: true, ok: e.ok ?? null } }));
        const records = [...(t.records ?? []), ...steps].sort((a, b) => Number(a.atMs) - Number(b.atMs));
        trace = { ...t, source: `freebs inject ${sc.name}`, records: records.map((r) => ({ ...r, seq: undefined })) };
      }
    } catch {
      trace = null;
    }
  } catch (err) {
    failures.push(err instanceof Interrupted ? 'interrupted before the end' : `the run stopped early: ${(err as Error).message}`);
  } finally {
    if (pollTimer) clearInterval(pollTimer);
    if (progressTimer) clearInterval(progressTimer);
    if (verifier && !verifierReport) verifierReport = await verifier.stop().catch(() => null);
    await verifier?.close();
    say('stopping the cluster (driver first)');
    await cluster.stop();
    phase('stop');
  }

  // With every process stopped: the chain members' LSVDs must hold the same content.
  const chain = finalStatus?.chain ?? [];
  await Promise.all(
    chain.map(async (id) => {
      try {
        const store = await openLsvdStore(cluster.replicaDir(id), undefined, quiet);
        try {
          hashes[id] = { version: store.version, hash: await store.contentHash() };
        } finally {
          await store.close();
        }
      } catch (err) {
        hashes[id] = { error: (err as Error).message };
      }
    }),
  );
  hashes = Object.fromEntries(chain.map((id) => [id, hashes[id]]));
  phase('compare');
  say(`compared the LSVDs of ${chain.join(', ')}`);
  const hashValues = Object.values(hashes).map((h) => ('hash' in h ? `${h.version}:${h.hash}` : `error:${h.error}`));
  const identical = chain.length === 0 ? null : new Set(hashValues).size === 1 && !hashValues[0].startsWith('error');
  if (sc.expect.identical && identical !== true) {
    failures.push(chain.length === 0 ? 'no chain to compare at the end' : `the chain members' LSVDs differ: ${chain.map((id) => `${id} ${hashValues[chain.indexOf(id)].slice(0, 24)}`).join(', ')}`);
  }

  // The verdict.
  const report = verifierReport;
  const lost = verifyResult?.lost ?? [];
  if (lost.length > 0) failures.push(`${lost.length} acknowledged write(s) lost, e.g. block ${lost[0].block} holds generation ${lost[0].found}, ${lost[0].acked} was acknowledged`);
  if (verifyResult && verifyResult.corrupt.length > 0) failures.push(`${verifyResult.corrupt.length} block(s) hold bytes no write put there, e.g. block ${verifyResult.corrupt[0]}`);
  const clientErrors = report?.clientErrors ?? {};
  const unexpected = Object.entries(clientErrors).filter(([kind]) => !sc.expect.clientErrors.includes(kind));
  if (unexpected.length > 0) failures.push(`client errors: ${unexpected.map(([k, n]) => `${n} × ${k}`).join(', ')}`);
  const worstStallMs = report?.worstStallMs ?? 0;
  if (sc.expect.maxStall) {
    const bound = resolveMs(sc.expect.maxStall, T);
    if (worstStallMs > bound) failures.push(`worst stall ${worstStallMs} ms is over the bound of ${bound} ms (${sc.expect.maxStall.text})`);
  }
  if (report && report.writesAcked === 0) failures.push('no write was acknowledged at all');
  // Healed: whole from some poll on, through the end.
  let healedAtMs: number | null = null;
  for (let i = polls.length - 1; i >= 0 && polls[i].whole; i--) healedAtMs = polls[i].atMs;
  const healed = versionsEqual && healedAtMs !== null;
  const healMs = healed && lastFaultAtMs !== null ? Math.max(0, healedAtMs! - lastFaultAtMs) : null;
  if (healMs !== null && healMs > healWithinMs) failures.push(`healing took ${healMs} ms, over ${healWithinMs} ms`);

  const verdict: Verdict = {
    pass: failures.length === 0,
    failures,
    lostAckedWrites: lost.length,
    lost: lost.slice(0, 20),
    verify: verifyResult ? { blocksChecked: verifyResult.blocksChecked, ok: verifyResult.ok, corrupt: verifyResult.corrupt.length } : null,
    canaryIntact,
    clientErrors,
    writesSent: report?.writesSent ?? 0,
    writesAcked: report?.writesAcked ?? 0,
    flushesAcked: report?.flushesAcked ?? 0,
    reconnects: report?.reconnects ?? 0,
    worstStallMs,
    lastFaultAtMs,
    healMs,
    healed,
    finalEpoch: finalStatus?.epoch ?? null,
    finalChain: chain,
    versionsEqual,
    hashes,
    identical,
    scrubs,
  };
  kept = options.keep === true || !verdict.pass;
  if (kept) {
    // A tmpfs goes away with its mount: keep a copy next to the others.
    for (const id of Object.keys(sc.tmpfs ?? {})) {
      try {
        cpSync(cluster.replicaDir(id), `${cluster.replicaDir(id)}.tmpfs-copy`, { recursive: true });
      } catch {
        // nothing to copy
      }
    }
  }
  cluster.unmount();
  if (!kept) rmSync(dir, { recursive: true, force: true });
  else say(`data and logs kept in ${dir}`);

  return {
    format: faultRunFormat,
    version: faultRunFormatVersion,
    scenario: { name: sc.name, description: sc.description ?? null, file: sc.file },
    startedAt: new Date(startedAtMs).toISOString(),
    startedAtMs,
    workloadStartMs,
    durationMs: since(),
    profile: { heartbeatMs: T, replicas: sc.replicas, sizeBytes: sc.sizeBytes, workloadMs, workload: sc.workload, canary },
    dir,
    kept,
    phases,
    timeline,
    snapshots,
    verdict,
    trace,
  };
}

/** The verdict for people. */
export function formatVerdict(r: FaultRunResult): string {
  const v = r.verdict;
  const errors = Object.entries(v.clientErrors);
  const lines = [
    `${v.pass ? 'PASS' : 'FAIL'} ${r.scenario.name}${r.scenario.description ? ` — ${r.scenario.description}` : ''}`,
    `  acknowledged writes lost: ${v.lostAckedWrites}   (${v.writesAcked} acknowledged of ${v.writesSent} sent, ${v.flushesAcked} flushes)`,
    `  data verification:        ${v.verify ? `${v.verify.ok}/${v.verify.blocksChecked} blocks ok, ${v.verify.corrupt} corrupt` : 'not run'}; canary ${v.canaryIntact === null ? 'not read' : v.canaryIntact ? 'intact' : 'DAMAGED'}`,
    `  client-visible errors:    ${errors.length === 0 ? 'none' : errors.map(([k, n]) => `${n} × ${k}`).join(', ')}`,
    `  worst stall:              ${v.worstStallMs} ms`,
    `  healed:                   ${v.healed ? `yes, ${v.healMs === null ? 'no fault' : `${v.healMs} ms after the last fault`}` : 'NO'}; chain ${v.finalChain.join(' → ') || '?'} at epoch ${v.finalEpoch ?? '?'}, ${v.versionsEqual ? 'one version' : 'versions differ'}`,
    `  replicas identical:       ${v.identical === null ? 'not compared' : v.identical ? 'yes' : 'NO'} (${Object.entries(v.hashes).map(([id, h]) => ('hash' in h ? `${id}@${h.version} ${h.hash.slice(0, 12)}` : `${id}: ${h.error}`)).join(', ')})`,
  ];
  for (const s of v.scrubs) lines.push(`  scrub (${s.mode}):             ${s.report.bad.length === 0 ? 'all agree' : `found ${s.report.bad.join(', ')}`}${s.after ? `; after repair ${s.after.bad.length === 0 ? 'all agree' : `still ${s.after.bad.join(', ')}`}` : ''}`);
  lines.push('  timeline:');
  for (const e of r.timeline.filter((x) => x.kind === 'step')) {
    lines.push(`    +${(e.atMs / 1000).toFixed(2)}s ${e.ok ? 'ok  ' : 'FAIL'} ${e.text}${e.target ? ` [${e.target}]` : ''}${e.detail ? ` — ${e.detail}` : ''}`);
  }
  for (const f of v.failures) lines.push(`  ✗ ${f}`);
  return lines.join('\n');
}

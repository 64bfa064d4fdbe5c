/**
 * Failover with real processes: a controller (with its local spawner), three replicas and the
 * driver, started with the real `freebs` commands and T = 250 ms, under fio verify load plus a
 * stall probe (sequential 4 KiB writes, one at a time, on their own region). For each fault —
 * SIGKILL of the head, the middle, the tail; SIGSTOP of a replica for 3T; SIGKILL and restart of
 * the controller (in steady state, and again while a replacement is starting) — the client sees
 * no error, the worst write stall is printed and stays within 4T + 1 s, the data verifies, and
 * the chain is back to three replicas serving one version whose LSVDs hash the same. A replica
 * declared failed that comes back must not be taken as current. A summary table is printed at
 * the end; FREEBS_KEEP_TEST_DATA=1 keeps every cluster's data and logs.
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, describe, expect } from 'vitest';
import { loadControllerState } from '../../actors/controller-state.js';
import { createLogger } from '../../actors/logger.js';
import type { ControllerStatus } from '../../machines/controller.js';
import { DialingLink } from '../../protocol/dialer.js';
import type { Frame } from '../../protocol/frames.js';
import { startControlledCluster, type ControlledCluster } from '../helpers/controlled-cluster.js';
import { fioJobs } from '../helpers/fio.js';
import { ProcessTracker, waitUntil, type RunResult } from '../helpers/processes.js';
import { StallProbe, type StallReport } from '../helpers/stall-probe.js';
import { itWith, requirements } from '../helpers/tools.js';

const T = 250;
const stallBoundMs = 4 * T + 1000;
const MiB = 1024 * 1024;
const sizeBytes = 64 * MiB;
/** fio works on [0, 8 MiB); the probe on its own MiB further on. */
const probeOffsetBytes = 32 * MiB;
const probeBlocks = 256;
/** How long the chain may take to be whole again after a fault (replacement start and SYNC included). */
const healTimeoutMs = 30_000;
const chainText = (s: ControllerStatus) => s.chain.join('→');

/** PIDs of the `freebs replica` processes whose data directory is `dir`. */
function replicaProcessesOf(dir: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const argv = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      if (argv.includes('replica') && argv.includes(dir)) pids.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

const procs = new ProcessTracker();
let cluster: ControlledCluster | undefined;
const scratch: string[] = [];
const summary: string[] = [];

afterEach(async (context) => {
  // A failed scenario keeps its data and logs for a look (every scenario with FREEBS_KEEP_TEST_DATA=1).
  const keep = context.task.result?.state === 'fail' || process.env.FREEBS_KEEP_TEST_DATA === '1';
  if (cluster && keep) console.log(`[failover] kept the cluster's data and logs in ${cluster.dir}`);
  await cluster?.stop({ keepData: keep });
  cluster = undefined;
  for (const dir of scratch.splice(0)) rmSync(dir, { recursive: true, force: true });
});
afterAll(async () => {
  await procs.stopAll();
  if (summary.length > 0) console.log(`failover summary (T = ${T} ms, stall bound 4T + 1 s = ${stallBoundMs} ms)\n${summary.join('\n')}`);
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Load {
  fio: Promise<RunResult>;
  probe: StallProbe;
}

interface LoadResult {
  probe: StallReport;
  fioWrites: number;
  fioReads: number;
  fioMaxWriteLatencyMs: number;
  fioMaxReadLatencyMs: number;
}

/** fio verify load and the stall probe, both through the driver's NBD export. */
async function startLoad(c: ControlledCluster, runtimeSeconds: number): Promise<Load> {
  const cwd = mkdtempSync(path.join(os.tmpdir(), 'freebs-fio-'));
  scratch.push(cwd);
  const fio = procs.run('fio', [
    '--name=failover', '--ioengine=nbd', `--uri=${c.nbdUri}`, '--rw=randwrite', '--bs=4k', '--iodepth=16', '--size=8M',
    // verify_backlog: every 256 writes are read back and checked at once, so blocks written
    // across the fault are verified during the run, not only after a whole pass.
    '--verify=crc32c', '--verify_fatal=1', '--verify_state_save=0', '--verify_backlog=256',
    '--time_based', `--runtime=${runtimeSeconds}`, '--output-format=json',
  ], { cwd, timeoutMs: (runtimeSeconds + 60) * 1000 });
  const probe = new StallProbe(c.nbdUri, probeOffsetBytes, probeBlocks);
  await probe.start();
  return { fio, probe };
}

/** Wait for the load to end; no client error, fio's verification passed. */
async function finishLoad(load: Load): Promise<LoadResult> {
  const r = await load.fio;
  const probe = await load.probe.stop();
  const output = r.stdout + r.stderr;
  const bad = output.split('\n').filter((l) => /verify: bad|io_u error|error=/i.test(l));
  expect(bad, 'fio saw an I/O error or a verify failure').toEqual([]);
  expect(r.code, output.slice(-2000)).toBe(0);
  const job = fioJobs(r.stdout)[0];
  expect(job.error).toBe(0);
  expect(job.read.total_ios, 'fio verified what it wrote').toBeGreaterThan(0);
  expect(probe.errors, 'the probe saw write errors').toEqual([]);
  return {
    probe,
    fioWrites: job.write.total_ios,
    fioReads: job.read.total_ios,
    fioMaxWriteLatencyMs: Math.round((job.write.lat_ns?.max ?? 0) / 1e6),
    fioMaxReadLatencyMs: Math.round((job.read.lat_ns?.max ?? 0) / 1e6),
  };
}

/**
 * The chain whole: N members, all active, caught up and serving at the current epoch (≥
 * minEpoch), and — once writes have stopped (settled) — at one version.
 */
function whole(c: ControlledCluster, minEpoch: number, options: { exclude?: string[]; settled?: boolean } = {}): Promise<ControllerStatus> {
  return c.healed({ afterEpoch: minEpoch - 1, timeoutMs: healTimeoutMs, exclude: options.exclude ?? [], sameVersion: options.settled ?? true });
}

/** Print and check one scenario's figures. */
function report(name: string, load: LoadResult, outcome: string): void {
  const line =
    `${name.padEnd(46)} worst write stall ${String(load.probe.worstGapMs).padStart(5)} ms (probe); fio slowest write ${String(load.fioMaxWriteLatencyMs).padStart(5)} ms, read ${String(load.fioMaxReadLatencyMs).padStart(5)} ms; ` +
    `${outcome}; ${load.fioWrites} fio writes, ${load.fioReads} fio verify reads, ${load.probe.writesAcked} probe writes`;
  summary.push(line);
  console.log(`[failover] ${line}`);
  expect(load.probe.worstGapMs, `${name}: worst write stall`).toBeLessThanOrEqual(stallBoundMs);
  expect(load.fioMaxWriteLatencyMs, `${name}: fio's slowest write`).toBeLessThanOrEqual(stallBoundMs);
  expect(load.fioMaxReadLatencyMs, `${name}: fio's slowest (verify) read`).toBeLessThanOrEqual(stallBoundMs);
}

/** The probe's region reads back as last acknowledged; then stop and compare the chain's LSVDs. */
async function verifyAndCompare(c: ControlledCluster, load: Load, result: LoadResult, chain: string[]): Promise<void> {
  const check = await load.probe.verify();
  await load.probe.close();
  expect(check.wrong, 'blocks that do not hold their last acknowledged write').toEqual([]);
  expect(check.checked).toBeGreaterThan(0);
  const hashes = await c.contentHashes(chain);
  const versions = new Set(chain.map((id) => hashes[id].version));
  expect(versions.size, `versions ${JSON.stringify(hashes)}`).toBe(1);
  expect(new Set(chain.map((id) => hashes[id].hash)).size, `content hashes ${JSON.stringify(hashes)}`).toBe(1);
  // Every acknowledged write is a version of its own: the chain holds at least that many.
  expect([...versions][0]).toBeGreaterThanOrEqual(result.fioWrites + result.probe.writesAcked);
}

async function killScenario(position: 0 | 1 | 2): Promise<void> {
  const c = (cluster = await startControlledCluster({ heartbeatMs: T, sizeBytes }));
  const before = await whole(c, 1);
  const victim = before.chain[position];
  const load = await startLoad(c, 4);
  await sleep(1500);
  const killedAt = Date.now();
  c.signal(victim, 'SIGKILL');
  const heal = whole(c, before.epoch + 1, { exclude: [victim], settled: false }).then((s) => ({ s, ms: Date.now() - killedAt }));
  const result = await finishLoad(load);
  const healed = { ...(await heal), s: await whole(c, before.epoch + 1, { exclude: [victim] }) };
  const name = `SIGKILL the ${['head', 'middle', 'tail'][position]} (${victim})`;
  report(name, result, `whole again after ${(healed.ms / 1000).toFixed(1)} s: epoch ${before.epoch} → ${healed.s.epoch}, ${chainText(before)} → ${chainText(healed.s)}`);
  expect(healed.s.chain).not.toContain(victim);
  expect(healed.s.members[victim]).toMatchObject({ role: 'retired', liveness: 'failed' });
  await verifyAndCompare(c, load, result, healed.s.chain);
}

const fio = requirements({ commands: ['fio'] });

describe('failover under fio verify load (controller, 3 replicas, driver; T = 250 ms)', () => {
  itWith(fio, 'SIGKILL the head: the next replica leads, a replacement joins at the tail', () => killScenario(0));

  itWith(fio, 'SIGKILL the middle: its neighbours link up, a replacement joins at the tail', () => killScenario(1));

  itWith(fio, 'SIGKILL the tail, then SIGKILL and restart the controller (twice, once with a replacement pending): it resumes from controller.json', async () => {
    const c = (cluster = await startControlledCluster({ heartbeatMs: T, sizeBytes }));
    const before = await whole(c, 1);
    const victim = before.chain[2];

    // The tail: the other two still make a majority, so writes barely notice.
    const load1 = await startLoad(c, 4);
    await sleep(1500);
    const killedAt = Date.now();
    c.signal(victim, 'SIGKILL');
    const heal = whole(c, before.epoch + 1, { exclude: [victim], settled: false }).then((s) => ({ s, ms: Date.now() - killedAt }));
    const result1 = await finishLoad(load1);
    const healed = { ...(await heal), s: await whole(c, before.epoch + 1, { exclude: [victim] }) };
    report(`SIGKILL the tail (${victim})`, result1, `whole again after ${(healed.ms / 1000).toFixed(1)} s: epoch ${before.epoch} → ${healed.s.epoch}, ${chainText(before)} → ${chainText(healed.s)}`);
    expect(healed.s.chain).not.toContain(victim);
    expect((await load1.probe.verify()).wrong).toEqual([]);
    await load1.probe.close();

    // `freebs status` against the real controller: every member, the dead one retired.
    const table = await procs.runOk(process.execPath, ['--import', 'tsx', 'cli/freebs.ts', 'status', '--controller', c.controllerUrl.replace('http:', 'ws:')], { timeoutMs: 30_000 });
    console.log(`[failover] freebs status after the tail died:\n${table.stdout}`);
    for (const id of healed.s.chain) expect(table.stdout).toMatch(new RegExp(`^${id} +(head|middle|tail) +active +serving`, 'm'));
    expect(table.stdout).toMatch(new RegExp(`^${victim} +retired +failed`, 'm'));

    // The controller: killed under load, down for longer than 4T (nobody may be failed meanwhile),
    // restarted with its original --chain, which names the dead tail: it must take the chain
    // from controller.json instead, at the same epoch.
    const persisted = loadControllerState(c.dir);
    expect(persisted).toMatchObject({ epoch: healed.s.epoch, chain: healed.s.chain.map((id) => expect.objectContaining({ id })) });
    const load2 = await startLoad(c, 4);
    await sleep(1000);
    c.signal('controller', 'SIGKILL');
    const ackedAtKill = load2.probe.writesAcked;
    await sleep(6 * T);
    const ackedWhileDown = load2.probe.writesAcked - ackedAtKill;
    await c.restartController();
    const result2 = await finishLoad(load2);
    const after = await whole(c, healed.s.epoch);
    report('SIGKILL + restart the controller', result2, `down ${6 * T} ms, ${ackedWhileDown} probe writes acked meanwhile; resumed at epoch ${after.epoch}, ${chainText(after)}`);
    expect(ackedWhileDown, 'writes go on while the controller is down').toBeGreaterThan(0);
    expect(after.epoch).toBe(healed.s.epoch);
    expect(after.chain).toEqual(healed.s.chain);
    expect((await load2.probe.verify()).wrong).toEqual([]);
    await load2.probe.close();

    // Killed again while a replacement is starting: the restarted controller finds it pending in
    // controller.json and asks for it again; the process the old controller started is stopped,
    // not doubled on the same directory, and the chain becomes whole with no other change.
    const tail = after.chain[2];
    const load3 = await startLoad(c, 4);
    await sleep(1000);
    c.signal(tail, 'SIGKILL');
    const pending = await waitUntil(async () => {
      const s = await c.status();
      return s && s.pendingReplacements.length > 0 ? s : null;
    }, 'a replacement to be requested', 10_000, 20);
    c.signal('controller', 'SIGKILL');
    const replacement = pending.pendingReplacements[0];
    expect(loadControllerState(c.dir)).toMatchObject({ epoch: pending.epoch, pendingReplacements: [expect.objectContaining({ id: replacement })] });
    await sleep(6 * T);
    await c.restartController();
    const result3 = await finishLoad(load3);
    const healed3 = await whole(c, pending.epoch + 1, { exclude: [tail] });
    report(`SIGKILL ${tail}, then the controller while ${replacement} starts`, result3, `resumed at epoch ${pending.epoch} with ${replacement} pending; whole at epoch ${healed3.epoch}, ${chainText(healed3)}`);
    // The survivors keep their places and the replacement asked for before the restart joins.
    // (Only one epoch more, normally; a replacement starved of CPU while it syncs on a busy host
    // may miss 4T of heartbeats and be failed and re-added, which is not what this checks.)
    expect(healed3.chain).toEqual([...pending.chain, replacement]);
    expect(replicaProcessesOf(path.join(c.dir, replacement)), `processes running ${replacement}`).toHaveLength(1);
    await verifyAndCompare(c, load3, result3, healed3.chain);
  });

  itWith(fio, 'SIGSTOP the head for 3T: only inactive; stopped again until replaced, it comes back stale and is refused', async () => {
    const c = (cluster = await startControlledCluster({ heartbeatMs: T, sizeBytes }));
    const before = await whole(c, 1);
    const victim = before.chain[0];
    const victimPort = c.replicaPorts[victim];

    // 3T: inactive at 2T, not failed (4T).
    const load1 = await startLoad(c, 3);
    await sleep(1500);
    c.signal(victim, 'SIGSTOP');
    await sleep(3 * T);
    c.signal(victim, 'SIGCONT');
    const result1 = await finishLoad(load1);
    const after1 = await whole(c, before.epoch);
    // 3T of silence is less than the 4T that fails a member — but its last heartbeat may have
    // been up to T before the stop, so a failover is possible too; either way the chain is whole.
    const failedOver = after1.epoch !== before.epoch;
    report(`SIGSTOP the head (${victim}) for 3T`, result1, failedOver ? `failed over after all: epoch ${before.epoch} → ${after1.epoch}, ${chainText(after1)}` : `no reconfiguration: epoch stayed ${after1.epoch}, ${chainText(after1)}`);
    if (!failedOver) expect(after1.chain).toEqual(before.chain);
    expect((await load1.probe.verify()).wrong).toEqual([]);
    await load1.probe.close();
    // Only a head that kept its place can be stopped again to test its coming back stale.
    if (failedOver) return verifyAndCompare(c, load1, result1, after1.chain);

    // Stopped long enough to be declared failed and replaced, while writes go on without it.
    const load2 = await startLoad(c, 4);
    await sleep(1000);
    const stoppedAt = Date.now();
    c.signal(victim, 'SIGSTOP');
    await whole(c, before.epoch + 1, { exclude: [victim], settled: false });
    const replacedMs = Date.now() - stoppedAt;
    c.signal(victim, 'SIGCONT');
    const result2 = await finishLoad(load2);
    const replaced = await whole(c, before.epoch + 1, { exclude: [victim] });
    report(`SIGSTOP the head (${victim}) until replaced`, result2, `whole without it after ${(replacedMs / 1000).toFixed(1)} s: epoch ${before.epoch} → ${replaced.epoch}, ${chainText(before)} → ${chainText(replaced)}`);

    // It comes back believing it is the head of epoch 1; the controller tells it the current
    // epoch, and as the chain is full it stays out: no longer serving.
    type ReplicaStatus = { state: string; epoch: number; appliedVersion: number };
    const replicaStatus = async (port: number) => (await fetch(`http://127.0.0.1:${port}/status`)).json() as Promise<ReplicaStatus>;
    const back = await waitUntil(async () => {
      const st = await replicaStatus(victimPort).catch(() => null);
      return st && st.epoch >= replaced.epoch ? st : null;
    }, `${victim} to learn the current epoch`, 10_000, 100);
    expect(back.state).not.toBe('serving');
    const now = (await c.status())!;
    expect(now.chain).not.toContain(victim);
    expect(now.members[victim].role).toBe('retired');
    const driver = (await (await fetch(`${c.driverHttpUrl}/status`)).json()) as { epoch: number; replicas: Record<string, unknown> };
    expect(driver.epoch).toBe(now.epoch);
    expect(Object.keys(driver.replicas).sort()).toEqual([...now.chain].sort());

    // What it could still send with its old epoch is refused by the new head: a read (told the
    // newer epoch) and a write (not from the driver, and stale); nothing is applied.
    const headPort = c.replicaPorts[now.chain[0]];
    const headBefore = await replicaStatus(headPort);
    const link = new DialingLink({
      url: `ws://127.0.0.1:${headPort}`,
      hello: { t: 'hello', role: 'replica', id: victim, epoch: before.epoch, clusterId: 'freebs' },
      logger: createLogger('test', 'silent'),
    });
    try {
      const frames: Frame[] = [];
      link.on('batch', (b) => frames.push(...(b.frames as Frame[])));
      await new Promise<void>((resolve) => link.once('up', () => resolve()));
      link.send({ t: 'read', epoch: before.epoch, r: 1, offsetBytes: probeOffsetBytes, lengthBytes: 4096, minVersion: 0 });
      link.send({ t: 'write', epoch: before.epoch, v: headBefore.appliedVersion + 1, kind: 'write', offsetBytes: probeOffsetBytes, lengthBytes: 4096, data: new Uint8Array(4096).fill(0xee) });
      await waitUntil(() => frames.some((f) => f.t === 'read-reply') && frames.some((f) => f.t === 'error'), 'refusals of the stale member', 5000);
      expect(frames.find((f) => f.t === 'read-reply')).toMatchObject({ ok: false, code: 'ERR_EPOCH_STALE' });
      expect(frames.find((f) => f.t === 'error')).toMatchObject({ epoch: now.epoch });
      expect((await replicaStatus(headPort)).appliedVersion).toBe(headBefore.appliedVersion);
    } finally {
      await link.close();
    }

    // Reads through the driver return the current data, not the stale copy; the chain matches.
    await verifyAndCompare(c, load2, result2, now.chain);
  });
});

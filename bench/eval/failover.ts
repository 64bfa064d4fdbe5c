/**
 * Failover as a client sees it: the longest write stall when the head is killed under the
 * verifying workload, for heartbeat periods T = 250, 500, 1000 ms; and the time until the
 * chain is back to N identical replicas against how much data the replacement must copy.
 */
import path from 'node:path';
import { Verifier } from '../../actors/verifier.js';
import type { EvalContext } from './context.js';
import { prefill } from './fio.js';
import { barChart, lineChart } from './svg.js';
import { startCluster, type ClusterTarget } from './targets.js';

const MiB = 1024 * 1024;

interface Status {
  epoch: number;
  chain: string[];
  members: Record<string, { replicaState: string | null; appliedVersion: number }>;
}

async function status(c: ClusterTarget): Promise<Status> {
  return (await fetch(`${c.controllerUrl}/status`)).json() as Promise<Status>;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Wait until the chain has n members, all serving at one version; resolves with the time it took. */
async function healed(c: ClusterTarget, n: number, sinceMs: number, afterEpoch: number, timeoutMs = 300_000): Promise<number> {
  for (;;) {
    const s = await status(c).catch(() => null);
    if (s && s.epoch > afterEpoch && s.chain.length === n) {
      const members = s.chain.map((id) => s.members[id]);
      if (members.every((m) => m?.replicaState === 'serving' && m.appliedVersion === members[0].appliedVersion)) return Date.now() - sinceMs;
    }
    if (Date.now() - sinceMs > timeoutMs) throw new Error(`chain not healed within ${timeoutMs} ms`);
    await sleep(100);
  }
}

export async function failoverSection(ctx: EvalContext): Promise<string> {
  const stalls: Array<{ t: number; stallMs: number; healMs: number; acked: number; errors: number; lost: number; corrupt: number }> = [];
  for (const t of [250, 500, 1000]) {
    ctx.progress(`failover: kill the head under load, T = ${t} ms`);
    const c = await startCluster(path.join(ctx.workDir, `failover-${t}`), 3, 256 * MiB, t);
    try {
      const v = new Verifier({ uri: c.uri, blocks: 16384, queueDepth: 8, flushEvery: 64, seed: t });
      await v.start();
      await sleep(3000);
      const before = await status(c);
      const killedAt = Date.now();
      process.kill(c.replicaPid(before.chain[0]), 'SIGKILL');
      await sleep(4 * t + 4000);
      const report = await v.stop();
      const healMs = await healed(c, 3, killedAt, before.epoch);
      const check = await v.verify();
      await v.close();
      const errors = Object.values(report.clientErrors).reduce((a, b) => a + b, 0);
      stalls.push({ t, stallMs: report.worstStallMs, healMs, acked: report.writesAcked, errors, lost: check.lost.length, corrupt: check.corrupt.length });
    } finally {
      await c.stop();
    }
  }

  const heal: Array<{ dataMiB: number; healMs: number }> = [];
  for (const dataMiB of [64, 256, 512]) {
    ctx.progress(`failover: time to heal with ${dataMiB} MiB written`);
    const c = await startCluster(path.join(ctx.workDir, `heal-${dataMiB}`), 3, 1024 * MiB, 500);
    try {
      await prefill({ uri: c.uri }, dataMiB * MiB);
      const before = await status(c);
      const killedAt = Date.now();
      process.kill(c.replicaPid(before.chain[before.chain.length - 1]), 'SIGKILL');
      heal.push({ dataMiB, healMs: await healed(c, 3, killedAt, before.epoch) });
    } finally {
      await c.stop();
    }
  }

  ctx.chart('failover-stall.svg', barChart('Worst client write stall when the head dies', 'ms', stalls.map((s) => `T = ${s.t} ms`), [
    { name: 'worst stall', values: stalls.map((s) => s.stallMs) },
    { name: 'bound 4T + 1 s', values: stalls.map((s) => 4 * s.t + 1000) },
  ]));
  ctx.chart('heal-time.svg', lineChart('Time to heal vs data to copy', 'MiB written before the tail died', 'seconds', [
    { name: 'back to 3 serving replicas', points: heal.map((h) => [h.dataMiB, h.healMs / 1000]) },
  ]));
  return `## Failover

The head replica is killed (SIGKILL) 3 s into a verifying workload (random 4 KiB writes, 8 in
flight, a flush every 64); the worst stall is the longest time with writes outstanding and none
completing, as the client saw it. Heal: from the kill until the controller's chain has 3 members
serving at one version (the replacement has synced). Afterwards every block is read back and
checked against the last acknowledged write.

| T | worst stall | bound 4T + 1 s | heal | writes acked | client errors | lost acked writes | corrupt blocks |
|---|---|---|---|---|---|---|---|
${stalls.map((s) => `| ${s.t} ms | ${s.stallMs} ms | ${4 * s.t + 1000} ms | ${(s.healMs / 1000).toFixed(1)} s | ${s.acked} | ${s.errors} | ${s.lost} | ${s.corrupt} |`).join('\n')}

![stall](eval/failover-stall.svg)

Time to heal against how much the replacement must copy (T = 500 ms; the tail is killed after
fio wrote the given amount sequentially in 1 MiB writes):

| data written | heal |
|---|---|
${heal.map((h) => `| ${h.dataMiB} MiB | ${(h.healMs / 1000).toFixed(1)} s |`).join('\n')}

![heal](eval/heal-time.svg)
`;
}

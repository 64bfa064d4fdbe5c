/**
 * Replication cost: the same fio jobs over NBD against clusters of N = 1, 3 and 5 replicas,
 * with `nbdkit file` as the single-copy baseline.
 */
import path from 'node:path';
import { fio, jobs, prefill, type FioResult } from './fio.js';
import type { EvalContext } from './context.js';
import { barChart } from './svg.js';
import { startCluster, startNbdkit, type Target } from './targets.js';

const MiB = 1024 * 1024;
const SIZE = 512 * MiB;
const JOBS = [jobs.randwrite4k, jobs.seqwrite1m, jobs.randread4k];

export async function replicationSection(ctx: EvalContext): Promise<string> {
  const rows: Array<{ name: string; results: Record<string, FioResult> }> = [];
  const measure = async (target: Target) => {
    try {
      ctx.progress(`  ${target.name}: prefill`);
      await prefill({ uri: target.uri }, SIZE);
      const results: Record<string, FioResult> = {};
      for (const job of JOBS) {
        ctx.progress(`  ${target.name}: ${job.id}`);
        results[job.id] = await fio({ uri: target.uri }, job, { seconds: ctx.seconds, sizeBytes: SIZE });
      }
      rows.push({ name: target.name, results });
    } finally {
      await target.stop();
    }
  };
  ctx.progress('replication cost: nbdkit file');
  await measure(await startNbdkit(path.join(ctx.workDir, 'repl-nbdkit'), SIZE));
  for (const n of [1, 3, 5]) {
    ctx.progress(`replication cost: ${n} replica(s)`);
    await measure(await startCluster(path.join(ctx.workDir, `repl-${n}`), n, SIZE));
  }
  ctx.chart('replication-iops.svg', barChart('Replication cost: IOPS by replica count', 'IOPS', JOBS.map((j) => j.id), rows.map((r) => ({ name: r.name, values: JOBS.map((j) => r.results[j.id].iops) }))));
  ctx.chart('replication-p99.svg', barChart('Replication cost: p99 latency (ms)', 'ms', JOBS.map((j) => j.id), rows.map((r) => ({ name: r.name, values: JOBS.map((j) => r.results[j.id].p99Us / 1000) }))));
  const table = rows.map((r) => `| ${r.name} | ${JOBS.map((j) => `${r.results[j.id].iops.toFixed(0)} / ${r.results[j.id].mbPerSec.toFixed(1)} / ${(r.results[j.id].p99Us / 1000).toFixed(2)}`).join(' | ')} |`);
  return `## Replication cost

fio over NBD (the nbd engine, ${ctx.seconds} s per job, ${SIZE / MiB} MiB prefilled) against
\`nbdkit file\` and FreEBS clusters of 1, 3 and 5 replicas started with \`freebs up\`, all on this
one machine: every replica and the driver are separate Node processes sharing its cores.
Cells: IOPS / MB/s / p99 ms.

| target | ${JOBS.map((j) => j.id).join(' | ')} |
|---|${JOBS.map(() => '---').join('|')}|
${table.join('\n')}

![IOPS](eval/replication-iops.svg)
![p99](eval/replication-p99.svg)
`;
}

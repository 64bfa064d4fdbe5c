/**
 * §5.1: ext4 on FreEBS (3 replicas), on `nbdkit file`, and on the local disk: fio file jobs,
 * a metadata-heavy job (create / stat / delete many small files) and a real workload (unpack a
 * tarball of npm packages and checksum every file).
 */
import { execFile } from 'node:child_process';
import { mkdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { readdir, stat, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { fio, jobs, type FioResult } from './fio.js';
import type { EvalContext } from './context.js';
import { barChart } from './svg.js';
import { mountExt4, startCluster, startNbdkit, type MountedFs, type Target } from './targets.js';

const run = promisify(execFile);
const MiB = 1024 * 1024;
const FS_BYTES = 2048 * MiB;
const FILE_JOBS = [jobs.randread4k, jobs.randwrite4k, jobs.seqwrite1m, jobs.seqread1m];
const SMALL_FILES = 4000;
const PACKAGES = ['typescript', 'zod', 'xstate', 'fast-check', 'pino', 'ws', 'msgpackr', 'vitest', '@vitest'];

interface FsResult {
  name: string;
  fio: Record<string, FioResult>;
  metadata: { createPerSec: number; statPerSec: number; deletePerSec: number };
  tarballSeconds: number;
}

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t = performance.now();
  await fn();
  return (performance.now() - t) / 1000;
}

async function metadataJob(root: string): Promise<FsResult['metadata']> {
  const dir = path.join(root, 'meta');
  mkdirSync(dir);
  const names: string[] = [];
  const data = Buffer.alloc(4096, 0x61);
  const create = await timed(async () => {
    for (let d = 0; d < 40; d++) mkdirSync(path.join(dir, `d${d}`));
    for (let i = 0; i < SMALL_FILES; i++) {
      const name = path.join(dir, `d${i % 40}`, `f${i}`);
      names.push(name);
      await writeFile(name, data);
    }
    await run('sync', ['-f', dir]);
  });
  const statTime = await timed(async () => {
    // Drop the dentry/inode cache first, so stat goes to the device.
    writeFileSync('/proc/sys/vm/drop_caches', '2');
    for (const d of await readdir(dir)) for (const f of await readdir(path.join(dir, d))) await stat(path.join(dir, d, f));
  });
  const remove = await timed(async () => {
    for (const name of names) await unlink(name);
    await run('sync', ['-f', dir]);
  });
  rmSync(dir, { recursive: true, force: true });
  return { createPerSec: SMALL_FILES / create, statPerSec: SMALL_FILES / statTime, deletePerSec: SMALL_FILES / remove };
}

async function tarballJob(root: string, tarball: string): Promise<number> {
  const dest = path.join(root, 'src');
  mkdirSync(dest);
  return timed(async () => {
    await run('tar', ['xzf', tarball, '-C', dest]);
    await run('sh', ['-c', `find "${dest}" -type f -print0 | xargs -0 sha256sum > /dev/null`], { maxBuffer: 64 * MiB });
    await run('sync', ['-f', dest]);
  });
}

async function measure(fs: MountedFs, ctx: EvalContext, tarball: string): Promise<FsResult> {
  const file = path.join(fs.mountpoint, 'fio.dat');
  const results: Record<string, FioResult> = {};
  for (const job of FILE_JOBS) {
    ctx.progress(`  ${fs.name}: fio ${job.id}`);
    results[job.id] = await fio({ file }, job, { seconds: ctx.seconds, sizeBytes: 512 * MiB });
  }
  ctx.progress(`  ${fs.name}: metadata job`);
  const metadata = await metadataJob(fs.mountpoint);
  ctx.progress(`  ${fs.name}: unpack and checksum`);
  const tarballSeconds = await tarballJob(fs.mountpoint, tarball);
  return { name: fs.name, fio: results, metadata, tarballSeconds };
}

export async function fileSystemSection(ctx: EvalContext): Promise<string> {
  const work = path.join(ctx.workDir, 'fs');
  mkdirSync(work, { recursive: true });
  const tarball = path.join(work, 'packages.tgz');
  await run('tar', ['czf', tarball, '-C', path.join(ctx.repo, 'node_modules'), ...PACKAGES]);
  const tarMiB = statSync(tarball).size / MiB;

  const results: FsResult[] = [];
  const onTarget = async (name: string, start: () => Promise<Target>, dir: string) => {
    const target = await start();
    try {
      const fs = await mountExt4(name, dir, target.uri, FS_BYTES);
      try {
        results.push(await measure(fs, ctx, tarball));
      } finally {
        await fs.unmount();
      }
    } finally {
      await target.stop();
    }
  };
  ctx.progress('§5.1 file systems: FreEBS ×3');
  await onTarget('FreEBS ×3', () => startCluster(path.join(work, 'cluster'), 3, FS_BYTES), path.join(work, 'freebs'));
  ctx.progress('§5.1 file systems: nbdkit file');
  await onTarget('nbdkit file', () => startNbdkit(path.join(work, 'nbdkit'), FS_BYTES), path.join(work, 'nbdkit-fs'));
  ctx.progress('§5.1 file systems: local disk');
  const local = await mountExt4('local disk', path.join(work, 'local'), null, FS_BYTES);
  try {
    results.push(await measure(local, ctx, tarball));
  } finally {
    await local.unmount();
  }

  const names = results.map((r) => r.name);
  ctx.chart('fs-fio.svg', barChart('ext4: fio file jobs (IOPS)', 'IOPS', FILE_JOBS.map((j) => j.id), results.map((r) => ({ name: r.name, values: FILE_JOBS.map((j) => r.fio[j.id].iops) }))));
  ctx.chart('fs-metadata.svg', barChart('ext4: small files (operations/s)', 'files/s', ['create', 'stat (cold)', 'delete'], results.map((r) => ({ name: r.name, values: [r.metadata.createPerSec, r.metadata.statPerSec, r.metadata.deletePerSec] }))));
  ctx.chart('fs-tarball.svg', barChart(`ext4: unpack ${tarMiB.toFixed(0)} MiB of npm packages + sha256 every file (s)`, 'seconds', ['unpack + checksum'], results.map((r) => ({ name: r.name, values: [r.tarballSeconds] }))));

  const fioRows = FILE_JOBS.map((j) => `| ${j.id} | ${results.map((r) => `${r.fio[j.id].iops.toFixed(0)} IOPS, ${r.fio[j.id].mbPerSec.toFixed(1)} MB/s, p99 ${(r.fio[j.id].p99Us / 1000).toFixed(2)} ms`).join(' | ')} |`);
  const ratio = (j: string) => (results[0].fio[j].iops / results[1].fio[j].iops).toFixed(2);
  return `## 5.1 File system benchmarks

ext4 (${FS_BYTES / MiB} MiB, \`mkfs.ext4\` defaults) mounted through nbdfuse + a loop device on a
3-replica FreEBS volume and on \`nbdkit file\`, and on a loop file on the local disk. fio uses
libaio with O_DIRECT on a 512 MiB file, ${ctx.seconds} s per job.

| job | ${names.join(' | ')} |
|---|${names.map(() => '---').join('|')}|
${fioRows.join('\n')}

![fio on ext4](eval/fs-fio.svg)

Small files: ${SMALL_FILES} files of 4 KiB in 40 directories, created then \`sync\`; stat'ed after
dropping the dentry and inode caches; deleted then \`sync\`.

| operations/s | ${names.join(' | ')} |
|---|${names.map(() => '---').join('|')}|
| create | ${results.map((r) => r.metadata.createPerSec.toFixed(0)).join(' | ')} |
| stat (cold) | ${results.map((r) => r.metadata.statPerSec.toFixed(0)).join(' | ')} |
| delete | ${results.map((r) => r.metadata.deletePerSec.toFixed(0)).join(' | ')} |

![small files](eval/fs-metadata.svg)

A real workload: unpack a ${tarMiB.toFixed(1)} MiB tarball of npm packages (${PACKAGES.join(', ')}),
sha256 every file, \`sync\`: ${results.map((r) => `${r.name} ${r.tarballSeconds.toFixed(2)} s`).join(', ')}.

![tarball](eval/fs-tarball.svg)

FreEBS ×3 against nbdkit file, IOPS ratio: ${FILE_JOBS.map((j) => `${j.id} ${ratio(j.id)}×`).join(', ')}.
`;
}

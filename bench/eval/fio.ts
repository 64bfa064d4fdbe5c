/** fio runs for the evaluation: over NBD (the nbd engine) or on a file in a mounted file system. */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface FioJob {
  id: string;
  rw: 'randread' | 'randwrite' | 'read' | 'write';
  bs: string;
  iodepth: number;
}

export interface FioResult {
  iops: number;
  mbPerSec: number;
  p50Us: number;
  p99Us: number;
}

export const jobs = {
  randwrite4k: { id: '4k randwrite QD16', rw: 'randwrite', bs: '4k', iodepth: 16 },
  randread4k: { id: '4k randread QD16', rw: 'randread', bs: '4k', iodepth: 16 },
  seqwrite1m: { id: '1M seq write QD8', rw: 'write', bs: '1m', iodepth: 8 },
  seqread1m: { id: '1M seq read QD8', rw: 'read', bs: '1m', iodepth: 8 },
} satisfies Record<string, FioJob>;

/** Where fio does IO: an NBD URI, or a file path (libaio, O_DIRECT). */
export type FioTarget = { uri: string } | { file: string };

export async function fio(target: FioTarget, job: FioJob, options: { seconds: number; sizeBytes: number }): Promise<FioResult> {
  const where = 'uri' in target ? ['--ioengine=nbd', `--uri=${target.uri}`] : ['--ioengine=libaio', '--direct=1', `--filename=${target.file}`];
  const args = [
    `--name=${job.rw}`, ...where, `--rw=${job.rw}`, `--bs=${job.bs}`, `--iodepth=${job.iodepth}`, `--size=${options.sizeBytes}`,
    '--time_based', `--runtime=${options.seconds}`, '--ramp_time=1', '--norandommap', '--randrepeat=0',
    '--verify_state_save=0', '--output-format=json', '--group_reporting',
  ];
  const { stdout } = await run('fio', args, { maxBuffer: 64 * 1024 * 1024, cwd: '/tmp' });
  const start = stdout.search(/^\{/m);
  const side = (JSON.parse(stdout.slice(start)) as {
    jobs: Array<Record<'read' | 'write', { iops: number; bw_bytes: number; clat_ns: { percentile?: Record<string, number> } }>>;
  }).jobs[0][job.rw.includes('write') ? 'write' : 'read'];
  const pct = side.clat_ns.percentile ?? {};
  return { iops: side.iops, mbPerSec: side.bw_bytes / 1e6, p50Us: (pct['50.000000'] ?? 0) / 1000, p99Us: (pct['99.000000'] ?? 0) / 1000 };
}

/** Write every block once so reads hit data, not holes. */
export async function prefill(target: FioTarget, sizeBytes: number): Promise<void> {
  const where = 'uri' in target ? ['--ioengine=nbd', `--uri=${target.uri}`] : ['--ioengine=libaio', '--direct=1', `--filename=${target.file}`];
  await run('fio', ['--name=prefill', ...where, '--rw=write', '--bs=1m', '--iodepth=8', `--size=${sizeBytes}`, '--verify_state_save=0'], {
    maxBuffer: 16 * 1024 * 1024,
    cwd: '/tmp',
  });
}

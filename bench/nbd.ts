/**
 * fio over NBD: our server (a separate process) against `nbdkit file` on the same kind of
 * sparse file in the same directory, same run, same jobs.
 *
 *   npx tsx bench/nbd.ts [--seconds 10] [--size 1G] [--dir /tmp] [--jobs randwrite4k,randread4k,...]
 *                        [--target-cmd 'CMD with {port} {file} {size} {dir}'] [--target-uri nbd://…]
 *                        [--no-nbdkit] [--json out.json]
 *
 * --target-cmd starts the server under test; it must print a line containing its nbd:// URI.
 *   Default: node --import tsx bench/nbd-file-server.ts --file {file} --size {size} --port {port}
 *   Later:   --target-cmd 'freebs serve --dir {dir}/vol --size {size} --port {port}'
 * --target-uri benches a server that is already running (e.g. a 3-replica cluster) instead.
 * Env: BENCH_SECONDS, BENCH_SIZE, BENCH_DIR, BENCH_TARGET_CMD, BENCH_TARGET_URI.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const here = path.dirname(fileURLToPath(import.meta.url));
const { values: args } = parseArgs({
  options: {
    seconds: { type: 'string', default: process.env.BENCH_SECONDS ?? '10' },
    size: { type: 'string', default: process.env.BENCH_SIZE ?? '1G' },
    dir: { type: 'string', default: process.env.BENCH_DIR ?? os.tmpdir() },
    jobs: { type: 'string' },
    'target-cmd': { type: 'string', default: process.env.BENCH_TARGET_CMD },
    'target-uri': { type: 'string', default: process.env.BENCH_TARGET_URI },
    'target-name': { type: 'string', default: 'ours' },
    'no-nbdkit': { type: 'boolean', default: false },
    'no-prefill': { type: 'boolean', default: false },
    json: { type: 'string' },
  },
});

interface Job {
  id: string;
  rw: 'randwrite' | 'randread' | 'write' | 'read';
  bs: string;
  iodepth: number;
}

const ALL_JOBS: Job[] = [
  { id: 'randwrite-4k-qd16', rw: 'randwrite', bs: '4k', iodepth: 16 },
  { id: 'randread-4k-qd16', rw: 'randread', bs: '4k', iodepth: 16 },
  { id: 'seqwrite-1m-qd8', rw: 'write', bs: '1m', iodepth: 8 },
  { id: 'seqread-1m-qd8', rw: 'read', bs: '1m', iodepth: 8 },
  { id: 'randwrite-4k-qd1', rw: 'randwrite', bs: '4k', iodepth: 1 },
];

interface Result {
  iops: number;
  mbPerSec: number;
  latencyUsP50: number;
  latencyUsP99: number;
}

interface Target {
  name: string;
  uri: string;
  process?: ChildProcess;
}

const seconds = Number(args.seconds);
const sizeBytes = parseSize(args.size!);
const jobs = args.jobs ? ALL_JOBS.filter((j) => args.jobs!.split(',').includes(j.id)) : ALL_JOBS;
const workDir = mkdtempSync(path.join(args.dir!, 'freebs-bench-nbd-'));
const started: ChildProcess[] = [];

function parseSize(text: string): number {
  const m = /^(\d+(?:\.\d+)?)([KMGT]?)i?B?$/i.exec(text.trim());
  if (!m) throw new Error(`bad size ${text}`);
  const unit = { '': 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40 }[m[2].toUpperCase() as '' | 'K' | 'M' | 'G' | 'T'];
  return Math.floor(Number(m[1]) * unit);
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

async function sparseFile(file: string): Promise<void> {
  const fh = await open(file, 'w');
  await fh.truncate(sizeBytes);
  await fh.close();
}

function fill(template: string, vars: Record<string, string>): string {
  return template.replace(/\{(\w+)\}/g, (all, k: string) => vars[k] ?? all);
}

/** Start a server via a shell command and wait for the nbd:// URI it prints (or for the port to accept). */
async function startServer(name: string, command: string, port: number, waitFor: 'uri-line' | 'port'): Promise<Target> {
  const child = spawn('sh', ['-c', `exec ${command}`], { stdio: ['ignore', 'pipe', 'pipe'], cwd: path.join(here, '..') });
  started.push(child);
  let output = '';
  child.stdout!.on('data', (c: Buffer) => (output += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (output += c.toString()));
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`${name} exited early:\n${output}`);
    if (Date.now() > deadline) throw new Error(`${name} did not come up:\n${output}`);
    if (waitFor === 'uri-line') {
      const m = /(nbd:\/\/[^\s]+)/.exec(output);
      if (m) return { name, uri: m[1], process: child };
    } else if (await canConnect(port)) {
      return { name, uri: `nbd://127.0.0.1:${port}`, process: child };
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port }, () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

function runFio(fioArgs: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn('fio', fioArgs, { stdio: ['ignore', 'pipe', 'pipe'] });
    started.push(child);
    let out = '';
    let err = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    child.once('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`fio exited ${code}: ${err}${out.slice(0, 2000)}`))));
  });
}

async function fio(target: Target, job: Job | 'prefill'): Promise<Result | undefined> {
  const common = ['--ioengine=nbd', `--uri=${target.uri}`, `--size=${sizeBytes}`, '--output-format=json', '--group_reporting'];
  if (job === 'prefill') {
    // Write every block once, so reads hit data rather than holes in both servers.
    await runFio(['--name=prefill', ...common, '--rw=write', '--bs=1m', '--iodepth=8']);
    return undefined;
  }
  const out = await runFio([
    `--name=${job.id}`, ...common, `--rw=${job.rw}`, `--bs=${job.bs}`, `--iodepth=${job.iodepth}`,
    '--time_based', `--runtime=${seconds}`, '--ramp_time=1', '--norandommap', '--randrepeat=0',
  ]);
  const json = JSON.parse(out.slice(out.indexOf('{'))) as {
    jobs: Array<Record<'read' | 'write', { iops: number; bw_bytes: number; clat_ns: { percentile?: Record<string, number> } }>>;
  };
  const side = json.jobs[0][job.rw.includes('write') ? 'write' : 'read'];
  const pct = side.clat_ns.percentile ?? {};
  return {
    iops: side.iops,
    mbPerSec: side.bw_bytes / 1e6,
    latencyUsP50: (pct['50.000000'] ?? 0) / 1000,
    latencyUsP99: (pct['99.000000'] ?? 0) / 1000,
  };
}

function stopAll(): void {
  for (const c of started) {
    if (c.exitCode === null && c.signalCode === null && c.pid !== undefined) {
      try {
        process.kill(c.pid, 'SIGTERM');
      } catch {
        // gone
      }
    }
  }
}

async function main(): Promise<void> {
  const targets: Target[] = [];
  if (args['target-uri']) {
    targets.push({ name: args['target-name']!, uri: args['target-uri'] });
  } else {
    const file = path.join(workDir, 'ours.img');
    const port = await freePort();
    const template =
      args['target-cmd'] ?? `${process.execPath} --import tsx bench/nbd-file-server.ts --file {file} --size {size} --port {port}`;
    await sparseFile(file);
    const command = fill(template, { port: String(port), file, size: String(sizeBytes), dir: workDir });
    targets.push(await startServer(args['target-name']!, command, port, 'uri-line'));
  }
  if (!args['no-nbdkit']) {
    const file = path.join(workDir, 'nbdkit.img');
    await sparseFile(file);
    const port = await freePort();
    targets.push(await startServer('nbdkit', `nbdkit --foreground --exit-with-parent -i 127.0.0.1 -p ${port} file file=${file}`, port, 'port'));
  }

  console.log(`fio over NBD: ${seconds}s per job, ${(sizeBytes / 2 ** 20).toFixed(0)} MiB export, files in ${workDir}, ${os.cpus().length} CPUs`);
  for (const t of targets) console.log(`  ${t.name}: ${t.uri}`);
  if (!args['no-prefill']) for (const t of targets) await fio(t, 'prefill');

  const rows: Array<{ job: string; results: Record<string, Result> }> = [];
  for (const job of jobs) {
    const results: Record<string, Result> = {};
    for (const t of targets) results[t.name] = (await fio(t, job))!;
    rows.push({ job: job.id, results });
    process.stderr.write(`  done ${job.id}\n`);
  }
  printTable(rows, targets.map((t) => t.name));
  if (args.json) writeFileSync(args.json, JSON.stringify({ seconds, sizeBytes, rows }, null, 2));
}

function printTable(rows: Array<{ job: string; results: Record<string, Result> }>, names: string[]): void {
  const header = ['job'];
  for (const n of names) header.push(`${n} IOPS`, `${n} MB/s`, `${n} p50 µs`, `${n} p99 µs`);
  if (names.length === 2) header.push(`IOPS ${names[0]}/${names[1]}`);
  const lines = [header];
  for (const r of rows) {
    const line = [r.job];
    for (const n of names) {
      const x = r.results[n];
      line.push(x.iops.toFixed(0), x.mbPerSec.toFixed(1), x.latencyUsP50.toFixed(0), x.latencyUsP99.toFixed(0));
    }
    if (names.length === 2) line.push((r.results[names[0]].iops / r.results[names[1]].iops).toFixed(2));
    lines.push(line);
  }
  const widths = header.map((_, i) => Math.max(...lines.map((l) => l[i].length)));
  console.log();
  for (const l of lines) console.log(l.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  '));
}

process.on('SIGINT', () => {
  stopAll();
  process.exit(130);
});
try {
  await main();
} finally {
  stopAll();
  await new Promise((r) => setTimeout(r, 200));
  rmSync(workDir, { recursive: true, force: true });
}

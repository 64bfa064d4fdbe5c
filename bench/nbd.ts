/**
 * fio over NBD: FreEBS against `nbdkit file` on the same disk, same run, same jobs (issue #3).
 *
 *   npx tsx bench/nbd.ts [--seconds 10] [--size 1G] [--dir /tmp] [--jobs randwrite-4k-qd16,...]
 *                        [--target-cmd 'CMD with {port} {file} {size} {dir}'] [--target-uri nbd://…]
 *                        [--repeat N] [--cpu-prof DIR] [--no-nbdkit] [--no-prefill] [--front-end] [--relay] [--json out.json]
 *
 * Default target: the real single-node mode, a fresh volume in the work directory:
 *   node --import tsx cli/freebs.ts serve --dir {dir}/freebs --size {size} --port {port}
 * which prints `serving nbd://HOST:PORT/NAME ...` once ready.
 * --target-cmd starts another server under test; it must print a line containing its nbd:// URI.
 * --target-uri benches a server that is already running (e.g. a `freebs up` cluster) instead.
 * --replicas N benches a whole local cluster instead (`freebs up --replicas N`: controller, N
 *   replica processes and the driver on this machine) against the goals of issue #4; the CPU
 *   columns then count every process of the cluster.
 * --cpu-prof DIR runs the default target under `node --cpu-prof`; the profile lands in DIR
 *   when the server exits (SIGTERM at the end of the run).
 * Env: BENCH_SECONDS, BENCH_SIZE, BENCH_DIR, BENCH_TARGET_CMD, BENCH_TARGET_URI.
 *
 * --front-end also benches FreEBS's NBD front end over a plain file (bench/file-server.ts, the
 *   work `nbdkit file` does, in Node): a gap between FreEBS and nbdkit then splits into the front
 *   end's share and the store's.
 * --relay also benches `nbdkit file` behind a byte relay (bench/relay.ts): the least any process
 *   forwarding NBD to a storage server can add, so it bounds a cluster, whose reads go from fio
 *   through the driver to a replica. It reads nbdkit's file (prefilled once); its CPU columns
 *   count the relay only.
 *
 * --repeat N runs every job N times per target, alternating targets, and reports the run with
 *   the median IOPS: on a shared machine one run says more about the neighbours than about us.
 * A job fio fails on (an I/O error) is reported as such and the run goes on.
 *
 * Besides fio's figures the table shows each server's CPU use during the job (user + system
 * time of its process over wall time, from /proc), which says whether a gap is CPU or waiting,
 * and that CPU time per request, which neighbours on a shared machine disturb less than IOPS.
 * fio runs with its working directory in the temporary work directory, so no *.state files
 * land in the repo.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { memberV8Flags } from '../actors/member-process.js';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { values: args } = parseArgs({
  options: {
    seconds: { type: 'string', default: process.env.BENCH_SECONDS ?? '10' },
    size: { type: 'string', default: process.env.BENCH_SIZE ?? '1G' },
    dir: { type: 'string', default: process.env.BENCH_DIR ?? os.tmpdir() },
    jobs: { type: 'string' },
    'target-cmd': { type: 'string', default: process.env.BENCH_TARGET_CMD },
    'target-uri': { type: 'string', default: process.env.BENCH_TARGET_URI },
    'target-name': { type: 'string', default: 'freebs' },
    repeat: { type: 'string', default: '1' },
    'cpu-prof': { type: 'string' },
    replicas: { type: 'string' },
    'no-nbdkit': { type: 'boolean', default: false },
    'no-prefill': { type: 'boolean', default: false },
    'front-end': { type: 'boolean', default: false },
    relay: { type: 'boolean', default: false },
    json: { type: 'string' },
  },
});

interface Job {
  id: string;
  rw: 'randwrite' | 'randread' | 'write' | 'read';
  bs: string;
  iodepth: number;
  /** Issue #3's goal for single-node FreEBS: IOPS at least this share of nbdkit's. */
  targetRatio?: number;
  /** Issue #4's goal for a 3-replica cluster. */
  clusterTargetRatio?: number;
  /** Run only with --replicas (or only without). */
  only?: 'cluster' | 'single';
}

const ALL_JOBS: Job[] = [
  { id: 'randwrite-4k-qd16', rw: 'randwrite', bs: '4k', iodepth: 16, targetRatio: 0.7 },
  { id: 'randwrite-4k-qd32', rw: 'randwrite', bs: '4k', iodepth: 32, clusterTargetRatio: 0.4, only: 'cluster' },
  { id: 'randread-4k-qd16', rw: 'randread', bs: '4k', iodepth: 16, targetRatio: 0.7, clusterTargetRatio: 0.7 },
  { id: 'seqwrite-1m-qd8', rw: 'write', bs: '1m', iodepth: 8, targetRatio: 0.5, clusterTargetRatio: 0.33 },
  { id: 'seqread-1m-qd8', rw: 'read', bs: '1m', iodepth: 8, targetRatio: 0.5 },
  { id: 'randwrite-4k-qd1', rw: 'randwrite', bs: '4k', iodepth: 1 },
];
const clusterReplicas = args.replicas !== undefined ? Number(args.replicas) : undefined;
if (clusterReplicas !== undefined && !(Number.isInteger(clusterReplicas) && clusterReplicas >= 1)) {
  throw new Error(`--replicas must be a whole number ≥ 1, got ${args.replicas}`);
}
const mode = clusterReplicas !== undefined ? 'cluster' : 'single';

interface Result {
  /** Set when fio failed; the figures are then NaN. */
  error?: string;
  iops: number;
  mbPerSec: number;
  latencyUsP50: number;
  latencyUsP99: number;
  /** Server process CPU time over wall time during the job, in % of one core; NaN when unknown. */
  serverCpuPercent: number;
}

interface Target {
  name: string;
  uri: string;
  process?: ChildProcess;
}

/** How long a server may take to print its URI (a fresh volume, tsx compiling on first start). */
const STARTUP_TIMEOUT_MS = 60_000;
/** Waiting for a stopped server to exit (it flushes and checkpoints) before SIGKILL. */
const STOP_TIMEOUT_MS = 30_000;

const seconds = Number(args.seconds);
const repeat = Number(args.repeat);
if (!Number.isInteger(repeat) || repeat < 1) throw new Error(`--repeat must be a whole number ≥ 1, got ${args.repeat}`);
const sizeBytes = parseSize(args.size!);
const jobs = args.jobs ? ALL_JOBS.filter((j) => args.jobs!.split(',').includes(j.id)) : ALL_JOBS.filter((j) => !j.only || j.only === mode);
if (jobs.length === 0) throw new Error(`no job matches --jobs ${args.jobs}; known: ${ALL_JOBS.map((j) => j.id).join(', ')}`);
const workDir = mkdtempSync(path.join(args.dir!, 'freebs-bench-nbd-'));
const started: ChildProcess[] = [];
const clockTicksPerSec = 100; // USER_HZ: 100 on every Linux architecture Node runs on.

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
  // exec: the shell becomes the server, so the PID we hold (and signal) is the server's.
  const child = spawn('sh', ['-c', `exec ${command}`], { stdio: ['ignore', 'pipe', 'pipe'], cwd: repo });
  started.push(child);
  let output = '';
  child.stdout!.on('data', (c: Buffer) => (output += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (output += c.toString()));
  const deadline = Date.now() + STARTUP_TIMEOUT_MS;
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

/**
 * CPU seconds (user + system) a process and its descendants (a cluster's members run in process
 * groups of their own, so this follows parent ids) have used so far; NaN if it cannot be read.
 */
function cpuSeconds(pid: number | undefined): number {
  if (pid === undefined) return NaN;
  const stats = new Map<number, { ppid: number; seconds: number }>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      // Fields after the command name (which may hold spaces) start after the last ')'.
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      // ppid: field 4; utime, stime: fields 14 and 15.
      stats.set(Number(name), { ppid: Number(fields[1]), seconds: (Number(fields[11]) + Number(fields[12])) / clockTicksPerSec });
    } catch {
      // Exited meanwhile.
    }
  }
  if (!stats.has(pid)) return NaN;
  let total = 0;
  const wanted = new Set([pid]);
  // Parents have lower pids only until pids wrap: repeat until no process is added.
  for (let added = true; added; ) {
    added = false;
    for (const [p, st] of stats) {
      if (!wanted.has(p) && wanted.has(st.ppid)) {
        wanted.add(p);
        added = true;
      }
    }
  }
  for (const p of wanted) total += stats.get(p)!.seconds;
  return total;
}

function runFio(fioArgs: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn('fio', fioArgs, { stdio: ['ignore', 'pipe', 'pipe'], cwd: workDir });
    started.push(child);
    let out = '';
    let err = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    child.once('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`fio exited ${code}: ${err}${out.slice(0, 2000)}`))));
  });
}

/** fio's nbd engine prints "fio: connected to NBD server" before the report: parse from the first line opening an object. */
function fioReport(stdout: string): { jobs: Array<Record<'read' | 'write', { iops: number; bw_bytes: number; clat_ns: { percentile?: Record<string, number> } }>> } {
  const start = stdout.search(/^\{/m);
  if (start < 0) throw new Error(`fio printed no JSON report:\n${stdout.slice(0, 2000)}`);
  return JSON.parse(stdout.slice(start)) as ReturnType<typeof fioReport>;
}

async function fio(target: Target, job: Job | 'prefill'): Promise<Result | undefined> {
  const common = [
    '--ioengine=nbd', `--uri=${target.uri}`, `--size=${sizeBytes}`, '--output-format=json', '--group_reporting', '--verify_state_save=0',
  ];
  if (job === 'prefill') {
    // Write every block once, so reads hit data rather than holes in both servers.
    await runFio(['--name=prefill', ...common, '--rw=write', '--bs=1m', '--iodepth=8']);
    return undefined;
  }
  const pid = target.process?.pid;
  const cpuBefore = cpuSeconds(pid);
  const wallBeforeMs = performance.now();
  const out = await runFio([
    `--name=${job.id}`, ...common, `--rw=${job.rw}`, `--bs=${job.bs}`, `--iodepth=${job.iodepth}`,
    '--time_based', `--runtime=${seconds}`, '--ramp_time=1', '--norandommap', '--randrepeat=0',
  ]);
  const serverCpuPercent = ((cpuSeconds(pid) - cpuBefore) / ((performance.now() - wallBeforeMs) / 1000)) * 100;
  const side = fioReport(out).jobs[0][job.rw.includes('write') ? 'write' : 'read'];
  const pct = side.clat_ns.percentile ?? {};
  return {
    iops: side.iops,
    mbPerSec: side.bw_bytes / 1e6,
    latencyUsP50: (pct['50.000000'] ?? 0) / 1000,
    latencyUsP99: (pct['99.000000'] ?? 0) / 1000,
    serverCpuPercent,
  };
}

async function fioOrError(target: Target, job: Job): Promise<Result> {
  try {
    return (await fio(target, job))!;
  } catch (err) {
    const message = (err as Error).message;
    process.stderr.write(`  ${target.name} ${job.id}: ${message.split('\n')[0]}\n`);
    return { error: message, iops: NaN, mbPerSec: NaN, latencyUsP50: NaN, latencyUsP99: NaN, serverCpuPercent: NaN };
  }
}

/** The run with the median IOPS (failed runs sort last, so they only win when most runs failed). */
function median(results: Result[]): Result {
  const sorted = [...results].sort((a, b) => (Number.isNaN(a.iops) ? 1 : Number.isNaN(b.iops) ? -1 : a.iops - b.iops));
  return sorted[Math.floor((sorted.length - 1) / 2)];
}

/** SIGTERM every child still running and wait for it: a profiled server writes its profile on exit. */
async function stopAll(): Promise<void> {
  await Promise.all(
    started.map(
      (c) =>
        new Promise<void>((resolve) => {
          if (c.exitCode !== null || c.signalCode !== null || c.pid === undefined) return resolve();
          const timer = setTimeout(() => {
            c.kill('SIGKILL');
            resolve();
          }, STOP_TIMEOUT_MS);
          c.once('exit', () => {
            clearTimeout(timer);
            resolve();
          });
          c.kill('SIGTERM');
        }),
    ),
  );
}

async function defaultTargetCommand(): Promise<string> {
  const profile = args['cpu-prof'] ? `--cpu-prof --cpu-prof-dir=${path.resolve(args['cpu-prof'])} ` : '';
  if (clusterReplicas !== undefined) {
    // Members are started by `freebs up` with this node: profiling them is NODE_OPTIONS' job.
    const basePort = 20000 + Math.floor(Math.random() * 20000);
    return (
      `${process.execPath} --import tsx cli/freebs.ts up --dir {dir}/cluster --replicas ${clusterReplicas} --size {size} ` +
      `--nbd-port {port} --base-port ${basePort} --controller-port ${await freePort()}`
    );
  }
  return `${process.execPath} ${memberV8Flags.join(' ')} ${profile}--import tsx cli/freebs.ts serve --dir {dir}/freebs --size {size} --port {port}`;
}

/** The target bench/relay.ts puts in front of nbdkit. */
const RELAY = 'nbdkit+relay';

/**
 * FreEBS's NBD front end over a plain file (bench/file-server.ts): nbdkit's work, in place, in
 * Node. Against it, a gap to nbdkit splits into the front end's share and the store's.
 */
async function frontEndTarget(): Promise<Target> {
  const file = path.join(workDir, 'front-end.img');
  await sparseFile(file);
  const port = await freePort();
  const command = `${process.execPath} ${memberV8Flags.join(' ')} --import tsx bench/file-server.ts ${file} ${port}`;
  return startServer('front-end+file', command, port, 'uri-line');
}

async function main(): Promise<void> {
  const targets: Target[] = [];
  if (args['target-uri']) {
    targets.push({ name: args['target-name']!, uri: args['target-uri'] });
  } else {
    const file = path.join(workDir, 'target.img');
    const port = await freePort();
    const template = args['target-cmd'] ?? (await defaultTargetCommand());
    // Only a custom command may want a preallocated file; `freebs serve` creates its volume in {dir}.
    if (template.includes('{file}')) await sparseFile(file);
    const command = fill(template, { port: String(port), file, size: String(sizeBytes), dir: workDir });
    const name = clusterReplicas !== undefined && args['target-name'] === 'freebs' ? `freebs×${clusterReplicas}` : args['target-name']!;
    targets.push(await startServer(name, command, port, 'uri-line'));
  }
  if (args['front-end']) targets.push(await frontEndTarget());
  if (!args['no-nbdkit']) {
    const file = path.join(workDir, 'nbdkit.img');
    await sparseFile(file);
    const port = await freePort();
    targets.push(await startServer('nbdkit', `nbdkit --foreground --exit-with-parent -i 127.0.0.1 -p ${port} file file=${file}`, port, 'port'));
    if (args.relay) {
      const relayPort = await freePort();
      targets.push(await startServer(RELAY, `${process.execPath} --import tsx bench/relay.ts ${relayPort} ${port}`, relayPort, 'port'));
    }
  }

  console.log(
    `fio over NBD: ${seconds}s per job${repeat > 1 ? ` (median of ${repeat})` : ''}, ${(sizeBytes / 2 ** 20).toFixed(0)} MiB export, ` +
      `files in ${workDir}, ${os.cpus().length} CPUs, load average ${os.loadavg().map((l) => l.toFixed(1)).join(' ')}`,
  );
  for (const t of targets) console.log(`  ${t.name}: ${t.uri}${t.process ? ` (pid ${t.process.pid})` : ''}`);
  // The relay's data is nbdkit's, written once.
  if (!args['no-prefill']) for (const t of targets) if (t.name !== RELAY) await fio(t, 'prefill');

  const rows: Row[] = [];
  for (const job of jobs) {
    const runs = new Map<string, Result[]>(targets.map((t) => [t.name, []]));
    for (let i = 0; i < repeat; i++) {
      // Alternate who goes first, so a neighbour's burst does not always hit the same target.
      for (const t of i % 2 === 0 ? targets : [...targets].reverse()) runs.get(t.name)!.push(await fioOrError(t, job));
    }
    const results: Record<string, Result> = {};
    for (const [name, list] of runs) results[name] = median(list);
    rows.push({ job, results });
    process.stderr.write(`  done ${job.id}\n`);
  }
  printTable(rows, targets.map((t) => t.name));
  console.log(`\nload average at the end: ${os.loadavg().map((l) => l.toFixed(1)).join(' ')}`);
  if (args.json) {
    writeFileSync(args.json, JSON.stringify({ seconds, sizeBytes, rows: rows.map((r) => ({ job: r.job.id, results: r.results })) }, null, 2));
  }
}

interface Row {
  job: Job;
  results: Record<string, Result>;
}

function printTable(rows: Row[], names: string[]): void {
  const header = ['job'];
  for (const n of names) header.push(`${n} IOPS`, `${n} MB/s`, `${n} p50 µs`, `${n} p99 µs`, `${n} CPU%`, `${n} CPU µs/IO`);
  // Every other target against nbdkit; the goal judges the first (FreEBS) only.
  const compare = names.length >= 2 && names.includes('nbdkit');
  const others = names.filter((n) => n !== 'nbdkit');
  if (compare) header.push(...others.map((n) => `${n}/nbdkit`), 'goal');
  const lines = [header];
  for (const r of rows) {
    const line = [r.job.id];
    for (const n of names) {
      const x = r.results[n];
      if (x.error) {
        line.push('fio failed', '-', '-', '-', '-', '-');
        continue;
      }
      const cpu = Number.isNaN(x.serverCpuPercent);
      line.push(
        x.iops.toFixed(0), x.mbPerSec.toFixed(1), x.latencyUsP50.toFixed(0), x.latencyUsP99.toFixed(0),
        cpu ? '-' : x.serverCpuPercent.toFixed(0),
        // CPU per request: on a shared machine a steadier measure of cost than IOPS.
        cpu ? '-' : ((x.serverCpuPercent * 1e4) / x.iops).toFixed(1),
      );
    }
    if (compare) {
      for (const n of others) {
        const x = r.results[n].iops / r.results.nbdkit.iops;
        line.push(Number.isNaN(x) ? '-' : x.toFixed(2));
      }
      const ratio = r.results[others[0]].iops / r.results.nbdkit.iops;
      // Single-node goals are issue #3's, a 3-replica cluster's issue #4's; a server behind
      // --target-uri or a custom command is not judged.
      const goal = args['target-uri'] || args['target-cmd'] ? undefined : clusterReplicas === 3 ? r.job.clusterTargetRatio : clusterReplicas === undefined ? r.job.targetRatio : undefined;
      line.push(goal === undefined ? '-' : `≥${goal} ${ratio >= goal ? 'met' : 'MISSED'}`);
    }
    lines.push(line);
  }
  const widths = header.map((_, i) => Math.max(...lines.map((l) => l[i].length)));
  console.log();
  for (const l of lines) console.log(l.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  '));
}

process.on('SIGINT', () => {
  void stopAll().then(() => process.exit(130));
});
try {
  await main();
} finally {
  await stopAll();
  rmSync(workDir, { recursive: true, force: true });
}

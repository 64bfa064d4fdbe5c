/**
 * What this machine's kernel charges for the bytes a block store moves, before any code of ours
 * runs: the floor under the bench/nbd.ts figures.
 *
 *   npx tsx bench/machine.ts [--dir /tmp] [--size 1G]
 *
 * - page cache: CPU per MiB to write a new file, a new file again right after deleting one
 *   (its freed pages come back), and over a file in place; then fdatasync's wall time;
 * - device: `dd oflag=direct` in place, the disk without the page cache;
 * - loopback TCP: CPU per MiB, sender and receiver, between two processes.
 *
 * It then prints the kernel's share alone of a client's 1 MiB sequential writes, for a single
 * node and for a 3-replica chain, and the rate at which it would fill every core.
 */
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, fdatasyncSync, mkdtempSync, openSync, rmSync, unlinkSync, writeSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { parseSizeBytes } from '../cli/size.js';

const MiB = 1024 * 1024;
const { values: args } = parseArgs({
  options: {
    dir: { type: 'string', default: process.env.BENCH_DIR ?? os.tmpdir() },
    size: { type: 'string', default: '1G' },
    child: { type: 'string' },
  },
});

/** Child mode: send `bytes` to the port, then report our CPU per MiB on stdout. */
async function sender(port: number, bytes: number): Promise<void> {
  const chunk = Buffer.alloc(MiB, 0x5a);
  const before = process.cpuUsage();
  const socket = net.connect(port, '127.0.0.1');
  await new Promise<void>((resolve) => socket.once('connect', resolve));
  let sent = 0;
  await new Promise<void>((resolve, reject) => {
    socket.on('error', reject);
    const pump = (): void => {
      while (sent < bytes) {
        sent += chunk.length;
        if (!socket.write(chunk)) return void socket.once('drain', pump);
      }
      socket.end(resolve);
    };
    pump();
  });
  const used = process.cpuUsage(before);
  process.stdout.write(`${(used.user + used.system) / 1000 / (bytes / MiB)}\n`);
}

if (args.child) {
  const [port, bytes] = args.child.split(':').map(Number);
  await sender(port, bytes);
  process.exit(0);
}

const sizeBytes = parseSizeBytes(args.size!);
// dd writes it in 4 MiB blocks.
if (sizeBytes % (4 * MiB) !== 0) throw new Error(`--size must be a multiple of 4M, got ${args.size}`);
const mib = sizeBytes / MiB;
const dir = mkdtempSync(path.join(args.dir!, 'freebs-machine-'));
const cores = os.cpus().length;

/** Write the file from its start in 1 MiB writes; kernel + user CPU per MiB, and wall time. */
function writeFile(file: string, flags: string): { cpuMsPerMiB: number; seconds: number } {
  const chunk = Buffer.alloc(MiB, 0xa5);
  const fd = openSync(file, flags);
  const before = process.cpuUsage();
  const start = performance.now();
  for (let at = 0; at < sizeBytes; at += MiB) writeSync(fd, chunk, 0, MiB, at);
  const used = process.cpuUsage(before);
  const seconds = (performance.now() - start) / 1000;
  closeSync(fd);
  return { cpuMsPerMiB: (used.user + used.system) / 1000 / mib, seconds };
}

function syncSeconds(file: string): number {
  const fd = openSync(file, 'r+');
  const start = performance.now();
  fdatasyncSync(fd);
  closeSync(fd);
  return (performance.now() - start) / 1000;
}

function ddDirect(file: string): number | undefined {
  const r = spawnSync('dd', ['if=/dev/zero', `of=${file}`, 'bs=4M', `count=${sizeBytes / (4 * MiB)}`, 'oflag=direct', 'conv=notrunc'], { encoding: 'utf8' });
  const m = /([\d.]+) s, /.exec(r.stderr ?? '');
  return m ? sizeBytes / MiB / Number(m[1]) : undefined;
}

async function loopback(): Promise<{ senderMsPerMiB: number; receiverMsPerMiB: number; mibPerSec: number }> {
  const bytes = Math.max(sizeBytes, 2048 * MiB);
  let received = 0;
  let receiverCpu = 0;
  let start = 0;
  let seconds = 0;
  const server = net.createServer((socket) => {
    const before = process.cpuUsage();
    start = performance.now();
    socket.on('data', (c: Buffer) => (received += c.length));
    socket.on('end', () => {
      seconds = (performance.now() - start) / 1000;
      const used = process.cpuUsage(before);
      receiverCpu = (used.user + used.system) / 1000;
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  const child = spawn(process.execPath, ['--import', 'tsx', process.argv[1], '--child', `${port}:${bytes}`], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.on('data', (c: Buffer) => (out += c.toString()));
  await new Promise((resolve) => child.once('close', resolve));
  server.close();
  return { senderMsPerMiB: Number(out.trim()), receiverMsPerMiB: receiverCpu / (received / MiB), mibPerSec: received / MiB / seconds };
}

try {
  const a = path.join(dir, 'a.img');
  const b = path.join(dir, 'b.img');
  const fresh = writeFile(a, 'w');
  const sync = syncSeconds(a);
  const inPlace = writeFile(a, 'r+');
  unlinkSync(a);
  const again = writeFile(b, 'w');
  const device = ddDirect(b);
  const tcp = await loopback();

  const f = (x: number): string => x.toFixed(2);
  console.log(`this machine: ${cores} CPUs, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, files in ${dir}, ${mib} MiB per test`);
  const rows: Array<[string, string]> = [
    ['page cache, a new file', `${f(fresh.cpuMsPerMiB)} ms CPU per MiB (${(mib / fresh.seconds).toFixed(0)} MiB/s)`],
    ['page cache, a new file right after a delete', `${f(again.cpuMsPerMiB)} ms CPU per MiB`],
    ['page cache, over a file in place', `${f(inPlace.cpuMsPerMiB)} ms CPU per MiB`],
    ['fdatasync of the new file', `${f(sync)} s`],
    ['device, dd oflag=direct in place', device === undefined ? 'dd failed' : `${device.toFixed(0)} MiB/s`],
    ['loopback TCP between two processes', `sender ${f(tcp.senderMsPerMiB)} + receiver ${f(tcp.receiverMsPerMiB)} ms CPU per MiB (${tcp.mibPerSec.toFixed(0)} MiB/s)`],
  ];
  const width = Math.max(...rows.map(([k]) => k.length));
  for (const [k, v] of rows) console.log(`  ${k.padEnd(width)}  ${v}`);

  // A 3-replica chain moves each client MiB over 4 links (fio→driver→head→middle→tail) and
  // into 3 logs; a single node over 1 link into 1 log. Kernel work only, warm page cache.
  const hop = tcp.senderMsPerMiB + tcp.receiverMsPerMiB;
  for (const [what, links, logs] of [['single node', 1, 1], ['3-replica chain', 4, 3]] as const) {
    const msPerMiB = links * hop + logs * inPlace.cpuMsPerMiB;
    console.log(`${what}: ≥ ${f(msPerMiB)} ms of kernel CPU per client MiB written (links: ${links}, logs: ${logs}, pages in place): at most ${((cores * 1000) / msPerMiB).toFixed(0)} MiB/s on ${cores} cores doing nothing else`);
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}

/**
 * Link throughput between two Node processes: 4 KiB write frames one way, acks back.
 *
 *   node --import tsx bench/ws.ts [--seconds 5] [--size 4096] [--window 8192] [--ack-each] [--flush-each]
 *
 * The parent is a replica: a LinkServer that acks. The child is a driver: a DialingLink that keeps
 * up to --window writes in flight and tops up from each ack batch. By default acks are cumulative,
 * one per received batch (as replicas do); --ack-each sends one ack per write. --flush-each sends
 * every write as its own WebSocket message (no batching), for comparison with DESIGN.md's figures.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { DialingLink } from '../protocol/dialer.js';
import type { WriteFrame } from '../protocol/frames.js';
import type { Logger } from '../protocol/logger.js';
import { LinkServer } from '../protocol/server.js';

const { values: args } = parseArgs({
  options: {
    child: { type: 'string' },
    seconds: { type: 'string', default: '5' },
    size: { type: 'string', default: '4096' },
    window: { type: 'string', default: '8192' },
    'ack-each': { type: 'boolean', default: false },
    'flush-each': { type: 'boolean', default: false },
  },
});
const seconds = Number(args.seconds);
const sizeBytes = Number(args.size);
const windowFrames = Number(args.window);
const quiet: Logger = { debug() {}, info() {}, warn: (o, m) => console.error(m, o), error: (o, m) => console.error(m, o) };

if (args.child) await runDriver(args.child);
else await runReplica();

async function runReplica(): Promise<void> {
  let writes = 0;
  let batches = 0;
  const server = new LinkServer({
    localId: 'replica',
    clusterId: 'bench',
    logger: quiet,
    onLink: (link, hello) => {
      link.send({ t: 'welcome', role: 'replica', id: 'replica', epoch: hello.epoch, appliedVersion: 0 });
      link.on('batch', (batch) => {
        batches++;
        let last = -1;
        for (const f of batch.frames) {
          if (f.t !== 'write') continue;
          writes++;
          last = f.v;
          if (args['ack-each']) link.send({ t: 'ack', epoch: 1, id: 'replica', appliedVersion: f.v, durableVersion: 0 });
        }
        if (last >= 0 && !args['ack-each']) link.send({ t: 'ack', epoch: 1, id: 'replica', appliedVersion: last, durableVersion: 0 });
      });
    },
  });
  const { url } = await server.listen();
  const passOn = ['--seconds', args.seconds!, '--size', args.size!, '--window', args.window!];
  if (args['flush-each']) passOn.push('--flush-each');
  const child = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--child', url, ...passOn], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
  await server.close();
  if (code !== 0) throw new Error(`driver process exited with ${code}`);
  const r = JSON.parse(out) as { framesPerSec: number; mibPerSec: number; framesPerBatch: number; ackBatchesPerSec: number };
  const mode = `${args['flush-each'] ? 'one message per frame' : 'batched per turn'}, ${args['ack-each'] ? 'ack per write' : 'cumulative ack per batch'}`;
  console.log(
    `ws link, ${sizeBytes} B writes, ${mode}, window ${windowFrames}, ${seconds}s: ` +
      `${Math.round(r.framesPerSec).toLocaleString('en')} writes/s acked (${r.mibPerSec.toFixed(0)} MiB/s), ` +
      `${r.framesPerBatch.toFixed(1)} writes per message; replica saw ${writes} writes in ${batches} messages`,
  );
}

async function runDriver(url: string): Promise<void> {
  const data = Buffer.alloc(sizeBytes, 0x5a);
  const dialer = new DialingLink({
    url,
    hello: { t: 'hello', role: 'driver', id: 'driver', epoch: 1, clusterId: 'bench' },
    logger: quiet,
  });
  await new Promise((resolve) => dialer.once('up', resolve));
  const link = dialer.link!;
  let sent = 0;
  let acked = 0;
  let blocked = false;
  let measuring = false;
  let stopping = false;
  let startAcked = 0;
  let startBatches = 0;
  let startFrames = 0;
  let ackBatches = 0;

  const pump = (): void => {
    while (!stopping && !blocked && sent - acked < windowFrames) {
      sent++;
      const frame: WriteFrame = { t: 'write', epoch: 1, v: sent, kind: 'write', offsetBytes: (sent % 65536) * sizeBytes, lengthBytes: sizeBytes, data };
      if (!link.send(frame)) blocked = true;
      if (args['flush-each']) link.flush();
    }
  };
  dialer.on('drain', () => {
    blocked = false;
    pump();
  });
  dialer.on('batch', (batch) => {
    ackBatches++;
    for (const f of batch.frames) if (f.t === 'ack' && f.appliedVersion > acked) acked = f.appliedVersion;
    pump();
  });
  pump();

  // One second of warm-up (JIT, socket buffers), then measure.
  await new Promise((r) => setTimeout(r, 1000));
  measuring = true;
  startAcked = acked;
  startBatches = link.stats.batchesSent;
  startFrames = link.stats.framesSent;
  const startAckBatches = ackBatches;
  const t0 = process.hrtime.bigint();
  await new Promise((r) => setTimeout(r, seconds * 1000));
  const elapsedS = Number(process.hrtime.bigint() - t0) / 1e9;
  stopping = true;
  const frames = acked - startAcked;
  const result = {
    measuring,
    framesPerSec: frames / elapsedS,
    mibPerSec: (frames * sizeBytes) / elapsedS / (1 << 20),
    framesPerBatch: (link.stats.framesSent - startFrames) / Math.max(1, link.stats.batchesSent - startBatches),
    ackBatchesPerSec: (ackBatches - startAckBatches) / elapsedS,
  };
  process.stdout.write(JSON.stringify(result));
  await dialer.close();
}

/**
 * §5.2: what checkpoints buy and cost in the LSVD, measured in-process on this disk:
 * recovery time against log size with and without a recent checkpoint, write throughput
 * against checkpoint interval, and checkpoint size against the number of extents.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, readdirSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';
import { Lsvd } from '../../storage/lsvd.js';
import type { EvalContext } from './context.js';
import { lineChart } from './svg.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const BLOCK = 4096;
const VOLUME = 8 * GiB;
const NEVER = Number.MAX_SAFE_INTEGER;

/** Append `bytes` of random 4 KiB writes, flushing every 256; returns MB/s. */
async function ingest(store: Lsvd, bytes: number, seed: Buffer): Promise<number> {
  const count = bytes / BLOCK;
  const blocks = VOLUME / BLOCK;
  let x = 0x9e3779b9;
  const t = performance.now();
  for (let i = 0; i < count; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    const data = seed.subarray((i % 256) * 16, (i % 256) * 16 + BLOCK);
    for (;;) {
      try {
        store.append({ version: store.version + 1, kind: 'write', offsetBytes: ((x >>> 0) % blocks) * BLOCK, lengthBytes: BLOCK, data });
        break;
      } catch (err) {
        if ((err as { code?: string }).code !== 'ERR_BUSY') throw err;
        await store.flush();
      }
    }
    if (i % 256 === 255) await store.flush();
  }
  await store.flush();
  return bytes / 1e6 / ((performance.now() - t) / 1000);
}

function checkpointBytes(dir: string): number {
  const newest = readdirSync(dir).filter((n) => n.endsWith('.ckpt')).sort().at(-1);
  return newest ? statSync(path.join(dir, newest)).size : 0;
}

async function timedOpen(dir: string): Promise<{ seconds: number; replayed: number }> {
  const t = performance.now();
  const store = await Lsvd.open({ dir, checkpointEveryRecords: NEVER, checkpointEveryBytes: NEVER });
  const seconds = (performance.now() - t) / 1000;
  const replayed = store.openReport.replayedRecords;
  await store.close({ checkpoint: false });
  return { seconds, replayed };
}

export async function checkpointSection(ctx: EvalContext): Promise<string> {
  const work = path.join(ctx.workDir, 'ckpt');
  const seed = randomBytes(BLOCK + 256 * 16);
  const sizes = [128 * MiB, 256 * MiB, 512 * MiB, GiB];

  const recovery: Array<{ logBytes: number; without: number; with: number; replayed: number; extents: number; checkpointBytes: number }> = [];
  for (const logBytes of sizes) {
    ctx.progress(`§5.2 recovery: ${logBytes / MiB} MiB log`);
    const dir = path.join(work, `recovery-${logBytes}`);
    mkdirSync(dir, { recursive: true });
    const store = await Lsvd.open({ dir, sizeBytes: VOLUME, checkpointEveryRecords: NEVER, checkpointEveryBytes: NEVER });
    await ingest(store, logBytes, seed);
    const extents = (await store.stats()).extents;
    await store.close({ checkpoint: false });
    const without = await timedOpen(dir);
    const again = await Lsvd.open({ dir, checkpointEveryRecords: NEVER, checkpointEveryBytes: NEVER });
    await again.checkpoint();
    await again.close({ checkpoint: false });
    const withCheckpoint = await timedOpen(dir);
    recovery.push({ logBytes, without: without.seconds, with: withCheckpoint.seconds, replayed: without.replayed, extents, checkpointBytes: checkpointBytes(dir) });
    rmSync(dir, { recursive: true, force: true });
  }

  const intervals = [2048, 8192, 32768, NEVER];
  const overhead: Array<{ interval: number; mbPerSec: number; checkpoints: number }> = [];
  for (const interval of intervals) {
    const label = interval === NEVER ? 'never' : String(interval);
    ctx.progress(`§5.2 checkpoint interval: ${interval === NEVER ? "no checkpoints" : `every ${label} records`}`);
    const dir = path.join(work, `interval-${label}`);
    mkdirSync(dir, { recursive: true });
    const store = await Lsvd.open({ dir, sizeBytes: VOLUME, checkpointEveryRecords: interval, checkpointEveryBytes: NEVER });
    const mbPerSec = await ingest(store, 256 * MiB, seed);
    // Checkpoint files are numbered by sequence: the newest number is how many were written.
    const newest = readdirSync(dir).filter((n) => n.endsWith('.ckpt')).sort().at(-1);
    const checkpoints = newest ? Number(/(\d+)\.ckpt$/.exec(newest)![1]) : 0;
    await store.close({ checkpoint: false });
    overhead.push({ interval, mbPerSec, checkpoints });
    rmSync(dir, { recursive: true, force: true });
  }
  rmSync(work, { recursive: true, force: true });

  ctx.chart('recovery.svg', lineChart('Recovery time vs log size', 'log size (MiB)', 'seconds', [
    { name: 'full replay (no checkpoint)', points: recovery.map((r) => [r.logBytes / MiB, r.without]) },
    { name: 'recent checkpoint', points: recovery.map((r) => [r.logBytes / MiB, r.with]) },
  ]));
  ctx.chart('checkpoint-size.svg', lineChart('Checkpoint size vs extents mapped', 'extents', 'MiB', [
    { name: 'checkpoint file', points: recovery.map((r) => [r.extents, r.checkpointBytes / MiB]) },
  ]));
  const base = overhead.find((o) => o.interval === NEVER)!.mbPerSec;
  return `## 5.2 Checkpointing

The LSVD alone (in-process, this disk), ${BLOCK / 1024} KiB random writes over an ${VOLUME / GiB} GiB volume, a flush
every 256 writes.

Recovery (\`Lsvd.open\`) after a clean stop without a checkpoint (replay of the whole log) and
right after a checkpoint (load it, replay nothing):

| log | records replayed | full replay | with checkpoint | extents | checkpoint size |
|---|---|---|---|---|---|
${recovery.map((r) => `| ${r.logBytes / MiB} MiB | ${r.replayed} | ${r.without.toFixed(2)} s | ${r.with.toFixed(2)} s | ${r.extents} | ${(r.checkpointBytes / MiB).toFixed(1)} MiB |`).join('\n')}

![recovery](eval/recovery.svg)
![checkpoint size](eval/checkpoint-size.svg)

Checkpoint interval against write throughput (256 MiB ingested):

| checkpoint every | checkpoints written | MB/s | vs never |
|---|---|---|---|
${overhead.map((o) => `| ${o.interval === NEVER ? 'never' : `${o.interval} records`} | ${o.checkpoints} | ${o.mbPerSec.toFixed(1)} | ${(o.mbPerSec / base).toFixed(2)}× |`).join('\n')}
`;
}

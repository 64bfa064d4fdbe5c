/**
 * Per-chunk checksums of a replica's LSVD (what `freebs scrub` compares): the same content gives
 * the same list however it was written (small writes or one big one, zeros written or a hole), a
 * flipped byte on disk — corruptRecord(), in place under a running store — changes exactly the
 * chunk it is in (and stays silent across a clean restart), and the list is taken at one version.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { chunkChecksums, type ChunkChecksum } from '../../actors/checksums.js';
import { corruptRecord } from '../../actors/corrupt.js';
import { LsvdStore } from '../../actors/lsvd-store.js';
import { Lsvd } from '../../storage/index.js';
import { patternBytes, tempDir } from '../storage/helpers.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const chunkBytes = 64 * KiB;
const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function store(): Promise<{ s: LsvdStore; dir: string }> {
  const dir = await tempDir('checksums-');
  const lsvd = await Lsvd.open({ dir: dir.path, sizeBytes: 4 * MiB });
  const s = new LsvdStore(lsvd);
  cleanups.push(async () => {
    await s.close().catch(() => undefined);
    await dir.remove();
  });
  return { s, dir: dir.path };
}

let version = 0;
function write(s: LsvdStore, offsetBytes: number, data: Buffer): void {
  s.append({ t: 'write', epoch: 1, v: s.version + 1, kind: 'write', offsetBytes, lengthBytes: data.length, data });
  version++;
}

async function list(s: LsvdStore): Promise<{ version: number; chunks: ChunkChecksum[] }> {
  const chunks: ChunkChecksum[] = [];
  let at = -1;
  await chunkChecksums(s, chunkBytes, (v) => (at = v), (c) => void chunks.push(c));
  return { version: at, chunks };
}

describe('chunkChecksums', () => {
  it('depends on the content only, not on how it was written', async () => {
    const data = patternBytes(1, 1, 200 * KiB);
    const a = (await store()).s;
    // Unaligned, across chunk edges, in small pieces; zeros written over a whole chunk.
    for (let at = 0; at < data.length; at += 12 * KiB) write(a, 10 * KiB + at, data.subarray(at, Math.min(data.length, at + 12 * KiB)));
    write(a, 1 * MiB, Buffer.alloc(chunkBytes));
    const b = (await store()).s;
    write(b, 10 * KiB, data);
    const la = await list(a);
    const lb = await list(b);
    expect(la.chunks).toEqual(lb.chunks);
    // 10 KiB … 210 KiB touches chunks 0–3; the zero chunk is left out.
    expect(la.chunks.map((c) => c.i)).toEqual([0, 1, 2, 3]);
    expect(la.version).toBe(a.version);
  });

  it('a byte flipped in a live record on disk changes exactly its chunk, under a running store', async () => {
    const { s, dir } = await store();
    write(s, 0, patternBytes(2, 1, 256 * KiB));
    write(s, 512 * KiB, patternBytes(3, 1, 64 * KiB)); // the canary: 512 KiB … 576 KiB
    write(s, 0, patternBytes(4, 1, 64 * KiB)); // later records: the canary is mid-log
    await s.flush();
    const before = await list(s);
    const hit = await corruptRecord(dir, { offsetBytes: 512 * KiB, lengthBytes: 64 * KiB });
    expect(hit).toMatchObject({ segment: 'L0000000001.seg', offsetBytes: 512 * KiB, version: 2 });
    const after = await list(s);
    const changed = after.chunks.filter((c, k) => c.sha256 !== before.chunks[k].sha256).map((c) => c.i);
    expect(changed).toEqual([8]);
    // A clean close checkpoints the map, so a reopen does not replay the record: the damage stays
    // silent (only a scrub finds it). Without the checkpoint (a crash) the replay refuses: e2e.
    await s.close();
    const reopened = new LsvdStore(await Lsvd.open({ dir }));
    cleanups.push(() => reopened.close());
    expect((await list(reopened)).chunks).toEqual(after.chunks);
  });
});

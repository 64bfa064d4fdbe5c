/**
 * Model-based test: random sequences of write / trim / zero / read / flush / checkpoint /
 * snapshot / read-at-snapshot / GC / close+reopen / recordsSince against a Buffer per
 * version. Tiny segments and batches so rollover, GC and checkpoints happen constantly.
 */
import { afterAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { Lsvd, type LsvdOptions } from '../../storage/index.js';
import { patternBytes, tempDir } from './helpers.js';

const SIZE = 32 * 1024;

type Op =
  | { t: 'write'; off: number; len: number; seed: number }
  | { t: 'trim' | 'zero'; off: number; len: number }
  | { t: 'read'; off: number; len: number }
  | { t: 'flush' | 'checkpoint' | 'reopen' }
  | { t: 'snap'; back: number }
  | { t: 'dropSnap'; pick: number }
  | { t: 'readSnap'; pick: number; off: number; len: number }
  | { t: 'gc'; threshold: number }
  | { t: 'since'; back: number };

const range = { off: fc.nat(SIZE - 1), len: fc.integer({ min: 1, max: 6000 }) };
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 10, arbitrary: fc.record({ t: fc.constant('write' as const), ...range, seed: fc.nat() }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constantFrom('trim' as const, 'zero' as const), ...range }) },
  { weight: 4, arbitrary: fc.record({ t: fc.constant('read' as const), ...range }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constantFrom('flush' as const, 'checkpoint' as const, 'reopen' as const) }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('snap' as const), back: fc.nat(40) }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('dropSnap' as const), pick: fc.nat() }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constant('readSnap' as const), pick: fc.nat(), ...range }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constant('gc' as const), threshold: fc.constantFrom(0.3, 0.6, 1.01) }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('since' as const), back: fc.nat(60) }) },
);

const dirs: Array<() => Promise<void>> = [];
afterAll(async () => {
  for (const d of dirs) await d();
});

describe('Lsvd against a model', () => {
  it('reads always equal the model, across GC, snapshots and reopen', async () => {
    let run = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.array(opArb, { minLength: 20, maxLength: 150, size: "max" }),
        fc.integer({ min: 3, max: 40 }),
        // Window in log bytes (a few segments, or more than the run writes) and background GC
        // thresholds small enough to run between the ops.
        fc.constantFrom(16 * 1024, 64 * 1024, 2 ** 30),
        fc.boolean(),
        async (ops, syncWindowVersions, syncWindowBytes, autoGc) => {
          run += 1;
          const dir = await tempDir(`lsvd-prop-${run}-`);
          dirs.push(dir.remove);
          const options: LsvdOptions = {
            dir: dir.path,
            sizeBytes: SIZE,
            segmentSizeBytes: 8192,
            batchBytes: 4096,
            checkpointEveryRecords: 17,
            syncWindowVersions,
            syncWindowBytes,
            autoGc,
            gcMinDeadBytes: 16 * 1024,
            gcCheckEveryBytes: 8192,
          };
          let store = await Lsvd.open(options);
          // content[v] = disk after version v
          const content: Buffer[] = [Buffer.alloc(SIZE)];
          const snaps = new Map<string, number>();
          let snapCounter = 0;
          try {
            for (const op of ops) {
              const v = store.version;
              if (op.t === 'write' || op.t === 'trim' || op.t === 'zero') {
                const len = Math.min(op.len, SIZE - op.off);
                const next = Buffer.from(content[v]);
                if (op.t === 'write') {
                  const data = patternBytes(op.seed, v + 1, len + 3).subarray(0, len);
                  data.copy(next, op.off);
                  expect(store.append({ version: v + 1, kind: 'write', offsetBytes: op.off, lengthBytes: len, data })).toBe(true);
                } else {
                  next.fill(0, op.off, op.off + len);
                  store.append({ version: v + 1, kind: op.t, offsetBytes: op.off, lengthBytes: len });
                }
                content.push(next);
                // An idempotent resend changes nothing.
                expect(store.append({ version: v + 1, kind: 'trim', offsetBytes: 0, lengthBytes: SIZE })).toBe(false);
              } else if (op.t === 'read') {
                const len = Math.min(op.len, SIZE - op.off);
                const got = await store.read(op.off, len);
                expect(got.equals(content[v].subarray(op.off, op.off + len))).toBe(true);
              } else if (op.t === 'flush') {
                expect(await store.flush()).toBe(v);
                expect(store.durableVersion).toBe(v);
              } else if (op.t === 'checkpoint') {
                await store.checkpoint();
              } else if (op.t === 'reopen') {
                await store.close();
                await store.close(); // idempotent
                store = await Lsvd.open(options);
                expect(store.version).toBe(v);
                expect(store.openReport.truncatedBytes).toBe(0);
                expect(store.openReport.warnings).toEqual([]);
              } else if (op.t === 'snap') {
                const at = Math.max(store.horizonVersion, v - op.back);
                const name = `s${snapCounter++}`;
                await store.createSnapshot(name, at);
                snaps.set(name, at);
              } else if (op.t === 'dropSnap' || op.t === 'readSnap') {
                const names = [...snaps.keys()];
                if (names.length === 0) continue;
                const name = names[op.pick % names.length];
                if (op.t === 'dropSnap') {
                  await store.deleteSnapshot(name);
                  snaps.delete(name);
                } else {
                  const len = Math.min(op.len, SIZE - op.off);
                  const got = await store.read(op.off, len, { snapshot: name });
                  expect(got.equals(content[snaps.get(name)!].subarray(op.off, op.off + len))).toBe(true);
                }
              } else if (op.t === 'gc') {
                const r = await store.gc({ liveShareThreshold: op.threshold });
                if (process.env.LSVD_DEBUG) console.log("gc", JSON.stringify(r));
              } else if (op.t === 'since') {
                const from = Math.max(store.logStartVersion, v - op.back);
                expect(store.hasRecordsSince(from)).toBe(true);
                const rebuilt = Buffer.from(content[from]);
                let expectV = from + 1;
                for await (const rec of store.recordsSince(from)) {
                  expect(rec.version).toBe(expectV++);
                  if (rec.kind === 'write') Buffer.from(rec.data!).copy(rebuilt, rec.offsetBytes);
                  else rebuilt.fill(0, rec.offsetBytes, rec.offsetBytes + rec.lengthBytes);
                }
                expect(expectV).toBe(v + 1);
                expect(rebuilt.equals(content[v])).toBe(true);
              }
            }
            // Final full comparison, then once more after reopen.
            expect((await store.read(0, SIZE)).equals(content[store.version])).toBe(true);
            for (const [name, at] of snaps) expect((await store.read(0, SIZE, { snapshot: name })).equals(content[at])).toBe(true);
            await store.close();
            store = await Lsvd.open(options);
            expect((await store.read(0, SIZE)).equals(content[store.version])).toBe(true);
            expect(store.listSnapshots().map((s) => s.name).sort()).toEqual([...snaps.keys()].sort());
          } finally {
            await store.close();
            await dir.remove();
          }
        },
      ),
      { numRuns: Number(process.env.LSVD_PROP_RUNS ?? 60) },
    );
  });
});

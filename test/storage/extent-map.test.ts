import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { ExtentMap } from '../../storage/extent-map.js';

// Per-byte model: version of the record covering each byte (0 = hole) and its data position.
const SPACE = 4096;

function modelOf(map: ExtentMap): Array<[number, number, number]> {
  const bytes: Array<[number, number, number]> = [];
  map.forEach((s, l, seg, pos, v) => {
    for (let i = 0; i < l; i += 1) bytes[s + i] = [v, seg, pos + i];
  });
  return bytes;
}

describe('ExtentMap', () => {
  it('matches a per-byte model under random set/remove (small leaves splitting and merging)', () => {
    const op = fc.oneof(
      fc.record({ t: fc.constant('set' as const), s: fc.nat(SPACE - 1), l: fc.integer({ min: 1, max: 300 }) }),
      fc.record({ t: fc.constant('remove' as const), s: fc.nat(SPACE - 1), l: fc.integer({ min: 1, max: 600 }) }),
    );
    fc.assert(
      fc.property(fc.array(op, { minLength: 1, maxLength: 1500 }), fc.constantFrom(4, 5, 8, 512), (ops, leafCapacity) => {
        const map = new ExtentMap(leafCapacity);
        const model: Array<[number, number, number] | undefined> = [];
        let v = 0;
        const removed: number[] = [];
        for (const o of ops) {
          v += 1;
          const len = Math.min(o.l, SPACE - o.s);
          let removedBytes = 0;
          const onRemoved = (_s: number, l: number): void => {
            removedBytes += l;
          };
          let expectRemoved = 0;
          for (let i = o.s; i < o.s + len; i += 1) if (model[i]) expectRemoved += 1;
          if (o.t === 'set') {
            map.set(o.s, len, v % 7, v * 10_000, v, onRemoved);
            for (let i = 0; i < len; i += 1) model[o.s + i] = [v, v % 7, v * 10_000 + i];
          } else {
            map.remove(o.s, len, onRemoved);
            for (let i = 0; i < len; i += 1) model[o.s + i] = undefined;
          }
          removed.push(removedBytes - expectRemoved);
        }
        expect(removed.every((d) => d === 0)).toBe(true);
        const got = modelOf(map);
        for (let i = 0; i < SPACE; i += 1) expect(got[i]).toEqual(model[i]);
        expect(map.liveBytes).toBe(model.filter(Boolean).length);
        // lookup agrees with forEach on a random window
        const pieces: number[] = [];
        map.lookup(100, 2000, (s, l) => pieces.push(s, l));
        for (let i = 0; i < pieces.length; i += 2) expect(pieces[i] >= 100 && pieces[i] + pieces[i + 1] <= 2100).toBe(true);
        const clone = map.clone();
        expect(modelOf(clone)).toEqual(got);
      }),
      { numRuns: 60 },
    );
  });

  it('keeps many random 4 KiB extents in order and splits leaves', () => {
    const map = new ExtentMap();
    const n = 20_000;
    for (let i = 0; i < n; i += 1) map.set(((i * 7919) % n) * 8192, 4096, 2, i * 4136, i + 1);
    expect(map.size).toBe(n);
    let prev = -1;
    map.forEach((s) => {
      expect(s).toBeGreaterThan(prev);
      prev = s;
    });
    map.remove(0, n * 8192);
    expect(map.size).toBe(0);
  });
});

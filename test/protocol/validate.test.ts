import { Packr } from 'msgpackr';
import { describe, expect, it } from 'vitest';
import { decodeBatch, encodeBatch } from '../../protocol/codec.js';
import { ProtocolError } from '../../protocol/errors.js';
import type { Frame } from '../../protocol/frames.js';
import { limits } from '../../protocol/limits.js';
import { validateBatch, validateFrame } from '../../protocol/validate.js';
import { batchOf, sampleFrames, writeFrame } from './fixtures.js';

/** Required fields per frame type, and one wrong value for each (besides deleting it). */
const wrongValues: Record<string, unknown[]> = {
  role: ['admin', 1],
  id: ['', 5, 'x'.repeat(limits.maxIdChars + 1)],
  clusterId: ['', null],
  epoch: [-1, 1.5, '3', Number.MAX_SAFE_INTEGER + 2, Number.NaN],
  v: [-1, 2 ** 60, Infinity],
  appliedVersion: [-3, '1'],
  durableVersion: [0.5],
  kind: ['erase'],
  offsetBytes: [-4096, 1e300],
  lengthBytes: [-1, limits.maxIoBytes + 1],
  r: ['7'],
  minVersion: [null],
  ok: [1, 'yes'],
  fromVersion: [-1],
  mode: ['snapshot'],
  imageVersion: [1.25],
  targetVersion: [{}],
  data: ['AAAA', [1, 2, 3]],
  state: [42, 'x'.repeat(limits.maxTextChars + 1)],
  view: [[1, 2], 'none', { a: -1 }, { a: '1' }],
  chain: [{}, [{ id: 'a' }], [5], Array.from({ length: limits.maxChainMembers + 1 }, (_, i) => ({ id: `m${i}`, url: 'u' }))],
  driverId: [5, null],
  volume: [null, { name: 'v' }, { name: 1, sizeBytes: 1 }],
  code: [5, ''],
  message: [null, 'x'.repeat(limits.maxTextChars + 1)],
};

const optional: Record<string, string[]> = {
  'read-reply': ['data', 'code', 'message'],
  error: ['epoch'],
};

function expectBad(frame: unknown, field: string): void {
  let error: unknown;
  try {
    validateBatch(batchOf([sampleFrames.flush, frame as Frame]));
  } catch (err) {
    error = err;
  }
  expect(error, `${JSON.stringify(frame)} should be refused`).toBeInstanceOf(ProtocolError);
  expect((error as ProtocolError).code).toBe('ERR_BAD_FRAME');
  expect((error as ProtocolError).message).toContain(`frames[1]`);
  expect((error as ProtocolError).message).toContain(field);
}

describe('validate', () => {
  it('accepts a valid sample of every frame type, returning the same object', () => {
    const batch = batchOf(Object.values(sampleFrames));
    expect(validateBatch(batch)).toBe(batch);
    expect(decodeBatch(encodeBatch(batch))).toEqual(batch);
  });

  for (const [t, sample] of Object.entries(sampleFrames)) {
    it(`refuses ${t} frames with any field missing or wrong, naming the field`, () => {
      let checked = 0;
      for (const field of Object.keys(sample)) {
        if (field === 't') continue;
        const isOptional = optional[t]?.includes(field) ?? false;
        if (!isOptional && !(t === 'write' && field === 'data')) {
          const { [field]: _dropped, ...missing } = sample as unknown as Record<string, unknown>;
          expectBad(missing, field);
        }
        for (const wrong of wrongValues[field] ?? []) {
          if (t === 'config' && field === 'driverId' && wrong === '') continue;
          expectBad({ ...sample, [field]: wrong }, field);
          checked++;
        }
      }
      expect(checked).toBeGreaterThan(0);
    });
  }

  it('checks write data against kind and lengthBytes', () => {
    expectBad({ ...sampleFrames.write, data: undefined }, 'data');
    expectBad({ ...sampleFrames.write, lengthBytes: 5 }, 'data');
    expectBad({ ...sampleFrames.write, kind: 'trim' }, 'data');
    expect(() => validateFrame({ t: 'write', epoch: 1, v: 1, kind: 'zero', offsetBytes: 0, lengthBytes: limits.maxIoBytes })).not.toThrow();
    // A trim of a whole disk (mkfs discards everything) is a small frame: only data is bounded.
    expect(() => validateFrame({ t: 'write', epoch: 1, v: 1, kind: 'trim', offsetBytes: 0, lengthBytes: 2 ** 40 })).not.toThrow();
    expect(() => validateFrame(writeFrame(3, 65536))).not.toThrow();
    expectBad({ ...sampleFrames['image-chunk'], data: Buffer.alloc(limits.imageChunkBytes + 1) }, 'data');
  });

  it('treats optional fields as absent-or-typed, never null', () => {
    const { data: _d, ...noData } = sampleFrames['read-reply'];
    expect(() => validateFrame(noData)).not.toThrow();
    expect(() => validateFrame({ ...sampleFrames.error, epoch: undefined })).not.toThrow();
    expectBad({ ...sampleFrames['read-reply'], data: null }, 'data');
    expectBad({ ...sampleFrames.error, epoch: null }, 'epoch');
  });

  it('refuses unknown and missing frame types', () => {
    expectBad({ t: 'launch-missiles' }, 'unknown frame type "launch-missiles"');
    expectBad({ epoch: 1 }, '.t');
    expectBad({ t: 12 }, '.t');
    expectBad(null, 'expected a map');
    expectBad([1, 2], 'expected a map');
    expectBad(new Map([['t', 'flush']]), 'a Map');
  });

  it('refuses batch envelopes that are not batches', () => {
    const packr = new Packr({ useRecords: false });
    const cases: [unknown, string][] = [
      [{ hello: 'world' }, 'batch.from'],
      [{ from: 'a', lc: 1 }, 'batch.frames'],
      [{ from: 'a', lc: -1, frames: [] }, 'batch.lc'],
      [{ from: '', lc: 1, frames: [] }, 'batch.from'],
      [{ from: 'a', lc: 1, frames: {} }, 'batch.frames'],
      [[1, 2, 3], 'not a batch'],
      ['hello', 'not a batch'],
      [42, 'not a batch'],
      [{ from: 'a', lc: 1, frames: new Array(limits.batchMaxFrames + 1).fill(sampleFrames.flush) }, 'batch.frames'],
    ];
    for (const [value, field] of cases) {
      expect(() => decodeBatch(packr.pack(value)), field).toThrow(field);
    }
  });

  it('refuses garbage bytes and truncated msgpack with ERR_BAD_FRAME', () => {
    const good = encodeBatch(batchOf([sampleFrames.write, sampleFrames.config]));
    const bads = [Buffer.from('GET / HTTP/1.1\r\n\r\n'), Buffer.from([0xc1]), good.subarray(0, good.length - 3), good.subarray(0, 5)];
    for (const raw of bads) {
      try {
        decodeBatch(raw);
        expect.unreachable();
      } catch (err) {
        expect(err).toBeInstanceOf(ProtocolError);
        expect((err as ProtocolError).code).toBe('ERR_BAD_FRAME');
      }
    }
  });

  it('is cheap: well under a microsecond per frame', () => {
    const frames: Frame[] = [];
    for (let i = 0; i < 1000; i++) frames.push(i % 2 ? writeFrame(i) : { t: 'ack', epoch: 1, id: 'rep-a', appliedVersion: i, durableVersion: i });
    const batch = batchOf(frames);
    for (let i = 0; i < 50; i++) validateBatch(batch);
    const start = process.hrtime.bigint();
    for (let i = 0; i < 200; i++) validateBatch(batch);
    const nsPerFrame = Number(process.hrtime.bigint() - start) / (200 * frames.length);
    // Generous bound (loaded CI); typically ~20–40 ns.
    expect(nsPerFrame).toBeLessThan(1000);
  });
});

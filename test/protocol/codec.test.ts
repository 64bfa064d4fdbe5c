import fc from 'fast-check';
import { Packr } from 'msgpackr';
import { describe, expect, it } from 'vitest';
import { decodeBatch, decodeBatchParts, decodeMessage, DETACH_MIN_BYTES, encodeBatch, encodeBatchParts } from '../../protocol/codec.js';
import { ProtocolError } from '../../protocol/errors.js';
import type { Batch, Frame, FrameType } from '../../protocol/frames.js';
import { batchOf, sampleFrames } from './fixtures.js';

const uint = fc.maxSafeNat();
const id = fc.string({ minLength: 1, maxLength: 24, unit: 'binary' }).filter((s) => s !== '__proto__');
const text = fc.string({ maxLength: 60, unit: 'binary' });
const role = fc.constantFrom('driver' as const, 'replica' as const, 'controller' as const);
const bytes = fc.uint8Array({ maxLength: 9000 }).map((a) => Buffer.from(a));

const frameArbs: { [T in FrameType]: fc.Arbitrary<Extract<Frame, { t: T }>> } = {
  hello: fc.record({ t: fc.constant('hello' as const), role, id, epoch: uint, clusterId: id }),
  welcome: fc.record({ t: fc.constant('welcome' as const), role, id, epoch: uint, appliedVersion: uint }),
  write: fc.oneof(
    fc.record({ epoch: uint, v: uint, offsetBytes: uint, data: bytes }).map(
      ({ data, ...r }) => ({ t: 'write' as const, ...r, kind: 'write' as const, lengthBytes: data.length, data }),
    ),
    fc.record({ t: fc.constant('write' as const), epoch: uint, v: uint, kind: fc.constantFrom('trim' as const, 'zero' as const), offsetBytes: uint, lengthBytes: fc.nat(32 << 20) }),
  ),
  flush: fc.record({ t: fc.constant('flush' as const), epoch: uint, v: uint }),
  ack: fc.record({ t: fc.constant('ack' as const), epoch: uint, id, appliedVersion: uint, durableVersion: uint }),
  read: fc.record({ t: fc.constant('read' as const), epoch: uint, r: uint, offsetBytes: uint, lengthBytes: fc.nat(32 << 20), minVersion: uint }),
  'read-reply': fc.record(
    { t: fc.constant('read-reply' as const), r: uint, ok: fc.boolean(), appliedVersion: uint, data: bytes, code: id, message: text },
    { requiredKeys: ['t', 'r', 'ok', 'appliedVersion'] },
  ),
  sync: fc.record({ t: fc.constant('sync' as const), epoch: uint, id, fromVersion: uint }),
  'sync-start': fc.record({
    t: fc.constant('sync-start' as const), epoch: uint, mode: fc.constantFrom('log' as const, 'image' as const),
    fromVersion: uint, imageVersion: uint, targetVersion: uint,
  }),
  'image-chunk': fc.record({ t: fc.constant('image-chunk' as const), epoch: uint, offsetBytes: uint, data: bytes }),
  'image-end': fc.record({ t: fc.constant('image-end' as const), epoch: uint, imageVersion: uint }),
  heartbeat: fc.record({
    t: fc.constant('heartbeat' as const), id, role, epoch: uint, state: text, appliedVersion: uint, durableVersion: uint,
    view: fc.dictionary(id, fc.nat(), { maxKeys: 6 }),
  }),
  config: fc.record({
    t: fc.constant('config' as const), epoch: uint, chain: fc.array(fc.record({ id, url: text }), { maxLength: 5 }),
    driverId: fc.oneof(id, fc.constant('')), volume: fc.record({ name: text, sizeBytes: uint }),
  }),
  error: fc.record(
    { t: fc.constant('error' as const), code: id, message: text, epoch: uint },
    { requiredKeys: ['t', 'code', 'message'] },
  ),
};

const anyFrame: fc.Arbitrary<Frame> = fc.oneof(...Object.values(frameArbs));
const anyBatch: fc.Arbitrary<Batch> = fc.record({ from: id, lc: uint, frames: fc.array(anyFrame, { maxLength: 12 }) });

describe('codec', () => {
  it('round-trips every frame type, one type per batch', () => {
    for (const [t, arb] of Object.entries(frameArbs)) {
      fc.assert(
        fc.property(fc.array(arb as fc.Arbitrary<Frame>, { minLength: 1, maxLength: 8 }), id, uint, (frames, from, lc) => {
          const batch = { from, lc, frames };
          expect(decodeBatch(encodeBatch(batch)), t).toEqual(batch);
        }),
        { numRuns: 60 },
      );
    }
  });

  it('round-trips mixed batches', () => {
    fc.assert(fc.property(anyBatch, (batch) => void expect(decodeBatch(encodeBatch(batch))).toEqual(batch)), { numRuns: 300 });
  });

  it('decodes each message on its own, in any order (no state carried between messages)', () => {
    fc.assert(
      fc.property(fc.array(anyBatch, { minLength: 2, maxLength: 8 }), (batches) => {
        const encoded = batches.map((b) => encodeBatch(b));
        // Encoded buffers must not be overwritten by later encodes, and decoding backwards must work.
        for (let i = encoded.length - 1; i >= 0; i--) expect(decodeBatch(encoded[i]!)).toEqual(batches[i]);
      }),
      { numRuns: 100 },
    );
  });

  it('carries binary as msgpack bin, a Uint8Array in and a Buffer view out (no base64)', () => {
    const data = new Uint8Array(4096).fill(0xab);
    const bytes = encodeBatch(batchOf([{ t: 'write', epoch: 1, v: 1, kind: 'write', offsetBytes: 0, lengthBytes: 4096, data }]));
    expect(bytes.length).toBeLessThan(4096 + 100);
    expect(bytes.includes(Buffer.from([0xc5, 0x10, 0x00]))).toBe(true); // bin16, length 4096
    const frame = decodeBatch(bytes).frames[0];
    expect(frame?.t === 'write' && Buffer.isBuffer(frame.data) && frame.data.equals(Buffer.from(data))).toBe(true);
  });

  it('decodes a plain msgpack map batch from another encoder', () => {
    const plain = new Packr({ useRecords: false }).pack(batchOf([sampleFrames.ack, sampleFrames.write]));
    expect(decodeBatch(plain)).toEqual(batchOf([sampleFrames.ack, sampleFrames.write]));
  });

  it('turns arbitrary bytes into ProtocolError(ERR_BAD_FRAME) or a value, never another error', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (raw) => {
        try {
          decodeMessage(raw);
        } catch (err) {
          expect(err).toBeInstanceOf(ProtocolError);
          expect((err as ProtocolError).code).toBe('ERR_BAD_FRAME');
        }
      }),
      { numRuns: 3000 },
    );
  });

  it('refuses empty messages, trailing bytes, and truncated messages', () => {
    const good = encodeBatch(batchOf([sampleFrames.heartbeat, sampleFrames.write]));
    expect(() => decodeMessage(Buffer.alloc(0))).toThrow(/empty message/);
    expect(() => decodeMessage(Buffer.concat([good, Buffer.from([0xc0])]))).toThrow(/1 trailing bytes/);
    for (let cut = 1; cut < good.length; cut += 7) {
      expect(() => decodeMessage(good.subarray(0, cut))).toThrow(ProtocolError);
    }
  });

  it('survives hostile lengths and nesting', () => {
    const hostile = [
      Buffer.from([0xdd, 0xff, 0xff, 0xff, 0xff]), // array32 of 4G elements, no data
      Buffer.from([0xdf, 0xff, 0xff, 0xff, 0xff]), // map32 of 4G entries
      Buffer.from([0xc6, 0xff, 0xff, 0xff, 0xff, 1]), // bin32 of 4 GiB
      Buffer.from([0xdb, 0x7f, 0xff, 0xff, 0xff, 0x61]), // str32
      Buffer.alloc(200_000, 0x91), // 200k nested one-element arrays
    ];
    for (const raw of hostile) expect(() => decodeBatch(raw)).toThrow(ProtocolError);
  });
});

describe('codec: detached payloads (envelopes)', () => {
  const big = (n: number, fill: number) => Buffer.alloc(n, fill);
  const write = (v: number, data: Buffer): Frame => ({ t: 'write', epoch: 1, v, kind: 'write', offsetBytes: v * 4096, lengthBytes: data.length, data });

  /** toEqual, but payloads compared with Buffer.equals (deep-equality walks 100 KiB byte by byte). */
  function expectSameBatch(actual: Batch, expected: Batch): void {
    const strip = (b: Batch) => ({ ...b, frames: b.frames.map((f) => ({ ...f, data: undefined })) });
    expect(strip(actual)).toEqual(strip(expected));
    expected.frames.forEach((f, i) => {
      const want = (f as { data?: Uint8Array }).data;
      const got = (actual.frames[i] as { data?: Uint8Array }).data;
      if (want === undefined) expect(got).toBeUndefined();
      else expect(got !== undefined && Buffer.compare(Buffer.from(got), Buffer.from(want)) === 0, `frame ${i} data`).toBe(true);
    });
  }

  /** Cut a message's bytes into fragments at the given points (another sender's choice). */
  function fragments(bytes: Buffer, cuts: number[]): Buffer[] {
    const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
    const out: Buffer[] = [];
    let at = 0;
    for (const p of points) {
      out.push(bytes.subarray(at, p));
      at = p;
    }
    out.push(bytes.subarray(at));
    return out;
  }

  it('sends large data as parts that are the frames’ own buffers, and views them on receipt', () => {
    const a = big(DETACH_MIN_BYTES, 1);
    const b = big(DETACH_MIN_BYTES * 3, 2);
    const batch = batchOf([write(1, a), sampleFrames.ack, write(2, Buffer.alloc(100, 3)), write(3, b)]);
    const parts = encodeBatchParts(batch);
    expect(parts.length).toBe(3);
    expect(parts[0][0]).toBe(0xc1);
    expect(parts[1]).toBe(a);
    expect(parts[2]).toBe(b);
    const decoded = decodeBatchParts(parts);
    expectSameBatch(decoded, batch);
    const third = decoded.frames[3] as { data?: Buffer };
    expect(third.data?.buffer).toBe(b.buffer); // a view, not a copy
    // The frames given to encode are not changed.
    expect((batch.frames[0] as { data?: Buffer }).data).toBe(a);
  });

  it('decodes the same batch however the message is fragmented', () => {
    const batch = batchOf([write(1, big(70_000, 7)), sampleFrames.heartbeat, write(2, big(100_000, 9))]);
    const whole = encodeBatch(batch);
    fc.assert(
      fc.property(fc.array(fc.nat(), { maxLength: 6 }), (cuts) => {
        expectSameBatch(decodeBatchParts(fragments(whole, cuts)), batch);
      }),
      { numRuns: 150 },
    );
  });

  it('round-trips random batches with large payloads', () => {
    const payload = fc.integer({ min: DETACH_MIN_BYTES - 2, max: DETACH_MIN_BYTES * 2 }).map((n) => Buffer.alloc(n, n & 0xff));
    const frame = fc.oneof(
      fc.record({ v: fc.nat(), data: payload }).map(({ v, data }) => write(v, data)),
      fc.record({ r: fc.nat(), data: payload }).map(({ r, data }) => ({ t: 'read-reply' as const, r, ok: true, appliedVersion: 3, data })),
      fc.record({ offsetBytes: fc.nat(), data: payload }).map(({ offsetBytes, data }) => ({ t: 'image-chunk' as const, epoch: 2, offsetBytes, data })),
      fc.constant(sampleFrames.flush),
    );
    fc.assert(
      fc.property(fc.array(frame, { minLength: 1, maxLength: 5 }), (frames) => {
        const batch = batchOf(frames);
        expectSameBatch(decodeBatchParts(encodeBatchParts(batch)), batch);
      }),
      { numRuns: 60 },
    );
  });

  it('refuses envelopes that lie, with ERR_BAD_FRAME', () => {
    const good = encodeBatch(batchOf([write(1, big(DETACH_MIN_BYTES, 1)), sampleFrames.ack]));
    const lie = (edit: (b: Buffer) => Buffer) => () => decodeBatch(edit(Buffer.from(good)));
    const cases: Array<[string, () => unknown, RegExp]> = [
      ['payload names a frame past the end', lie((b) => (b.writeUInt32LE(5, 9), b)), /names frame 5/],
      ['payload names a frame without room for data', lie((b) => (b.writeUInt32LE(1, 9), b)), /bad envelope|data/],
      ['payload longer than what follows', lie((b) => (b.writeUInt32LE(DETACH_MIN_BYTES + 1, 13), b)), /payloads of/],
      ['payload shorter than what follows', lie((b) => (b.writeUInt32LE(DETACH_MIN_BYTES - 1, 13), b)), /payloads of/],
      ['no payloads', lie((b) => (b.writeUInt32LE(0, 5), b)), /0 detached/],
      ['header past the end', lie((b) => (b.writeUInt32LE(0x7fffffff, 1), b)), /header of/],
      ['truncated', lie((b) => b.subarray(0, 20)), /bad envelope|short|undecodable/],
    ];
    for (const [what, fn, message] of cases) {
      expect(fn, what).toThrow(ProtocolError);
      expect(fn, what).toThrow(message);
    }
    // A frame that carries data inline cannot also take a detached payload.
    const inline = encodeBatch(batchOf([write(1, Buffer.alloc(10, 1))]));
    const envelope = Buffer.alloc(9 + 8);
    envelope[0] = 0xc1;
    envelope.writeUInt32LE(inline.length, 1);
    envelope.writeUInt32LE(1, 5);
    envelope.writeUInt32LE(0, 9);
    envelope.writeUInt32LE(4, 13);
    expect(() => decodeBatch(Buffer.concat([envelope, inline, Buffer.alloc(4)]))).toThrow(/cannot take a payload/);
  });

  it('turns arbitrary bytes after the envelope mark into ProtocolError, never another error', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (raw) => {
        try {
          decodeMessage(Buffer.concat([Buffer.from([0xc1]), raw]));
        } catch (err) {
          expect(err).toBeInstanceOf(ProtocolError);
        }
      }),
      { numRuns: 2000 },
    );
  });
});

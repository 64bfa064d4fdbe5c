/**
 * Unit tests of the pieces under the server: the chunk cursor, errno mapping, the rate-limited
 * log, option parsing, and the file backend on a real sparse file.
 */
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { ChunkReader } from '../../nbd/chunk-reader.js';
import * as C from '../../nbd/constants.js';
import { errnoForError } from '../../nbd/errors.js';
import { FileBackend } from '../../nbd/file-backend.js';
import { parseInfoRequest } from '../../nbd/handshake.js';
import { ReadBufferPool } from '../../nbd/read-pool.js';
import { RateLimitedLog } from '../../nbd/log.js';
import { recordingLogger } from '../helpers/nbd-server.js';
import { infoRequest } from './raw-client.js';

describe('ChunkReader', () => {
  it('returns exactly the stream, however it is chunked and taken', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 0, maxLength: 2000 }),
        fc.array(fc.integer({ min: 1, max: 300 }), { minLength: 1, maxLength: 50 }),
        // Zero-length takes among ones that make progress (only zeros would never drain the reader:
        // a rare draw did, and the loop below filled a 4 GB heap in CI).
        fc.array(fc.integer({ min: 0, max: 300 }), { minLength: 1, maxLength: 50 }).filter((sizes) => sizes.some((n) => n > 0)),
        (bytes, chunkSizes, takeSizes) => {
          const stream = Buffer.from(bytes);
          const reader = new ChunkReader();
          let pushed = 0;
          for (let i = 0; pushed < stream.length; i++) {
            const n = chunkSizes[i % chunkSizes.length];
            reader.push(stream.subarray(pushed, pushed + n));
            pushed += n;
          }
          const out: Buffer[] = [];
          let i = 0;
          while (reader.length > 0) {
            const n = Math.min(takeSizes[i++ % takeSizes.length], reader.length);
            if (i % 3 === 0) {
              reader.skip(n);
              out.push(stream.subarray(stream.length - reader.length - n, stream.length - reader.length));
            } else out.push(reader.take(n));
          }
          expect(Buffer.concat(out).equals(stream)).toBe(true);
        },
      ),
    );
  });

  it('returns a view, not a copy, when the bytes lie in one chunk', () => {
    const r = new ChunkReader();
    const chunk = Buffer.from('abcdefgh');
    r.push(chunk);
    const view = r.take(4);
    chunk[0] = 0x7a;
    expect(view.toString()).toBe('zbcd');
    expect(() => r.take(5)).toThrow(RangeError);
  });

  it('copies bytes that straddle chunks into the scratch buffer when it is long enough', () => {
    const r = new ChunkReader();
    r.push(Buffer.from('abc'));
    r.push(Buffer.from('defgh'));
    const scratch = Buffer.alloc(8);
    const out = r.take(5, scratch);
    expect(out.toString()).toBe('abcde');
    expect(out.buffer).toBe(scratch.buffer);
    const tooSmall = Buffer.alloc(2);
    r.push(Buffer.from('ij'));
    const own = r.take(5, tooSmall);
    expect(own.toString()).toBe('fghij');
    expect(own.buffer).not.toBe(tooSmall.buffer);
  });
});

describe('ReadBufferPool', () => {
  it('hands out power-of-two classes, reuses what comes back, keeps at most its free bound', () => {
    const pool = new ReadBufferPool(12 * 1024, 8192);
    const a = pool.take(4096)!;
    const b = pool.take(5000)!;
    expect(a.length).toBe(4096);
    expect(b.length).toBe(5000);
    expect(b.buffer.byteLength).toBe(8192);
    expect(pool.take(8193)).toBeUndefined();
    expect(pool.take(0)).toBeUndefined();
    pool.give(a);
    pool.give(b);
    expect(pool.freeBytesHeld).toBe(12 * 1024);
    expect(pool.take(3000)!.buffer).toBe(a.buffer);
    expect(pool.take(8000)!.buffer).toBe(b.buffer);
    const c = pool.take(8192)!;
    const d = pool.take(8192)!;
    pool.give(c);
    pool.give(d); // over the bound: dropped
    expect(pool.freeBytesHeld).toBe(8192);
    expect(() => pool.give(Buffer.alloc(100))).toThrow(RangeError);
  });
});

describe('errnoForError', () => {
  it.each([
    [{ code: 'ENOSPC' }, C.NBD_ENOSPC],
    [{ code: 'ERR_NO_SPACE' }, C.NBD_ENOSPC],
    [{ code: 'EDQUOT' }, C.NBD_ENOSPC],
    [{ code: 'ERR_READ_ONLY' }, C.NBD_EPERM],
    [{ code: 'EROFS' }, C.NBD_EPERM],
    [{ code: 'ERR_OUT_OF_RANGE' }, C.NBD_EINVAL],
    [{ code: 'ERR_INVALID' }, C.NBD_EINVAL],
    [{ code: 'ERR_QUORUM_LOST' }, C.NBD_EIO],
    [{ code: 'ERR_SHUTDOWN' }, C.NBD_ESHUTDOWN],
    [new Error('plain'), C.NBD_EIO],
    ['a string', C.NBD_EIO],
    [null, C.NBD_EIO],
    [{ code: 42 }, C.NBD_EIO],
  ])('%o → %i', (err, errno) => {
    expect(errnoForError(err)).toBe(errno);
  });
});

describe('RateLimitedLog', () => {
  it('passes a burst per window, then one line with the suppressed count', () => {
    const { logger, logs } = recordingLogger(false);
    let now = 0;
    const log = new RateLimitedLog(logger, { conn: 1 }, 'warn', () => now);
    for (let i = 0; i < 100; i++) log.log({ i }, 'bad');
    expect(logs.length).toBe(C.LOG_BURST_PER_WINDOW);
    now += C.LOG_WINDOW_MS;
    log.log({}, 'bad');
    expect(logs.at(-1)!.obj).toMatchObject({ conn: 1, suppressedLines: 100 - C.LOG_BURST_PER_WINDOW });
  });
});

describe('parseInfoRequest', () => {
  it('parses names and info lists, rejects inconsistent lengths', () => {
    expect(parseInfoRequest(infoRequest('vol', [1, 3]))).toEqual({ name: 'vol', infos: [1, 3] });
    expect(parseInfoRequest(infoRequest(''))).toEqual({ name: '', infos: [] });
    expect(typeof parseInfoRequest(Buffer.alloc(3))).toBe('string');
    const bad = infoRequest('vol', [1]);
    expect(typeof parseInfoRequest(bad.subarray(0, bad.length - 1))).toBe('string');
    const long = Buffer.alloc(10);
    long.writeUInt32BE(1000, 0);
    expect(typeof parseInfoRequest(long)).toBe('string');
  });
});

describe('FileBackend', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'freebs-fb-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('creates a sparse file, reads zeroes, writes, zeroes, trims the tail into a hole', async () => {
    const file = path.join(dir, 'a.img');
    const b = await FileBackend.open(file, { sizeBytes: 64 << 20 });
    expect(b.sizeBytes).toBe(64 << 20);
    expect(statSync(file).blocks).toBe(0);
    expect((await b.read(1000, 4096)).equals(Buffer.alloc(4096))).toBe(true);
    const data = Buffer.alloc(8192, 0x5a);
    await b.write(4096, data, { fua: true });
    expect((await b.read(4096, 8192)).equals(data)).toBe(true);
    await b.writeZeroes(4096, 4096, { fua: false, noHole: true });
    const back = await b.read(4096, 8192);
    expect(back.subarray(0, 4096).equals(Buffer.alloc(4096))).toBe(true);
    expect(back.subarray(4096).equals(data.subarray(4096))).toBe(true);
    await b.write((64 << 20) - 8 * 1024 * 1024, Buffer.alloc(4 << 20, 1), { fua: false });
    const allocated = statSync(file).blocks;
    await b.trim((64 << 20) - 8 * 1024 * 1024, 8 << 20, { fua: true });
    expect(statSync(file).blocks).toBeLessThan(allocated);
    expect(statSync(file).size).toBe(64 << 20);
    expect((await b.read((64 << 20) - 4096, 4096)).equals(Buffer.alloc(4096))).toBe(true);
    await b.flush();
    await b.close();
    await b.close();
    const again = await FileBackend.open(file);
    expect(again.sizeBytes).toBe(64 << 20);
    expect((await again.read(8192, 4096)).equals(data.subarray(0, 4096))).toBe(true);
    await again.close();
  });

  it('read-only: refuses writes with ERR_READ_ONLY', async () => {
    const file = path.join(dir, 'b.img');
    await (await FileBackend.open(file, { sizeBytes: 1 << 20 })).close();
    const ro = await FileBackend.open(file, { readOnly: true });
    expect(ro.readOnly).toBe(true);
    await expect(ro.write(0, Buffer.alloc(1), { fua: false })).rejects.toMatchObject({ code: 'ERR_READ_ONLY' });
    await ro.close();
  });
});

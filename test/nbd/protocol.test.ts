/**
 * The server against hand-made bytes over real sockets: every kind of bad input a client can
 * send, and after each, proof that another client is still served. Also ordering: replies out
 * of order, matched by cookie; DISC finishing in-flight work; backpressure with many requests.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as C from '../../nbd/constants.js';
import { startNbdServer, type TestNbdServer } from '../helpers/nbd-server.js';
import { waitUntil } from '../helpers/processes.js';
import type { DisconnectInfo } from '../../nbd/connection.js';
import { codedError, ControlledBackend } from './backends.js';
import { infoRequest, RawNbdClient, u32 } from './raw-client.js';

const MiB = 1024 * 1024;
let srv: TestNbdServer;
let ctl: ControlledBackend;
let aligned: ControlledBackend;
const disconnects: DisconnectInfo[] = [];

beforeAll(async () => {
  srv = await startNbdServer({
    sizeBytes: 16 * MiB,
    handshakeTimeoutMs: 1000,
    exports: [
      { name: '', description: 'the default disk' },
      { name: 'ro', readOnly: true, sizeBytes: MiB },
      { name: 'ctl', sizeBytes: 4 * MiB, wrap: (b) => (ctl = new ControlledBackend(b)) },
      { name: 'aligned', sizeBytes: MiB, wrap: (b) => (aligned = new ControlledBackend(b, { minimumBlockSizeBytes: 512 })) },
    ],
  });
  srv.server.on('disconnect', (info) => disconnects.push(info));
});

afterAll(async () => {
  await srv?.close();
});

/** Another client can still negotiate, write and read back: the server is unharmed. */
async function expectServerHealthy(): Promise<void> {
  const { client } = await RawNbdClient.open(srv.port, { structured: true });
  const data = randomBytes(4096);
  const offset = 8 * MiB + Math.floor(Math.random() * 1000) * 4096;
  client.request(C.NBD_CMD_WRITE, 1n, offset, data.length, { data });
  expect((await client.reply()).error).toBe(0);
  client.request(C.NBD_CMD_READ, 2n, offset, data.length);
  const r = await client.reply();
  expect(r.error).toBe(0);
  expect(r.data!.equals(data)).toBe(true);
  await client.disconnect();
}

/** The server reports the session it just ended with this stable error code. */
async function expectDisconnectCode(code: string): Promise<void> {
  await waitUntil(() => disconnects.at(-1)?.error?.code === code, `a disconnect with ${code} (last: ${disconnects.at(-1)?.reason})`, 3000);
}

async function handshakeClient(flags = C.NBD_FLAG_C_FIXED_NEWSTYLE | C.NBD_FLAG_C_NO_ZEROES): Promise<RawNbdClient> {
  const c = await RawNbdClient.connect(srv.port);
  await c.greeting();
  c.write(u32(flags));
  return c;
}

describe('handshake', () => {
  it('greets with NBDMAGIC, IHAVEOPT, FIXED_NEWSTYLE | NO_ZEROES', async () => {
    const c = await RawNbdClient.connect(srv.port);
    const g = await c.read(18);
    expect(g.readBigUInt64BE(0)).toBe(C.NBD_INIT_MAGIC);
    expect(g.readBigUInt64BE(8)).toBe(C.NBD_OPTS_MAGIC);
    expect(g.readUInt16BE(16)).toBe(C.NBD_FLAG_FIXED_NEWSTYLE | C.NBD_FLAG_NO_ZEROES);
    c.destroy();
  });

  it('drops a client that sends garbage instead of client flags', async () => {
    const c = await RawNbdClient.connect(srv.port);
    await c.greeting();
    c.write(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
    expect(await c.closedWithin()).toBe(true);
    await expectServerHealthy();
  });

  it('drops a client with unknown client flags', async () => {
    const c = await handshakeClient(0x80);
    expect(await c.closedWithin()).toBe(true);
    await expectServerHealthy();
  });

  it('drops a client whose option has a bad magic', async () => {
    const c = await handshakeClient();
    const h = Buffer.alloc(16);
    h.write('NOTMAGIC', 0);
    h.writeUInt32BE(C.NBD_OPT_GO, 8);
    c.write(h);
    expect(await c.closedWithin()).toBe(true);
    expect(srv.logs.some((l) => l.level === 'warn' && String(l.obj.reason).includes('bad option magic'))).toBe(true);
    await expectDisconnectCode('ERR_NBD_BAD_MAGIC');
    await expectServerHealthy();
  });

  it('drops a client that sends random bytes after the flags', async () => {
    const c = await handshakeClient();
    c.write(randomBytes(4096));
    expect(await c.closedWithin()).toBe(true);
    await expectServerHealthy();
  });

  it('answers an unknown option with ERR_UNSUP and keeps negotiating', async () => {
    const c = await handshakeClient();
    c.sendOption(0x4242, Buffer.from('whatever'));
    const r = await c.optionReply();
    expect(r.option).toBe(0x4242);
    expect(r.type).toBe(C.NBD_REP_ERR_UNSUP);
    c.sendOption(C.NBD_OPT_STARTTLS);
    expect((await c.optionReply()).type).toBe(C.NBD_REP_ERR_UNSUP);
    const { sizeBytes } = await c.go('');
    expect(sizeBytes).toBe(16 * MiB);
    await c.disconnect();
  });

  it('lists exports with descriptions; LIST with data is invalid', async () => {
    const c = await handshakeClient();
    c.sendOption(C.NBD_OPT_LIST);
    const names: string[] = [];
    for (;;) {
      const r = await c.optionReply();
      if (r.type === C.NBD_REP_ACK) break;
      expect(r.type).toBe(C.NBD_REP_SERVER);
      const len = r.data.readUInt32BE(0);
      names.push(r.data.toString('utf8', 4, 4 + len));
      if (len === 0) expect(r.data.toString('utf8', 4)).toBe('the default disk');
    }
    expect(names.sort()).toEqual(['', 'aligned', 'ctl', 'ro']);
    c.sendOption(C.NBD_OPT_LIST, Buffer.from('x'));
    expect((await c.optionReply()).type).toBe(C.NBD_REP_ERR_INVALID);
    c.sendOption(C.NBD_OPT_ABORT);
    expect((await c.optionReply()).type).toBe(C.NBD_REP_ACK);
    expect(await c.closedWithin()).toBe(true);
  });

  it('answers INFO for an unknown export with ERR_UNKNOWN, then serves GO', async () => {
    const c = await handshakeClient();
    c.sendOption(C.NBD_OPT_INFO, infoRequest('no-such-volume'));
    const r = await c.optionReply();
    expect(r.type).toBe(C.NBD_REP_ERR_UNKNOWN);
    expect(r.data.toString()).toContain('no-such-volume');
    await expect(c.go('nope')).rejects.toMatchObject({ replyType: C.NBD_REP_ERR_UNKNOWN });
    await c.go('ro');
    await c.disconnect();
    await expectServerHealthy();
  });

  it('INFO returns export, block size, name and description', async () => {
    const c = await handshakeClient();
    c.sendOption(C.NBD_OPT_INFO, infoRequest('', [C.NBD_INFO_NAME, C.NBD_INFO_DESCRIPTION, C.NBD_INFO_BLOCK_SIZE]));
    const infos = new Map<number, Buffer>();
    for (;;) {
      const r = await c.optionReply();
      if (r.type === C.NBD_REP_ACK) break;
      expect(r.type).toBe(C.NBD_REP_INFO);
      infos.set(r.data.readUInt16BE(0), r.data.subarray(2));
    }
    const exp = infos.get(C.NBD_INFO_EXPORT)!;
    expect(Number(exp.readBigUInt64BE(0))).toBe(16 * MiB);
    const flags = exp.readUInt16BE(8);
    for (const f of [C.NBD_FLAG_HAS_FLAGS, C.NBD_FLAG_SEND_FLUSH, C.NBD_FLAG_SEND_FUA, C.NBD_FLAG_SEND_TRIM, C.NBD_FLAG_SEND_WRITE_ZEROES, C.NBD_FLAG_SEND_CACHE, C.NBD_FLAG_CAN_MULTI_CONN]) {
      expect(flags & f).toBe(f);
    }
    expect(flags & C.NBD_FLAG_READ_ONLY).toBe(0);
    expect(flags & C.NBD_FLAG_SEND_DF).toBe(0); // no structured replies negotiated
    const bs = infos.get(C.NBD_INFO_BLOCK_SIZE)!;
    expect([bs.readUInt32BE(0), bs.readUInt32BE(4), bs.readUInt32BE(8)]).toEqual([1, 4096, 32 * MiB]);
    expect(infos.get(C.NBD_INFO_NAME)!.toString()).toBe('');
    expect(infos.get(C.NBD_INFO_DESCRIPTION)!.toString()).toBe('the default disk');
    // INFO does not end haggling.
    c.sendOption(C.NBD_OPT_GO, Buffer.from([0, 0, 0, 0, 0, 1])); // count says 1, no info follows
    expect((await c.optionReply()).type).toBe(C.NBD_REP_ERR_INVALID);
    await c.go('');
    await c.disconnect();
  });

  it('EXPORT_NAME: size, flags and 124 zero bytes unless NO_ZEROES', async () => {
    for (const noZeroes of [false, true]) {
      const c = await handshakeClient(C.NBD_FLAG_C_FIXED_NEWSTYLE | (noZeroes ? C.NBD_FLAG_C_NO_ZEROES : 0));
      c.sendOption(C.NBD_OPT_EXPORT_NAME, Buffer.from('ro'));
      const r = await c.read(10);
      expect(Number(r.readBigUInt64BE(0))).toBe(MiB);
      expect(r.readUInt16BE(8) & C.NBD_FLAG_READ_ONLY).toBe(C.NBD_FLAG_READ_ONLY);
      if (!noZeroes) expect((await c.read(124)).equals(Buffer.alloc(124))).toBe(true);
      // Right after the reply, transmission: a read works.
      c.request(C.NBD_CMD_READ, 7n, 0, 512);
      const reply = await c.reply();
      expect(reply.cookie).toBe(7n);
      expect(reply.data!.equals(Buffer.alloc(512))).toBe(true);
      await c.disconnect();
    }
  });

  it('EXPORT_NAME of an unknown export hangs up (it cannot answer with an error)', async () => {
    const c = await handshakeClient();
    c.sendOption(C.NBD_OPT_EXPORT_NAME, Buffer.from('missing'));
    expect(await c.closedWithin()).toBe(true);
    await expectDisconnectCode('ERR_NBD_UNKNOWN_EXPORT');
    await expectServerHealthy();
  });

  it('a non-fixed-newstyle client gets hung up on for any option but EXPORT_NAME', async () => {
    const c = await handshakeClient(0);
    c.sendOption(C.NBD_OPT_GO, infoRequest(''));
    expect(await c.closedWithin()).toBe(true);
    const ok = await handshakeClient(0);
    ok.sendOption(C.NBD_OPT_EXPORT_NAME, Buffer.alloc(0));
    expect(Number((await ok.read(134)).readBigUInt64BE(0))).toBe(16 * MiB);
    await ok.disconnect();
  });

  it('drops a client announcing option data over the limit', async () => {
    const c = await handshakeClient();
    const h = Buffer.alloc(16);
    h.writeBigUInt64BE(C.NBD_OPTS_MAGIC, 0);
    h.writeUInt32BE(C.NBD_OPT_GO, 8);
    h.writeUInt32BE(C.MAX_OPTION_DATA_BYTES + 1, 12);
    c.write(h);
    expect(await c.closedWithin()).toBe(true);
    await expectDisconnectCode('ERR_NBD_TOO_LARGE');
    await expectServerHealthy();
  });

  it('drops a client that stalls in the handshake', async () => {
    const c = await RawNbdClient.connect(srv.port);
    await c.greeting();
    expect(await c.closedWithin(3000)).toBe(true);
    await expectDisconnectCode('ERR_NBD_TIMEOUT');
  });
});

describe.each([false, true])('transmission (structured replies: %s)', (structured) => {
  it('writes, reads back, flushes, trims, zeroes, caches', async () => {
    const { client: c, flags } = await RawNbdClient.open(srv.port, { structured });
    expect(flags & C.NBD_FLAG_SEND_DF).toBe(structured ? C.NBD_FLAG_SEND_DF : 0);
    const data = randomBytes(64 * 1024);
    c.request(C.NBD_CMD_WRITE, 1n, 4096, data.length, { data, flags: C.NBD_CMD_FLAG_FUA });
    expect(await c.reply()).toMatchObject({ cookie: 1n, error: 0 });
    c.request(C.NBD_CMD_READ, 2n, 4096, data.length, { flags: structured ? C.NBD_CMD_FLAG_DF : 0 });
    const r = await c.reply();
    expect(r).toMatchObject({ cookie: 2n, error: 0, structured });
    expect(r.data!.equals(data)).toBe(true);
    c.request(C.NBD_CMD_FLUSH, 3n, 0, 0);
    expect(await c.reply()).toMatchObject({ cookie: 3n, error: 0 });
    c.request(C.NBD_CMD_WRITE_ZEROES, 4n, 8192, 4096, { flags: C.NBD_CMD_FLAG_NO_HOLE });
    expect(await c.reply()).toMatchObject({ cookie: 4n, error: 0 });
    c.request(C.NBD_CMD_READ, 5n, 4096, 8192);
    const z = await c.reply();
    expect(z.data!.subarray(0, 4096).equals(data.subarray(0, 4096))).toBe(true);
    expect(z.data!.subarray(4096).equals(Buffer.alloc(4096))).toBe(true);
    c.request(C.NBD_CMD_TRIM, 6n, 0, 4096);
    expect(await c.reply()).toMatchObject({ cookie: 6n, error: 0 });
    c.request(C.NBD_CMD_CACHE, 7n, 0, MiB);
    expect(await c.reply()).toMatchObject({ cookie: 7n, error: 0 });
    c.request(C.NBD_CMD_READ, 8n, 0, 0);
    expect(await c.reply()).toMatchObject({ cookie: 8n, error: 0 });
    await c.disconnect();
  });

  it('refuses out-of-range requests with the spec errno and keeps the connection', async () => {
    const { client: c, sizeBytes } = await RawNbdClient.open(srv.port, { structured });
    c.request(C.NBD_CMD_READ, 1n, sizeBytes - 512, 1024);
    const r = await c.reply();
    expect(r.error).toBe(C.NBD_EINVAL);
    expect(r.data).toBeUndefined();
    if (structured) expect(r.message).toContain('read');
    c.request(C.NBD_CMD_WRITE, 2n, sizeBytes, 4096, { data: Buffer.alloc(4096, 1) });
    expect((await c.reply()).error).toBe(C.NBD_ENOSPC);
    c.request(C.NBD_CMD_WRITE_ZEROES, 3n, sizeBytes - 4096, 8192);
    expect((await c.reply()).error).toBe(C.NBD_ENOSPC);
    c.request(C.NBD_CMD_TRIM, 4n, sizeBytes, 1);
    expect((await c.reply()).error).toBe(C.NBD_EINVAL);
    c.request(C.NBD_CMD_READ, 5n, 2n ** 63n, 512);
    expect((await c.reply()).error).toBe(C.NBD_EINVAL);
    c.request(C.NBD_CMD_CACHE, 6n, sizeBytes, 1);
    expect((await c.reply()).error).toBe(C.NBD_EINVAL);
    // The write's payload was consumed: the stream is still in sync.
    c.request(C.NBD_CMD_READ, 7n, 0, 512);
    expect(await c.reply()).toMatchObject({ cookie: 7n, error: 0 });
    await c.disconnect();
  });

  it('refuses reads over the maximum length with EINVAL and goes on', async () => {
    const { client: c } = await RawNbdClient.open(srv.port, { structured });
    c.request(C.NBD_CMD_READ, 1n, 0, 32 * MiB + 1);
    expect((await c.reply()).error).toBe(C.NBD_EINVAL);
    c.request(C.NBD_CMD_READ, 2n, 0, 4096);
    expect(await c.reply()).toMatchObject({ cookie: 2n, error: 0 });
    await c.disconnect();
  });

  it('refuses an oversized write payload with EINVAL, then disconnects that client only', async () => {
    const { client: c } = await RawNbdClient.open(srv.port, { structured });
    c.request(C.NBD_CMD_WRITE, 9n, 0, 64 * MiB, { data: Buffer.alloc(1000) });
    expect(await c.reply()).toMatchObject({ cookie: 9n, error: C.NBD_EINVAL });
    expect(await c.closedWithin()).toBe(true);
    expect(srv.logs.some((l) => l.msg?.includes('oversized write'))).toBe(true);
    await expectDisconnectCode('ERR_NBD_TOO_LARGE');
    await expectServerHealthy();
  });

  it('answers unknown commands and flags with EINVAL and goes on', async () => {
    const { client: c } = await RawNbdClient.open(srv.port, { structured });
    c.request(42, 1n, 0, 0);
    expect(await c.reply()).toMatchObject({ cookie: 1n, error: C.NBD_EINVAL });
    c.request(C.NBD_CMD_BLOCK_STATUS, 2n, 0, 4096);
    expect(await c.reply()).toMatchObject({ cookie: 2n, error: C.NBD_EINVAL });
    c.request(C.NBD_CMD_READ, 3n, 0, 4096, { flags: C.NBD_CMD_FLAG_NO_HOLE });
    expect(await c.reply()).toMatchObject({ cookie: 3n, error: C.NBD_EINVAL });
    c.request(C.NBD_CMD_WRITE, 4n, 0, 4, { flags: 0x8000, data: Buffer.from('abcd') });
    expect(await c.reply()).toMatchObject({ cookie: 4n, error: C.NBD_EINVAL });
    c.request(C.NBD_CMD_READ, 5n, 0, 4096);
    expect(await c.reply()).toMatchObject({ cookie: 5n, error: 0 });
    await c.disconnect();
  });

  it('drops a client sending a bad request magic', async () => {
    const { client: c } = await RawNbdClient.open(srv.port, { structured });
    c.request(C.NBD_CMD_READ, 1n, 0, 4096, { magic: 0xdeadbeef });
    expect(await c.closedWithin()).toBe(true);
    expect(srv.logs.some((l) => l.msg?.includes('bad request magic'))).toBe(true);
    await expectDisconnectCode('ERR_NBD_BAD_MAGIC');
    await expectServerHealthy();
  });

  it('refuses writes, trims and zeroes on a read-only export with EPERM', async () => {
    const { client: c, flags } = await RawNbdClient.open(srv.port, { structured, exportName: 'ro' });
    expect(flags & C.NBD_FLAG_READ_ONLY).toBe(C.NBD_FLAG_READ_ONLY);
    expect(flags & (C.NBD_FLAG_SEND_TRIM | C.NBD_FLAG_SEND_WRITE_ZEROES)).toBe(0);
    c.request(C.NBD_CMD_WRITE, 1n, 0, 512, { data: Buffer.alloc(512, 7) });
    expect((await c.reply()).error).toBe(C.NBD_EPERM);
    c.request(C.NBD_CMD_TRIM, 2n, 0, 512);
    expect((await c.reply()).error).toBe(C.NBD_EPERM);
    c.request(C.NBD_CMD_WRITE_ZEROES, 3n, 0, 512);
    expect((await c.reply()).error).toBe(C.NBD_EPERM);
    c.request(C.NBD_CMD_READ, 4n, 0, 512);
    const r = await c.reply();
    expect(r.data!.equals(Buffer.alloc(512))).toBe(true);
    c.request(C.NBD_CMD_FLUSH, 5n, 0, 0);
    expect((await c.reply()).error).toBe(0);
    await c.disconnect();
  });

  it('maps backend failures: EIO by default, the errno its code names', async () => {
    const { client: c } = await RawNbdClient.open(srv.port, { structured, exportName: 'ctl' });
    ctl.failWith.read = new Error('disk on fire');
    c.request(C.NBD_CMD_READ, 1n, 0, 4096);
    const r = await c.reply();
    expect(r.error).toBe(C.NBD_EIO);
    if (structured) expect(r.message).toContain('disk on fire');
    ctl.failWith = { write: codedError('ERR_NO_SPACE'), flush: codedError('ERR_QUORUM_LOST') };
    c.request(C.NBD_CMD_WRITE, 2n, 0, 4, { data: Buffer.from('abcd') });
    expect((await c.reply()).error).toBe(C.NBD_ENOSPC);
    c.request(C.NBD_CMD_FLUSH, 3n, 0, 0);
    expect((await c.reply()).error).toBe(C.NBD_EIO);
    ctl.failWith = {};
    c.request(C.NBD_CMD_READ, 4n, 0, 4096);
    expect((await c.reply()).error).toBe(0);
    await c.disconnect();
  });

  it('replies out of order, matched by cookie', async () => {
    const { client: c } = await RawNbdClient.open(srv.port, { structured, exportName: 'ctl' });
    const release = ctl.hold((op, offset) => op === 'read' && offset === 0);
    c.request(C.NBD_CMD_READ, 0xaaaa_0000_0000_0001n, 0, 4096);
    c.request(C.NBD_CMD_READ, 0xbbbb_0000_0000_0002n, MiB, 8192);
    const first = await c.reply();
    expect(first.cookie).toBe(0xbbbb_0000_0000_0002n);
    expect(first.data!.length).toBe(8192);
    release();
    const second = await c.reply();
    expect(second.cookie).toBe(0xaaaa_0000_0000_0001n);
    expect(second.data!.length).toBe(4096);
    await c.disconnect();
  });

  it('requires alignment to an advertised minimum block size', async () => {
    const { client: c } = await RawNbdClient.open(srv.port, { structured, exportName: 'aligned' });
    const callsBefore = aligned.calls.length;
    c.request(C.NBD_CMD_READ, 1n, 100, 512);
    expect((await c.reply()).error).toBe(C.NBD_EINVAL);
    c.request(C.NBD_CMD_WRITE, 2n, 512, 100, { data: Buffer.alloc(100) });
    expect((await c.reply()).error).toBe(C.NBD_EINVAL);
    c.request(C.NBD_CMD_READ, 3n, 512, 1024);
    expect((await c.reply()).error).toBe(0);
    expect(aligned.calls.slice(callsBefore)).toEqual([{ op: 'read', offsetBytes: 512, lengthBytes: 1024 }]);
    await c.disconnect();
  });
});

describe('connections', () => {
  it('survives a peer that disconnects in the middle of a request', async () => {
    const before = srv.server.metrics().connectionsOpen;
    const a = (await RawNbdClient.open(srv.port)).client;
    const h = Buffer.alloc(28);
    h.writeUInt32BE(C.NBD_REQUEST_MAGIC, 0);
    h.writeUInt16BE(C.NBD_CMD_WRITE, 6);
    h.writeUInt32BE(MiB, 24);
    a.write(Buffer.concat([h, Buffer.alloc(1000)])); // header + 1000 of 1 MiB payload
    const b = (await RawNbdClient.open(srv.port)).client;
    b.write(h.subarray(0, 13)); // half a header
    await new Promise((r) => setTimeout(r, 50));
    a.destroy();
    b.destroy();
    await waitUntil(() => srv.server.metrics().connectionsOpen === before, 'connections to close');
    await expectServerHealthy();
  });

  it('drops replies of a peer gone while its requests are in flight', async () => {
    const { client: c } = await RawNbdClient.open(srv.port, { exportName: 'ctl' });
    const release = ctl.hold((op) => op === 'read');
    c.request(C.NBD_CMD_READ, 1n, 0, 4096);
    await waitUntil(() => srv.server.metrics().inFlightRequests === 1, 'the read to be in flight');
    c.destroy();
    await new Promise((r) => setTimeout(r, 50));
    release();
    await waitUntil(() => srv.server.metrics().inFlightRequests === 0, 'the read to finish');
    await expectServerHealthy();
  });

  it('DISC finishes in-flight writes and flushes before closing', async () => {
    const { client: c } = await RawNbdClient.open(srv.port, { exportName: 'ctl' });
    const release = ctl.hold((op) => op === 'write');
    const data = randomBytes(8192);
    const flushesBefore = ctl.calls.filter((x) => x.op === 'flush').length;
    c.request(C.NBD_CMD_WRITE, 1n, 2 * MiB, data.length, { data });
    c.request(C.NBD_CMD_DISC, 2n, 0, 0);
    await new Promise((r) => setTimeout(r, 50));
    expect(c.socket.destroyed).toBe(false);
    release();
    const reply = await c.reply();
    expect(reply).toMatchObject({ cookie: 1n, error: 0 });
    expect(await c.closedWithin()).toBe(true);
    expect(ctl.calls.filter((x) => x.op === 'flush').length).toBe(flushesBefore + 1);
    const { client: d } = await RawNbdClient.open(srv.port, { exportName: 'ctl' });
    d.request(C.NBD_CMD_READ, 3n, 2 * MiB, data.length);
    expect((await d.reply()).data!.equals(data)).toBe(true);
    await d.disconnect();
  });

  it('pipelines thousands of requests past the in-flight bound (backpressure) and answers all', async () => {
    const { client: c } = await RawNbdClient.open(srv.port, { structured: true });
    const n = C.MAX_IN_FLIGHT_REQUESTS * 8;
    const frames: Buffer[] = [];
    for (let i = 0; i < n; i++) {
      const h = Buffer.alloc(28 + 4096);
      h.writeUInt32BE(C.NBD_REQUEST_MAGIC, 0);
      h.writeUInt16BE(C.NBD_CMD_WRITE, 6);
      h.writeBigUInt64BE(BigInt(i), 8);
      h.writeBigUInt64BE(BigInt(i * 4096), 16);
      h.writeUInt32BE(4096, 24);
      h.writeUInt32BE(i, 28);
      frames.push(h);
    }
    c.write(Buffer.concat(frames)); // one write: the server sees many requests per chunk
    const seen = new Set<bigint>();
    for (let i = 0; i < n; i++) {
      const r = await c.reply(10_000);
      expect(r.error).toBe(0);
      seen.add(r.cookie);
    }
    expect(seen.size).toBe(n);
    for (const i of [0, 1, n - 1]) {
      c.request(C.NBD_CMD_READ, BigInt(n + i), i * 4096, 4096);
      expect((await c.reply()).data!.readUInt32BE(0)).toBe(i);
    }
    await c.disconnect();
  });

  it('rate-limits warnings from a spamming client', async () => {
    const { client: c } = await RawNbdClient.open(srv.port);
    const warnsBefore = srv.logs.filter((l) => l.level === 'warn').length;
    for (let i = 0; i < 200; i++) c.request(99, BigInt(i), 0, 0);
    for (let i = 0; i < 200; i++) expect((await c.reply()).error).toBe(C.NBD_EINVAL);
    const warns = srv.logs.filter((l) => l.level === 'warn').length - warnsBefore;
    expect(warns).toBeLessThanOrEqual(C.LOG_BURST_PER_WINDOW);
    await c.disconnect();
  });

  it('serves several clients at once', async () => {
    const clients = await Promise.all(Array.from({ length: 8 }, () => RawNbdClient.open(srv.port, { structured: true })));
    await Promise.all(
      clients.map(async ({ client }, i) => {
        const data = randomBytes(16 * 1024);
        client.request(C.NBD_CMD_WRITE, 1n, 12 * MiB + i * data.length, data.length, { data });
        expect((await client.reply()).error).toBe(0);
        client.request(C.NBD_CMD_READ, 2n, 12 * MiB + i * data.length, data.length);
        expect((await client.reply()).data!.equals(data)).toBe(true);
        await client.disconnect();
      }),
    );
  });
});

describe('server lifecycle', () => {
  it('close() is idempotent, ends clients and reports metrics', async () => {
    const own = await startNbdServer({ sizeBytes: MiB });
    const events: string[] = [];
    own.server.on('connection', () => events.push('connection'));
    own.server.on('disconnect', (info) => events.push(`disconnect:${info.reason}`));
    const { client } = await RawNbdClient.open(own.port);
    client.request(C.NBD_CMD_WRITE, 1n, 0, 512, { data: Buffer.alloc(512, 1) });
    await client.reply();
    expect(own.server.connectionCount).toBe(1);
    const m = own.server.metrics();
    expect(m).toMatchObject({ connectionsOpen: 1, connectionsTotal: 1, bytesWritten: 512 });
    await Promise.all([own.close(), own.server.close()]);
    await own.server.close();
    expect(await client.closedWithin()).toBe(true);
    expect(events).toEqual(['connection', 'disconnect:server closing']);
    expect(own.server.connectionCount).toBe(0);
  });
});

import { connect, type Socket } from 'node:net';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { decodeBatch } from '../../protocol/codec.js';
import { CloseCodes } from '../../protocol/link.js';
import { dial, hello, RawClient, startServer, upOnce, waitFor, type TestServer } from './net.js';

const cleanups: (() => Promise<unknown> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function server(options: Parameters<typeof startServer>[0] = {}): Promise<TestServer> {
  const srv = await startServer(options);
  cleanups.push(() => srv.server.close());
  return srv;
}

async function client(url: string): Promise<RawClient> {
  const raw = await RawClient.open(url);
  cleanups.push(() => raw.close());
  return raw;
}

/** A fresh client says hello and gets welcome: the server is alive and well. */
async function expectServes(srv: TestServer): Promise<void> {
  const raw = await client(srv.url);
  raw.sendBatch({ from: 'probe', lc: 1, frames: [hello({ id: 'probe' })] });
  const reply = await raw.nextBatch();
  expect(reply.frames[0]!.t).toBe('welcome');
  raw.close();
}

describe('LinkServer', () => {
  it('greets a hello: the owner gets (link, hello), frames after hello in the same message follow', async () => {
    const srv = await server();
    const raw = await client(srv.url);
    raw.sendBatch({ from: 'drv', lc: 5, frames: [hello({ epoch: 7 }), { t: 'flush', epoch: 7, v: 1 }] });
    const welcome = (await raw.nextBatch()).frames[0]!;
    expect(welcome).toMatchObject({ t: 'welcome', epoch: 7 });
    await waitFor(() => srv.batches.length === 1, 'the flush after hello');
    expect(srv.batches[0]!.frames).toEqual([{ t: 'flush', epoch: 7, v: 1 }]);
  });

  it('answers a garbage message with an error frame and keeps the link and the server working', async () => {
    const srv = await server();
    const raw = await client(srv.url);
    raw.sendBatch({ from: 'drv', lc: 1, frames: [hello()] });
    await raw.nextBatch();
    raw.sendBatch({ from: 'drv', lc: 2, frames: [{ t: 'flush', epoch: 1, v: 1 }] });
    raw.ws.send(Buffer.from('this is not msgpack at all, just bytes \xff\xfe'));
    raw.ws.send(Buffer.from([0x82, 0xa4, 0x66, 0x72, 0x6f, 0x6d])); // truncated map
    raw.ws.send('a text message');
    raw.sendBatch({ from: 'drv', lc: 3, frames: [{ t: 'flush', epoch: 1, v: 2 }] });
    await waitFor(() => srv.batches.length === 2, 'both good batches');
    expect(srv.batches.map((b) => b.frames[0])).toEqual([{ t: 'flush', epoch: 1, v: 1 }, { t: 'flush', epoch: 1, v: 2 }]);
    const errors = [];
    while (errors.length < 3) errors.push(...(await raw.nextBatch()).frames); // replies of one turn share a batch
    expect(errors).toHaveLength(3);
    for (const e of errors) expect(e).toMatchObject({ t: 'error', code: 'ERR_BAD_FRAME' });
    expect(errors[2]).toMatchObject({ message: expect.stringContaining('text message') });
    expect(srv.lines.filter((l) => l.level === 'warn')).toHaveLength(3);
    expect(srv.server.links.size).toBe(1);
    await expectServes(srv);
  });

  it('refuses a hello from another cluster with ERR_WRONG_CLUSTER, then closes', async () => {
    const srv = await server();
    const raw = await client(srv.url);
    raw.sendBatch({ from: 'drv', lc: 1, frames: [hello({ clusterId: 'other' })] });
    const reply = (await raw.nextBatch()).frames[0]!;
    expect(reply).toMatchObject({ t: 'error', code: 'ERR_WRONG_CLUSTER', message: expect.stringContaining('"other"') });
    expect((await raw.closed).code).toBe(CloseCodes.wrongCluster);
    expect(srv.accepted).toHaveLength(0);

    const { dialer } = dial(srv.url, { hello: hello({ clusterId: 'other' }), limits: { reconnectMinMs: 1000 } });
    cleanups.push(() => dialer.close());
    const failure = await new Promise((resolve) => dialer.once('dial-error', resolve));
    expect(failure).toMatchObject({ code: 'ERR_WRONG_CLUSTER', attempt: 1 });
  });

  it('refuses a link whose first frame is not hello', async () => {
    const srv = await server();
    const raw = await client(srv.url);
    raw.sendBatch({ from: 'drv', lc: 1, frames: [{ t: 'flush', epoch: 1, v: 1 }] });
    expect((await raw.nextBatch()).frames[0]).toMatchObject({ t: 'error', code: 'ERR_BAD_FRAME', message: expect.stringContaining('hello') });
    expect((await raw.closed).code).toBe(CloseCodes.badHello);
  });

  it('closes a link that sends no hello within helloTimeoutMs', async () => {
    const srv = await server({ limits: { helloTimeoutMs: 150 } });
    const raw = await client(srv.url);
    const started = Date.now();
    const closed = await raw.closed;
    expect(Date.now() - started).toBeGreaterThanOrEqual(100);
    expect(closed.code).toBe(CloseCodes.helloTimeout);
    expect(closed.reason).toContain('no hello within 150 ms');
    expect(decodeFirst(raw)).toMatchObject({ t: 'error', code: 'ERR_HELLO_TIMEOUT' });
    await waitFor(() => srv.server.links.size === 0, 'link forgotten');
  });

  it('survives a peer that disconnects in the middle of a WebSocket frame', async () => {
    const srv = await server();
    const socket = await rawUpgrade(srv);
    // Binary frame, masked, 16-bit length 1000, then only 10 of the 1000 payload bytes.
    socket.write(Buffer.concat([Buffer.from([0x82, 0xfe, 0x03, 0xe8, 1, 2, 3, 4]), Buffer.alloc(10, 0x55)]));
    await new Promise((r) => setTimeout(r, 20));
    socket.destroy();
    await waitFor(() => srv.server.links.size === 0, 'the half-sent link to be dropped');
    await expectServes(srv);
  });

  it('survives a peer that breaks WebSocket framing (reserved opcode, unmasked client frame)', async () => {
    const srv = await server();
    for (const bytes of [[0x83, 0x80, 1, 2, 3, 4], [0x82, 0x02, 0x90, 0x90]]) {
      const socket = await rawUpgrade(srv);
      const closed = new Promise((r) => socket.once('close', r));
      socket.write(Buffer.from(bytes));
      await closed;
      await waitFor(() => srv.server.links.size === 0, 'the link dropped');
    }
    await waitFor(() => srv.server.links.size === 0, 'both links dropped');
    expect(srv.lines.filter((l) => l.msg === 'protocol: link socket error')).toHaveLength(2);
    await expectServes(srv);
  });

  it('refuses a message over maxMessageBytes, logs it, and keeps serving', async () => {
    const srv = await server({ limits: { maxMessageBytes: 64 * 1024 } });
    const raw = await client(srv.url);
    raw.sendBatch({ from: 'drv', lc: 1, frames: [hello()] });
    await raw.nextBatch();
    raw.ws.send(Buffer.alloc(100 * 1024, 0xc0));
    expect((await raw.closed).code).toBe(CloseCodes.messageTooBig);
    await waitFor(() => srv.server.links.size === 0, 'the link dropped');
    expect(srv.lines.some((l) => l.level === 'warn' && JSON.stringify(l.obj).includes('Max payload size exceeded'))).toBe(true);
    await expectServes(srv);
  });

  it('serves plain HTTP on the same port when given a handler, 426 otherwise', async () => {
    const srv = await server({
      httpHandler: (req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ path: req.url })),
    });
    const res = await fetch(`http://127.0.0.1:${srv.port}/status`);
    expect(await res.json()).toEqual({ path: '/status' });
    await expectServes(srv);

    const bare = await server();
    expect((await fetch(`http://127.0.0.1:${bare.port}/`)).status).toBe(426);
  });

  it('takes a pino logger as is', async () => {
    const srv = await server({ logger: pino({ level: 'silent' }) });
    await expectServes(srv);
  });

  it('close() closes every link and stops listening; idempotent', async () => {
    const srv = await startServer();
    const { dialer } = dial(srv.url, { limits: { reconnectMinMs: 5000, reconnectMaxMs: 5000 } });
    cleanups.push(() => dialer.close());
    await upOnce(dialer);
    const down = new Promise((resolve) => dialer.once('down', resolve));
    const closing = srv.server.close();
    expect(srv.server.close()).toBe(closing);
    await closing;
    expect(await down).toMatchObject({ code: CloseCodes.goingAway, reason: 'server closing' });
    expect(srv.server.links.size).toBe(0);
    await expect(fetch(`http://127.0.0.1:${srv.port}/`)).rejects.toThrow();
  });
});

/** A TCP socket that did the WebSocket upgrade by hand and now speaks whatever the test writes. */
async function rawUpgrade(srv: TestServer): Promise<Socket> {
  const socket = connect(srv.port, '127.0.0.1');
  cleanups.push(() => void socket.destroy());
  socket.on('error', () => {});
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
  const before = srv.server.links.size;
  socket.write(
    'GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
      'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n',
  );
  const response = await new Promise<string>((resolve) => socket.once('data', (d) => resolve(d.toString())));
  expect(response).toMatch(/^HTTP\/1.1 101/);
  await waitFor(() => srv.server.links.size === before + 1, 'the link');
  return socket;
}

function decodeFirst(raw: RawClient): unknown {
  const bytes = raw.messages.shift();
  return bytes ? decodeBatch(bytes).frames[0] : undefined;
}

/**
 * The fault proxy over real sockets, in front of an echo server: it passes bytes both ways, tells
 * dialers apart by the x-freebs-id of their upgrade request, holds bytes while partitioned and
 * delivers them on heal (no reset, like TCP retransmitting), delays both directions, and resets
 * connections on drop — each fault only for the sources it names.
 */
import net from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { FaultProxy } from '../../actors/fault-proxy.js';

let echo: net.Server;
let echoPort: number;
let proxy: FaultProxy;
const sockets: net.Socket[] = [];

beforeAll(async () => {
  echo = net.createServer((s) => {
    s.on('error', () => undefined); // resets are what some tests do
    s.pipe(s);
  });
  await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
  echoPort = (echo.address() as net.AddressInfo).port;
});
afterAll(() => new Promise<void>((r) => echo.close(() => r())));
afterEach(async () => {
  for (const s of sockets.splice(0)) s.destroy();
  await proxy?.close();
});

/** A client that says who it is the way an authenticated dialer's upgrade request does. */
async function dial(port: number, id: string | null): Promise<{ socket: net.Socket; received: () => string; closed: Promise<string> }> {
  const socket = net.connect({ host: '127.0.0.1', port });
  sockets.push(socket);
  let data = '';
  socket.on('data', (c: Buffer) => (data += c.toString()));
  const closed = new Promise<string>((resolve) => {
    socket.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
    socket.on('close', () => resolve('closed'));
  });
  await new Promise<void>((r) => socket.once('connect', () => r()));
  socket.write(`GET / HTTP/1.1\r\nhost: x\r\n${id ? `x-freebs-id: ${id}\r\n` : ''}upgrade: websocket\r\n\r\n`);
  return { socket, received: () => data, closed };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(check: () => boolean, timeoutMs = 2000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('timed out');
    await sleep(5);
  }
}

describe('FaultProxy', () => {
  it('passes bytes both ways and learns who dialed from the upgrade request', async () => {
    proxy = new FaultProxy({ name: 'echo', targetPort: echoPort });
    const port = await proxy.listen();
    const a = await dial(port, 'r2');
    const b = await dial(port, null);
    await until(() => a.received().includes('\r\n\r\n') && b.received().includes('\r\n\r\n'));
    a.socket.write('ping');
    await until(() => a.received().endsWith('ping'));
    expect(proxy.openSources.sort()).toEqual([null, 'r2'].sort());
    expect(proxy.stats).toMatchObject({ connections: 2, open: 2 });
  });

  it('holds what is sent during a partition of one source and delivers it on heal, without a reset', async () => {
    proxy = new FaultProxy({ name: 'echo', targetPort: echoPort });
    const port = await proxy.listen();
    const cut = await dial(port, 'driver');
    const other = await dial(port, 'r3');
    await until(() => cut.received().length > 0 && other.received().length > 0);
    proxy.partition(['driver']);
    cut.socket.write('held');
    other.socket.write('free');
    await until(() => other.received().endsWith('free'));
    await sleep(100);
    expect(cut.received()).not.toContain('held');
    expect(proxy.stats.heldBytes).toBeGreaterThan(0);
    // A new connection from the partitioned source is accepted but gets nowhere either.
    const late = await dial(port, 'driver');
    await sleep(100);
    expect(late.received()).toBe('');
    proxy.heal(['driver']);
    await until(() => cut.received().endsWith('held') && late.received().includes('\r\n\r\n'));
    expect(cut.socket.destroyed).toBe(false);
  });

  it('a partition without sources cuts every connection, those of unknown source too', async () => {
    proxy = new FaultProxy({ name: 'echo', targetPort: echoPort });
    const port = await proxy.listen();
    const anon = await dial(port, null);
    await until(() => anon.received().length > 0);
    proxy.partition();
    anon.socket.write('x');
    await sleep(100);
    expect(anon.received().endsWith('x')).toBe(false);
    proxy.heal();
    await until(() => anon.received().endsWith('x'));
  });

  it('delays each direction by the given time, keeping order', async () => {
    proxy = new FaultProxy({ name: 'echo', targetPort: echoPort });
    const port = await proxy.listen();
    const c = await dial(port, 'r1');
    await until(() => c.received().length > 0);
    proxy.delay(60, ['r1']);
    const started = Date.now();
    c.socket.write('1');
    c.socket.write('2');
    await until(() => c.received().endsWith('12'));
    // There and back: at least twice the one-way delay.
    expect(Date.now() - started).toBeGreaterThanOrEqual(115);
    proxy.heal();
    const fast = Date.now();
    c.socket.write('3');
    await until(() => c.received().endsWith('123'));
    expect(Date.now() - fast).toBeLessThan(100);
  });

  it('drop resets the matching connections now and lets new ones through', async () => {
    proxy = new FaultProxy({ name: 'echo', targetPort: echoPort });
    const port = await proxy.listen();
    const victim = await dial(port, 'r2');
    const bystander = await dial(port, 'r3');
    await until(() => victim.received().length > 0 && bystander.received().length > 0);
    expect(proxy.drop(['r2'])).toBe(1);
    expect(await victim.closed).toBe('ECONNRESET');
    bystander.socket.write('still here');
    await until(() => bystander.received().endsWith('still here'));
    const again = await dial(port, 'r2');
    await until(() => again.received().includes('\r\n\r\n'));
  });

  it('does not wait for headers from a client that does not speak HTTP (TLS)', async () => {
    proxy = new FaultProxy({ name: 'echo', targetPort: echoPort });
    const port = await proxy.listen();
    const socket = net.connect({ host: '127.0.0.1', port });
    sockets.push(socket);
    let data = Buffer.alloc(0);
    socket.on('data', (c: Buffer) => (data = Buffer.concat([data, c])));
    socket.write(Buffer.from([0x16, 0x03, 0x01, 0x00, 0x05]));
    await until(() => data.length === 5);
  });
});

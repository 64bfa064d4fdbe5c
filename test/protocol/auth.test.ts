/**
 * Cluster membership on links: a peer proves it holds the cluster secret in its upgrade request,
 * and the server proves it back, before a WebSocket exists. Strangers, wrong secrets, wrong
 * clusters, replayed requests, impostor servers, slow lorises and header floods are refused, and
 * nothing they send reaches the owner.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type IncomingMessage } from 'node:http';
import { connect, type Socket } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import WebSocket, { WebSocketServer } from 'ws';
import { AuthHeaders, ChallengeAuthority, CHALLENGE_PATH, parseChallenge, RateLimitedLog, upgradeHeaders, type Claim } from '../../protocol/auth.js';
import { encodeBatch } from '../../protocol/codec.js';
import type { DialFailure } from '../../protocol/dialer.js';
import { CloseCodes } from '../../protocol/link.js';
import { hasCommand } from '../helpers/tools.js';
import { dial, hello, startServer, upOnce, waitFor, type TestServer } from './net.js';

const cleanups: (() => Promise<unknown> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const secret = Buffer.from('correct horse battery staple, 32+ bytes of it');
const otherSecret = Buffer.from('a different secret, also long enough');
const claim: Claim = { clusterId: 'c1', id: 'drv', role: 'driver' };
const fast = { reconnectMinMs: 1000, reconnectMaxMs: 2000 };

async function server(options: Parameters<typeof startServer>[0] = {}): Promise<TestServer> {
  const srv = await startServer({ security: { secret }, ...options });
  cleanups.push(() => srv.server.close());
  return srv;
}

function firstFailure(options: Parameters<typeof dial>[1] & { url: string }): Promise<DialFailure> {
  const { dialer } = dial(options.url, options);
  cleanups.push(() => dialer.close());
  return new Promise((resolve) => dialer.once('dial-error', resolve));
}

async function challengeOf(url: string): Promise<Buffer> {
  const res = await fetch(`${url.replace(/^ws/, 'http')}${CHALLENGE_PATH}`);
  expect(res.status).toBe(200);
  return parseChallenge(await res.text())!;
}

/** A raw upgrade with the given headers: the WebSocket, or the HTTP refusal. */
function upgrade(url: string, headers: Record<string, string>): Promise<{ ws?: WebSocket; status?: number; code?: string; body?: string; res?: IncomingMessage }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers, perMessageDeflate: false });
    ws.on('error', () => {});
    let upgradeRes: IncomingMessage | undefined;
    ws.once('upgrade', (res) => (upgradeRes = res));
    ws.once('open', () => {
      cleanups.push(() => ws.terminate());
      resolve({ ws, res: upgradeRes });
    });
    ws.once('unexpected-response', (req, res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => {
        req.destroy();
        resolve({ status: res.statusCode, code: res.headers[AuthHeaders.error] as string, body });
      });
    });
    setTimeout(() => reject(new Error('no answer to the upgrade')), 3000).unref();
  });
}

/** A raw TCP socket, and its close watched from the start: under load the server may drop it
 *  (handshake bound) before the test gets round to waiting for that. */
const socketClosed = new WeakMap<Socket, Promise<void>>();
function rawSocket(port: number): Promise<Socket> {
  const socket = connect(port, '127.0.0.1');
  socket.on('error', () => {});
  socketClosed.set(socket, new Promise((r) => socket.once('close', () => r())));
  cleanups.push(() => void socket.destroy());
  return new Promise((resolve) => socket.once('connect', () => resolve(socket)));
}
const closeOf = (socket: Socket): Promise<void> => socketClosed.get(socket)!;

const refusals = (srv: TestServer) => srv.lines.filter((l) => l.msg === 'protocol: refused a link').map((l) => l.obj as { code: string; reason: string });

describe('ChallengeAuthority', () => {
  let nowMs = 1_700_000_000_000;
  const authority = () => new ChallengeAuthority({ secret, clusterId: 'c1', ttlMs: 5000, maxUsed: 8, now: () => nowMs });

  it('accepts a proof made with the secret, once; refuses replays, forgeries, stale challenges and other secrets', () => {
    const a = authority();
    const challenge = parseChallenge(a.mint())!;
    const { headers } = upgradeHeaders(secret, challenge, claim);
    expect(a.verify(headers)).toMatchObject({ ok: true, claim });
    expect(a.verify(headers)).toMatchObject({ ok: false, status: 401, code: 'ERR_AUTH_FAILED', reason: expect.stringContaining('already used') });

    const wrong = upgradeHeaders(otherSecret, parseChallenge(a.mint())!, claim).headers;
    expect(a.verify(wrong)).toMatchObject({ ok: false, code: 'ERR_AUTH_FAILED', reason: expect.stringContaining('wrong proof'), claimedId: 'drv' });

    // Another process's challenge (or a made-up one) is not ours.
    const foreign = upgradeHeaders(secret, parseChallenge(authority().mint())!, claim).headers;
    expect(a.verify(foreign)).toMatchObject({ ok: false, reason: expect.stringContaining('not issued by this process') });

    const old = parseChallenge(a.mint())!;
    nowMs += 5001;
    expect(a.verify(upgradeHeaders(secret, old, claim).headers)).toMatchObject({ ok: false, reason: expect.stringContaining('expired') });
  });

  it('binds the proof to the claimed id, role and cluster', () => {
    const a = authority();
    const { headers } = upgradeHeaders(secret, parseChallenge(a.mint())!, claim);
    expect(a.verify({ ...headers, [AuthHeaders.id]: 'r1' })).toMatchObject({ ok: false, reason: expect.stringContaining('wrong proof') });
    expect(a.verify({ ...headers, [AuthHeaders.role]: 'controller' })).toMatchObject({ ok: false, reason: expect.stringContaining('wrong proof') });
    const otherCluster = upgradeHeaders(secret, parseChallenge(a.mint())!, { ...claim, clusterId: 'c2' }).headers;
    expect(a.verify(otherCluster)).toMatchObject({ ok: false, status: 403, code: 'ERR_WRONG_CLUSTER' });
    expect(a.verify({})).toMatchObject({ ok: false, status: 401, code: 'ERR_AUTH_REQUIRED' });
    expect(a.verify({ ...headers, [AuthHeaders.nonce]: 'short' })).toMatchObject({ ok: false, reason: 'malformed credential headers' });
  });

  it('refuses secrets shorter than 128 bits', () => {
    expect(() => new ChallengeAuthority({ secret: Buffer.from('short'), clusterId: 'c1', ttlMs: 1, maxUsed: 1 })).toThrow(/too short/);
  });

  it('rate-limits log lines per kind and reports what it left out', () => {
    let t = 0;
    const log = new RateLimitedLog(2, () => t);
    const lines: string[] = [];
    for (let i = 0; i < 10; i++) log.emit('A', (suppressed) => lines.push(`A${suppressed}`));
    log.emit('B', (suppressed) => lines.push(`B${suppressed}`));
    t = 1000;
    log.emit('A', (suppressed) => lines.push(`A${suppressed}`));
    expect(lines).toEqual(['A0', 'A0', 'B0', 'A8']);
  });
});

describe('authenticated links', () => {
  it('members with the secret link up both ways and exchange frames', async () => {
    const srv = await server();
    expect(srv.server.authenticates).toBe(true);
    const { dialer } = dial(srv.url, { security: { secret } });
    cleanups.push(() => dialer.close());
    const [welcome] = await upOnce(dialer);
    expect(welcome).toMatchObject({ t: 'welcome', id: 'srv' });
    dialer.send({ t: 'flush', epoch: 1, v: 1 });
    await waitFor(() => srv.batches.length === 1, 'the flush');
    expect(srv.server.pendingConnections).toBe(0);
  });

  it('refuses a stranger with no credential before it has a WebSocket: nothing it sent arrives', async () => {
    const srv = await server();
    const refused = await upgrade(srv.url, {});
    expect(refused).toMatchObject({ status: 401, code: 'ERR_AUTH_REQUIRED', body: expect.stringContaining('--secret-file') });

    // A stranger that sends its frames right behind the upgrade request, without waiting.
    const socket = await rawSocket(srv.port);
    const frames = encodeBatch({ from: 'x', lc: 1, frames: [hello({ id: 'x' }), { t: 'flush', epoch: 1, v: 1 }] });
    const header = Buffer.from([0x82, 0x80 | 126, frames.length >> 8, frames.length & 0xff, 0, 0, 0, 0]);
    socket.write(
      'GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n',
    );
    socket.write(Buffer.concat([header, frames]));
    let reply = '';
    socket.on('data', (d: Buffer) => (reply += d.toString('latin1')));
    await closeOf(socket);
    expect(reply).toMatch(/^HTTP\/1.1 401/);

    // A DialingLink without the secret is told why.
    const failure = await firstFailure({ url: srv.url, limits: fast });
    expect(failure).toMatchObject({ code: 'ERR_AUTH_REQUIRED', reason: expect.stringContaining('401') });

    expect(srv.accepted).toHaveLength(0);
    expect(srv.batches).toHaveLength(0);
    expect(refusals(srv).map((r) => r.code)).toEqual(['ERR_AUTH_REQUIRED', 'ERR_AUTH_REQUIRED', 'ERR_AUTH_REQUIRED']);
  });

  it('refuses a peer with the wrong secret, and one in another cluster, saying which', async () => {
    const srv = await server();
    expect(await firstFailure({ url: srv.url, security: { secret: otherSecret }, limits: fast })).toMatchObject({ code: 'ERR_AUTH_FAILED' });
    expect(await firstFailure({ url: srv.url, security: { secret }, hello: hello({ clusterId: 'c2' }), limits: fast })).toMatchObject({
      code: 'ERR_WRONG_CLUSTER',
      reason: expect.stringContaining('"c2"'),
    });
    expect(srv.accepted).toHaveLength(0);
    expect(refusals(srv).map((r) => r.code)).toEqual(['ERR_AUTH_FAILED', 'ERR_WRONG_CLUSTER']);
  });

  it('refuses a replayed upgrade request, even with a valid proof', async () => {
    const srv = await server();
    const { headers } = upgradeHeaders(secret, await challengeOf(srv.url), claim);
    const first = await upgrade(srv.url, headers);
    expect(first.ws).toBeDefined();
    expect(await upgrade(srv.url, headers)).toMatchObject({ status: 401, code: 'ERR_AUTH_FAILED', body: expect.stringContaining('already used') });
  });

  it('refuses a hello that is not who authenticated', async () => {
    const srv = await server();
    const { headers } = upgradeHeaders(secret, await challengeOf(srv.url), { clusterId: 'c1', id: 'r1', role: 'replica' });
    const { ws } = await upgrade(srv.url, headers);
    const closed = new Promise<number>((r) => ws!.once('close', (code) => r(code)));
    ws!.send(encodeBatch({ from: 'r9', lc: 1, frames: [hello({ id: 'r9', role: 'replica' }), { t: 'flush', epoch: 1, v: 1 }] }));
    expect(await closed).toBe(CloseCodes.authFailed);
    expect(srv.accepted).toHaveLength(0);
    expect(srv.batches).toHaveLength(0);
    expect(refusals(srv)[0]).toMatchObject({ code: 'ERR_AUTH_FAILED', reason: expect.stringContaining('authenticated as replica "r1"') });
  });

  it('a dialer with the secret refuses a server without one, and an impostor that cannot prove it, sending nothing', async () => {
    const open = await startServer(); // no secret
    cleanups.push(() => open.server.close());
    expect(await firstFailure({ url: open.url, security: { secret }, limits: fast })).toMatchObject({
      code: 'ERR_AUTH_FAILED',
      reason: expect.stringContaining('without a cluster secret'),
    });
    expect(open.server.links.size).toBe(0);

    // An impostor: hands out a challenge, accepts any upgrade, answers with a made-up proof.
    const received: Buffer[] = [];
    const http = createServer((req, res) => res.end(req.url === CHALLENGE_PATH ? `${'A'.repeat(52)}\n` : ''));
    const wss = new WebSocketServer({ server: http });
    wss.on('headers', (headers) => headers.push(`${AuthHeaders.id}: srv`, `${AuthHeaders.proof}: ${'B'.repeat(43)}`));
    wss.on('connection', (ws) => ws.on('message', (m) => received.push(m as Buffer)));
    await new Promise<void>((r) => http.listen(0, '127.0.0.1', () => r()));
    cleanups.push(() => new Promise((r) => { wss.close(); http.close(r); http.closeAllConnections(); }));
    const port = (http.address() as { port: number }).port;
    expect(await firstFailure({ url: `ws://127.0.0.1:${port}`, security: { secret }, limits: fast })).toMatchObject({
      code: 'ERR_AUTH_FAILED',
      reason: expect.stringContaining('could not prove'),
    });
    await new Promise((r) => setTimeout(r, 50));
    expect(received).toHaveLength(0);
  });
});

describe('handshake bounds', () => {
  it('drops a slow loris: a socket that sends nothing, and one that trickles its request', async () => {
    const srv = await server({ limits: { helloTimeoutMs: 300 } });
    const silent = await rawSocket(srv.port);
    const trickle = await rawSocket(srv.port);
    const request = 'GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n';
    let i = 0;
    const timer = setInterval(() => i < request.length && trickle.write(request[i++]!), 40);
    cleanups.push(() => clearInterval(timer));
    const started = Date.now();
    await Promise.all([closeOf(silent), closeOf(trickle)]);
    // Bounded (2 × 300 ms at most, plus scheduling on a loaded machine), not left open forever.
    expect(Date.now() - started).toBeLessThan(5000);
    expect(srv.server.pendingConnections).toBe(0);
    // And a peer that upgrades but never says hello is dropped too. (A roomier bound: the
    // challenge must survive the fetch and the upgrade on a loaded machine.)
    const roomy = await server({ limits: { helloTimeoutMs: 1500 } });
    const { headers } = upgradeHeaders(secret, await challengeOf(roomy.url), claim);
    const { ws } = await upgrade(roomy.url, headers);
    expect(await new Promise((r) => ws!.once('close', r))).toBe(CloseCodes.helloTimeout);
  });

  it('lets an established link idle far longer than the handshake bound', async () => {
    const srv = await server({ limits: { helloTimeoutMs: 200 } });
    const { dialer } = dial(srv.url, { security: { secret }, limits: { helloTimeoutMs: 200 } });
    cleanups.push(() => dialer.close());
    await upOnce(dialer);
    await new Promise((r) => setTimeout(r, 700));
    expect(dialer.isUp).toBe(true);
    dialer.send({ t: 'flush', epoch: 1, v: 1 });
    await waitFor(() => srv.batches.length === 1, 'the flush after idling');
  });

  it('holds few handshakes per address; a member gets in once the strangers are gone', async () => {
    const srv = await server({ limits: { maxPendingLinksPerAddress: 3 } });
    const idle = await Promise.all([1, 2, 3].map(() => rawSocket(srv.port)));
    const fourth = await rawSocket(srv.port);
    await closeOf(fourth);
    expect(refusals(srv).at(-1)).toMatchObject({ code: 'ERR_OVERLOADED' });
    for (const s of idle) s.destroy();
    await waitFor(() => srv.server.pendingConnections === 0, 'the idle sockets forgotten');
    const { dialer } = dial(srv.url, { security: { secret } });
    cleanups.push(() => dialer.close());
    await upOnce(dialer);
    expect(srv.server.pendingConnections).toBe(0);
  });

  it('refuses oversized request headers without reading them into memory', async () => {
    const srv = await server();
    const refused = await upgrade(srv.url, { 'x-padding': 'p'.repeat(100 * 1024) }).catch((err: Error) => ({ error: err.message }));
    expect(refused).toMatchObject({ status: 431 });
    expect(srv.accepted).toHaveLength(0);
  });

  it('logs refusals at a bounded rate', async () => {
    const srv = await server({ limits: { refusalLogsPerSecond: 3 } });
    for (let i = 0; i < 10; i++) await upgrade(srv.url, {});
    expect(refusals(srv)).toHaveLength(3);
  });
});

const tlsDir = hasCommand('openssl') ? mkdtempSync(path.join(os.tmpdir(), 'freebs-tls-')) : null;
afterAll(() => {
  if (tlsDir) rmSync(tlsDir, { recursive: true, force: true });
});

describe.runIf(tlsDir !== null)('TLS links', () => {
  it('wss:// with a certificate the dialer trusts; refused without the CA', async () => {
    const dir = tlsDir!;
    execFileSync('openssl', [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1', '-subj', '/CN=freebs-test',
      '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', path.join(dir, 'key.pem'), '-out', path.join(dir, 'cert.pem'),
    ], { stdio: 'ignore' });
    const cert = readFileSync(path.join(dir, 'cert.pem'));
    const key = readFileSync(path.join(dir, 'key.pem'));
    const srv = await server({ security: { secret, tls: { cert, key } }, limits: { helloTimeoutMs: 200 } });
    expect(srv.url).toMatch(/^wss:\/\//);
    const { dialer } = dial(srv.url, { security: { secret, tls: { ca: cert } } });
    cleanups.push(() => dialer.close());
    await upOnce(dialer);
    await new Promise((r) => setTimeout(r, 700)); // idle past the handshake bound: still up
    dialer.send({ t: 'flush', epoch: 1, v: 1 });
    await waitFor(() => srv.batches.length === 1, 'the flush over TLS');

    const untrusting = await firstFailure({ url: srv.url, security: { secret }, limits: fast });
    expect(untrusting.reason).toMatch(/self.signed|certificate/i);
  });
});

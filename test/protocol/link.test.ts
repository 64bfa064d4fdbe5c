import { afterEach, describe, expect, it } from 'vitest';
import { LamportClock } from '../../protocol/clock.js';
import { decodeBatch } from '../../protocol/codec.js';
import type { DialingLink } from '../../protocol/dialer.js';
import type { Frame } from '../../protocol/frames.js';
import { CloseCodes, type LinkCloseInfo } from '../../protocol/link.js';
import { writeFrame } from './fixtures.js';
import { dial, nextTurn, RawClient, startServer, upOnce, waitFor, type TestServer } from './net.js';

const cleanups: (() => Promise<unknown> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function pair(serverOptions = {}, dialOptions = {}): Promise<{ srv: TestServer; dialer: DialingLink }> {
  const srv = await startServer(serverOptions);
  cleanups.push(() => srv.server.close());
  const { dialer } = dial(srv.url, dialOptions);
  cleanups.push(() => dialer.close());
  await upOnce(dialer);
  return { srv, dialer };
}

const versions = (frames: Frame[]): number[] => frames.map((f) => (f.t === 'write' || f.t === 'flush' ? f.v : -1));

describe('Link', () => {
  it('sends everything queued in one turn as one message, in order', async () => {
    const { srv, dialer } = await pair();
    const link = dialer.link!;
    const sentBefore = link.stats.batchesSent;
    for (let v = 1; v <= 100; v++) expect(dialer.send(writeFrame(v))).toBe(true);
    await waitFor(() => srv.batches.length > 0, 'the batch');
    await new Promise((r) => setTimeout(r, 20));
    expect(srv.batches).toHaveLength(1);
    expect(versions(srv.batches[0]!.frames)).toEqual(Array.from({ length: 100 }, (_, i) => i + 1));
    expect(srv.batches[0]!.from).toBe('drv');
    expect(link.stats.batchesSent - sentBefore).toBe(1);
  });

  it('carries 1 MiB payloads both ways, detached from msgpack, intact and in order with small frames', async () => {
    const { srv, dialer } = await pair();
    const MiB = 1024 * 1024;
    const frames: Frame[] = [];
    for (let v = 1; v <= 6; v++) frames.push(v % 3 === 0 ? { t: 'flush', epoch: 1, v } : writeFrame(v, v % 2 === 0 ? MiB : 4096));
    for (const f of frames) dialer.send(f);
    await waitFor(() => srv.batches.reduce((n, b) => n + b.frames.length, 0) === frames.length, 'every frame');
    const got = srv.batches.flatMap((b) => b.frames);
    expect(versions(got)).toEqual(versions(frames));
    got.forEach((f, i) => {
      const want = (frames[i] as { data?: Buffer }).data;
      if (want) expect(Buffer.compare((f as { data?: Buffer }).data ?? Buffer.alloc(0), want), `frame ${i}`).toBe(0);
    });
    // The other way: server (unmasked) to dialer.
    const back: Frame[] = [];
    dialer.on('batch', (b) => back.push(...b.frames));
    const reply: Frame = { t: 'read-reply', r: 7, ok: true, appliedVersion: 9, data: Buffer.alloc(MiB + 5, 0x5a) };
    srv.accepted[0]!.send(reply);
    srv.accepted[0]!.send({ t: 'flush', epoch: 1, v: 99 });
    await waitFor(() => back.length === 2, 'the reply');
    expect(back[0]!.t).toBe('read-reply');
    expect(Buffer.compare((back[0] as { data?: Buffer }).data ?? Buffer.alloc(0), (reply as { data?: Buffer }).data!)).toBe(0);
    expect(back[1]).toEqual({ t: 'flush', epoch: 1, v: 99 });
  });

  it('flushes early at batchMaxFrames and batchFlushBytes within one turn', async () => {
    const { srv, dialer } = await pair({}, { limits: { batchMaxFrames: 100, batchFlushBytes: 64 * 1024 } });
    for (let v = 1; v <= 250; v++) dialer.send({ t: 'flush', epoch: 1, v });
    await waitFor(() => srv.batches.reduce((n, b) => n + b.frames.length, 0) === 250, '250 frames');
    expect(srv.batches.map((b) => b.frames.length)).toEqual([100, 100, 50]);

    srv.batches.length = 0;
    for (let v = 1; v <= 40; v++) dialer.send(writeFrame(v, 4096)); // 16 × ~4 KiB reach 64 KiB
    await waitFor(() => srv.batches.reduce((n, b) => n + b.frames.length, 0) === 40, '40 frames');
    expect(srv.batches.map((b) => b.frames.length)).toEqual([16, 16, 8]);
  });

  it('splits a batch that would exceed maxMessageBytes, keeping order', async () => {
    const { srv, dialer } = await pair({}, { limits: { maxMessageBytes: 20_000 } });
    for (let v = 1; v <= 12; v++) {
      // Distinct keys per view: msgpackr records would otherwise share one structure per message.
      const view = Object.fromEntries(Array.from({ length: 200 }, (_, i) => [`member-${v}-${i}`, i]));
      dialer.send({ t: 'heartbeat', id: 'drv', role: 'driver', epoch: 1, state: `s${v}`, appliedVersion: v, durableVersion: v, view });
    }
    await waitFor(() => srv.batches.reduce((n, b) => n + b.frames.length, 0) === 12, '12 heartbeats');
    expect(srv.batches.length).toBeGreaterThan(1);
    expect(srv.batches.flatMap((b) => b.frames.map((f) => (f.t === 'heartbeat' ? f.appliedVersion : -1)))).toEqual(
      Array.from({ length: 12 }, (_, i) => i + 1),
    );
  });

  it('keeps FIFO order across many turns, both directions', async () => {
    const { srv, dialer } = await pair();
    const back: number[] = [];
    dialer.on('batch', (b) => back.push(...versions(b.frames)));
    let v = 0;
    for (let turn = 0; turn < 200; turn++) {
      for (let i = 0; i < 1 + (turn % 17); i++) {
        v++;
        dialer.send(writeFrame(v, 512));
        srv.accepted[0]!.send({ t: 'flush', epoch: 1, v });
      }
      await nextTurn();
    }
    await waitFor(() => srv.batches.reduce((n, b) => n + b.frames.length, 0) === v && back.length === v, 'all frames');
    const got = srv.batches.flatMap((b) => versions(b.frames));
    expect(got).toEqual(Array.from({ length: v }, (_, i) => i + 1));
    expect(back).toEqual(got);
    expect(srv.batches.length).toBeLessThanOrEqual(200);
  });

  it('reports backpressure past the high-water mark and emits drain once the peer reads', async () => {
    const srv = await startServer({ limits: { sendHighWaterBytes: 1 << 20, sendLowWaterBytes: 256 << 10 } });
    cleanups.push(() => srv.server.close());
    const raw = await RawClient.open(srv.url);
    cleanups.push(() => raw.close());
    raw.sendBatch({ from: 'raw', lc: 1, frames: [{ t: 'hello', role: 'driver', id: 'raw', epoch: 1, clusterId: 'c1' }] });
    await raw.nextBatch();
    // The receiver stops reading its socket, so bytes pile up in kernel buffers, then in ws.
    const rawSocket = (raw.ws as unknown as { _socket: import('node:net').Socket })._socket;
    rawSocket.pause();
    const link = srv.accepted[0]!;
    let drained = 0;
    link.on('drain', () => drained++);
    let sent = 0;
    let refused = false;
    for (let turn = 0; turn < 1000 && !refused; turn++) {
      for (let i = 0; i < 4 && !refused; i++) {
        sent++;
        refused = !link.send(writeFrame(sent, 64 * 1024));
      }
      await nextTurn();
    }
    expect(refused).toBe(true);
    expect(link.pendingBytes).toBeGreaterThanOrEqual(1 << 20);
    await new Promise((r) => setTimeout(r, 50));
    expect(drained).toBe(0);
    rawSocket.resume();
    await waitFor(() => drained === 1, 'drain');
    expect(link.pendingBytes).toBeLessThan(256 << 10);
    let received = 0;
    await waitFor(() => {
      while (raw.messages.length) received += decodeBatch(raw.messages.shift()!).frames.length;
      return received === sent;
    }, 'every frame, none lost');
  });

  it('drops a link whose peer stops reading once sends past the high-water mark pile up to sendMaxPendingBytes', async () => {
    const srv = await startServer({ limits: { sendHighWaterBytes: 1 << 20, sendLowWaterBytes: 256 << 10, sendMaxPendingBytes: 4 << 20 } });
    cleanups.push(() => srv.server.close());
    const raw = await RawClient.open(srv.url);
    cleanups.push(() => raw.close());
    raw.sendBatch({ from: 'raw', lc: 1, frames: [{ t: 'hello', role: 'driver', id: 'raw', epoch: 1, clusterId: 'c1' }] });
    await raw.nextBatch();
    (raw.ws as unknown as { _socket: import('node:net').Socket })._socket.pause();
    const link = srv.accepted[0]!;
    const closed = new Promise<LinkCloseInfo>((r) => link.once('close', r));
    // A sender that ignores backpressure (as acks and read replies to a stuck peer would).
    let maxPendingBytes = 0;
    for (let turn = 0; turn < 2000 && link.isOpen; turn++) {
      for (let i = 0; i < 8 && link.isOpen; i++) link.send(writeFrame(turn * 8 + i + 1, 64 * 1024));
      maxPendingBytes = Math.max(maxPendingBytes, link.pendingBytes);
      await nextTurn();
    }
    expect(link.isOpen).toBe(false);
    expect(maxPendingBytes).toBeLessThanOrEqual((4 << 20) + 64 * 1024 + 64);
    expect(await closed).toMatchObject({ code: CloseCodes.peerNotReading, reason: expect.stringContaining('peer not reading') });
    expect(srv.lines.some((l) => l.level === 'error' && l.msg?.includes('peer not reading'))).toBe(true);
  });

  it('flushes queued frames on close(), which is idempotent', async () => {
    const { srv, dialer } = await pair();
    for (let v = 1; v <= 50; v++) dialer.send({ t: 'flush', epoch: 1, v });
    const link = dialer.link!;
    const closing = link.close();
    expect(link.close()).toBe(closing);
    expect(link.send({ t: 'flush', epoch: 1, v: 51 })).toBe(false);
    await closing;
    await waitFor(() => srv.batches.reduce((n, b) => n + b.frames.length, 0) === 50, '50 frames');
    await waitFor(() => srv.server.links.size === 0, 'server side closed');
  });

  it('stamps batches with a Lamport clock shared across links', async () => {
    const clock = new LamportClock();
    const { srv, dialer } = await pair({}, { clock });
    const before = clock.time;
    dialer.send({ t: 'flush', epoch: 1, v: 1 });
    await waitFor(() => srv.batches.length === 1, 'batch');
    expect(srv.batches[0]!.lc).toBe(before + 1);
    const serverLink = srv.accepted[0]!;
    expect(serverLink.clock.time).toBeGreaterThan(before + 1);
    serverLink.clock.observe(1000); // server time 1001; its next batch is stamped 1002
    serverLink.send({ t: 'flush', epoch: 1, v: 2 });
    await waitFor(() => clock.time > 1000, 'client clock to pass the server stamp');
    expect(clock.time).toBe(1003);
  });

  it('throws at the caller on a malformed outgoing frame', async () => {
    const { dialer } = await pair();
    expect(() => dialer.send({ t: 'write', epoch: 1, v: -1, kind: 'trim', offsetBytes: 0, lengthBytes: 0 })).toThrow(/\.v: expected/);
  });

  it('rate-limits error replies to a peer sending garbage, and keeps the link open', async () => {
    const srv = await startServer({ limits: { errorRepliesPerSecond: 5 } });
    cleanups.push(() => srv.server.close());
    const raw = await RawClient.open(srv.url);
    cleanups.push(() => raw.close());
    raw.sendBatch({ from: 'raw', lc: 1, frames: [{ t: 'hello', role: 'driver', id: 'raw', epoch: 1, clusterId: 'c1' }] });
    expect((await raw.nextBatch()).frames[0]!.t).toBe('welcome');
    for (let i = 0; i < 50; i++) raw.ws.send(Buffer.from([0xc1, i]));
    raw.sendBatch({ from: 'raw', lc: 2, frames: [{ t: 'flush', epoch: 1, v: 9 }] });
    await waitFor(() => srv.batches.length === 1, 'the good batch after garbage');
    const link = srv.accepted[0]!;
    expect(link.stats.badMessages).toBe(50);
    expect(link.stats.errorRepliesDropped).toBe(45);
    await waitFor(() => raw.messages.length > 0, 'error replies');
    await new Promise((r) => setTimeout(r, 30));
    const errors = [];
    while (raw.messages.length) errors.push(...(await raw.nextBatch()).frames);
    expect(errors).toHaveLength(5);
    expect(errors.every((f) => f.t === 'error' && f.code === 'ERR_BAD_FRAME')).toBe(true);
    expect(srv.lines.filter((l) => l.level === 'warn' && l.msg?.includes('bad message'))).toHaveLength(5);
  });
});

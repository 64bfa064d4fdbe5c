import { createServer } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import type { DialFailure } from '../../protocol/dialer.js';
import type { Batch } from '../../protocol/frames.js';
import { dial, hello, startServer, upOnce, waitFor } from './net.js';

const cleanups: (() => Promise<unknown> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const fast = { reconnectMinMs: 20, reconnectMaxMs: 80 };

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  const { port } = s.address() as { port: number };
  await new Promise((r) => s.close(r));
  return port;
}

describe('DialingLink', () => {
  it('comes back after the server restarts on the same port: down, then up; nothing kept while down', async () => {
    const first = await startServer();
    const events: string[] = [];
    let epoch = 1;
    const { dialer } = dial(first.url, { limits: fast, hello: () => hello({ epoch }) });
    cleanups.push(() => dialer.close());
    dialer.on('up', (w) => events.push(`up:${w.epoch}`));
    dialer.on('down', (info) => events.push(`down:${info.code}`));
    await upOnce(dialer);
    expect(dialer.isUp).toBe(true);
    expect(dialer.send({ t: 'flush', epoch: 1, v: 1 })).toBe(true);
    await waitFor(() => first.batches.length === 1, 'the first flush');

    await first.server.close();
    await waitFor(() => !dialer.isUp, 'down');
    expect(dialer.link).toBeUndefined();
    expect(dialer.send({ t: 'flush', epoch: 1, v: 2 })).toBe(false);

    epoch = 2; // the hello is rebuilt on every dial
    const second = await startServer({}, first.port);
    cleanups.push(() => second.server.close());
    await upOnce(dialer);
    expect(events).toEqual(['up:1', 'down:1001', 'up:2']);
    expect(dialer.welcome?.epoch).toBe(2);
    dialer.send({ t: 'flush', epoch: 2, v: 3 });
    await waitFor(() => second.batches.length === 1, 'the flush on the new link');
    expect(second.batches[0]!.frames).toEqual([{ t: 'flush', epoch: 2, v: 3 }]); // v2 was dropped, not replayed
  });

  it('backs off exponentially with jitter while nobody listens, and stops on close()', async () => {
    const port = await freePort();
    const { dialer } = dial(`ws://127.0.0.1:${port}`, { limits: { reconnectMinMs: 10, reconnectMaxMs: 80 } });
    const failures: DialFailure[] = [];
    dialer.on('dial-error', (f) => failures.push(f));
    await waitFor(() => failures.length >= 6, 'six attempts');
    await dialer.close();
    const count = failures.length;
    expect(failures.map((f) => f.attempt)).toEqual(Array.from({ length: count }, (_, i) => i + 1));
    failures.forEach((f, i) => {
      const baseMs = Math.min(80, 10 * 2 ** (i + 1));
      expect(f.retryInMs).toBeGreaterThanOrEqual(Math.max(10, Math.floor(baseMs / 2)));
      expect(f.retryInMs).toBeLessThanOrEqual(baseMs);
    });
    expect(failures[0]!.reason).toMatch(/ECONNREFUSED/);
    await new Promise((r) => setTimeout(r, 150));
    expect(failures.length).toBe(count);
  });

  it('drops a link that gets no welcome in time and redials', async () => {
    const srv = await startServer({ onLink: () => {} }); // an owner that never welcomes
    cleanups.push(() => srv.server.close());
    const { dialer } = dial(srv.url, { limits: { ...fast, helloTimeoutMs: 100 } });
    cleanups.push(() => dialer.close());
    const failure = await new Promise<DialFailure>((resolve) => dialer.once('dial-error', resolve));
    expect(failure.reason).toContain('no welcome within 100 ms');
    await waitFor(() => srv.server.links.size >= 1, 'a redial');
  });

  it('starts the backoff over after a stable link, not after a short one', async () => {
    for (const [stableLinkMs, firstAttempt] of [[0, 1], [60_000, 2]] as const) {
      const srv = await startServer();
      const { dialer } = dial(srv.url, { limits: { ...fast, stableLinkMs } });
      cleanups.push(() => dialer.close());
      await upOnce(dialer);
      const failure = new Promise<DialFailure>((resolve) => dialer.once('dial-error', resolve));
      await srv.server.close();
      expect((await failure).attempt).toBe(firstAttempt);
      await dialer.close();
    }
  });

  it('pause() stops reading, on this link and on the next one, until resume(); the sender sees backpressure', async () => {
    const srv = await startServer();
    const { dialer } = dial(srv.url, { limits: fast });
    cleanups.push(() => dialer.close());
    const got: Batch[] = [];
    dialer.on('batch', (b) => got.push(b));
    await upOnce(dialer);
    dialer.pause();
    // 32 MiB towards a reader that stopped: the kernel's buffers fill, then the server's link
    // holds the rest and reports it.
    const data = Buffer.alloc(1024 * 1024, 7);
    for (let i = 0; i < 32; i++) srv.accepted[0]!.send({ t: 'image-chunk', epoch: 1, offsetBytes: i * data.length, data });
    await waitFor(() => srv.accepted[0]!.pendingBytes > 8 * 1024 * 1024, 'backpressure at the sender');
    await new Promise((r) => setTimeout(r, 100));
    expect(got).toEqual([]);
    dialer.resume();
    await waitFor(() => got.reduce((n, b) => n + b.frames.length, 0) === 32, 'the 32 chunks after resume()');

    // Paused while down: the next link stops reading once welcomed. (A paused link reads no
    // close either: the replica resumes once its store catches up, whatever the link does.)
    const before = got.length;
    const port = srv.port;
    await srv.server.close();
    await waitFor(() => !dialer.isUp, 'down');
    dialer.pause();
    const again = await startServer({}, port);
    cleanups.push(() => again.server.close());
    await upOnce(dialer);
    await waitFor(() => again.accepted.length === 1, 'the new link');
    again.accepted[0]!.send({ t: 'ack', epoch: 1, id: 'srv', appliedVersion: 1, durableVersion: 1 });
    await new Promise((r) => setTimeout(r, 100));
    expect(got.length).toBe(before);
    dialer.resume();
    await waitFor(() => got.length === before + 1, 'the ack after resume()');
  });

  it('forwards batches, including frames that came with the welcome', async () => {
    const srv = await startServer({
      onLink: (link, h) => {
        link.send({ t: 'welcome', role: 'replica', id: 'srv', epoch: h.epoch, appliedVersion: 4 });
        link.send({ t: 'ack', epoch: h.epoch, id: 'srv', appliedVersion: 4, durableVersion: 4 });
      },
    });
    cleanups.push(() => srv.server.close());
    const { dialer } = dial(srv.url, { limits: fast });
    cleanups.push(() => dialer.close());
    const got: Batch[] = [];
    dialer.on('batch', (b) => got.push(b));
    const [welcome, link] = await upOnce(dialer);
    expect(welcome.appliedVersion).toBe(4);
    expect(link).toBe(dialer.link);
    await waitFor(() => got.length === 1, 'the ack');
    expect(got[0]!.frames).toEqual([{ t: 'ack', epoch: 1, id: 'srv', appliedVersion: 4, durableVersion: 4 }]);
  });

  it('close() while up emits down once and closes the link; idempotent', async () => {
    const srv = await startServer();
    cleanups.push(() => srv.server.close());
    const { dialer } = dial(srv.url, { limits: fast });
    await upOnce(dialer);
    const downs: unknown[] = [];
    dialer.on('down', (i) => downs.push(i));
    const closing = dialer.close();
    expect(dialer.close()).toBe(closing);
    await closing;
    expect(downs).toEqual([{ code: 1000, reason: 'closed by owner' }]);
    await waitFor(() => srv.server.links.size === 0, 'server side gone');
    await new Promise((r) => setTimeout(r, 100));
    expect(srv.server.links.size).toBe(0);
  });
});

/**
 * The visualizer as the controller serves it, in-process: the page and its files (bundled on
 * request, only this origin allowed), the live trace over a WebSocket on the members' own port
 * (member links still work beside it), the refusal of other sites' pages, and the trace
 * download.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ControllerProcess } from '../../actors/controller.js';
import { createLogger } from '../../actors/logger.js';
import { DialingLink } from '../../protocol/dialer.js';
import type { TraceFile, TraceRecord, VizMessage } from '../../protocol/trace.js';

const T = 100;
let controller: ControllerProcess;
let base: string;
let dir: string;

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'freebs-viz-page-'));
  const started = await ControllerProcess.start({
    clusterId: 'freebs',
    stateDir: dir,
    host: '127.0.0.1',
    port: 0,
    volume: { name: 'freebs', sizeBytes: 1 << 30 },
    chain: ['r1', 'r2', 'r3'].map((id, i) => ({ id, url: `ws://127.0.0.1:${1 + i}` })),
    driverId: 'driver',
    replicaCount: 3,
    heartbeatMs: T,
    spawner: null,
    log: createLogger('test', 'silent'),
  });
  controller = started.controller;
  base = `http://127.0.0.1:${started.port}`;
});

afterAll(async () => {
  await controller?.close();
  rmSync(dir, { recursive: true, force: true });
});

/** Messages from /viz/events until `until` says enough. */
function listen(until: (seen: VizMessage[]) => boolean, headers: Record<string, string> = {}): Promise<VizMessage[]> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${base.replace('http', 'ws')}/viz/events`, { headers });
    const seen: VizMessage[] = [];
    const timer = setTimeout(() => {
      ws.terminate();
      reject(new Error(`timed out; saw ${seen.map((m) => m.t).join(', ')}`));
    }, 10_000);
    ws.on('message', (data) => {
      seen.push(JSON.parse(String(data)) as VizMessage);
      if (until(seen)) {
        clearTimeout(timer);
        ws.close();
        resolve(seen);
      }
    });
    ws.on('unexpected-response', (_req, res) => {
      clearTimeout(timer);
      reject(new Error(`HTTP ${res.statusCode}`));
    });
    ws.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

const records = (seen: VizMessage[]): TraceRecord[] => seen.flatMap((m) => (m.t === 'hello' ? m.history : m.records));

describe('the visualizer at the controller', () => {
  it('serves the page, its bundled script, its stylesheet and the layout worker, from this origin only', async () => {
    const page = await fetch(`${base}/`);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toMatch(/text\/html/);
    const csp = page.headers.get('content-security-policy') ?? '';
    expect(csp).toContain("default-src 'none'");
    expect(csp).toContain("script-src 'self'");
    const html = await page.text();
    expect(html).toContain('/viz/app.js');
    expect(html).not.toMatch(/https?:\/\//);

    const app = await fetch(`${base}/viz/app.js`);
    expect(app.status).toBe(200);
    expect(app.headers.get('content-type')).toMatch(/javascript/);
    const js = await app.text();
    expect(js).toContain('/viz/events');
    // Bundled: no import left for the browser to fetch.
    expect(js).not.toMatch(/^import .* from ["']/m);

    for (const [file, type] of [['/viz/style.css', /text\/css/], ['/viz/elk-worker.js', /javascript/]] as const) {
      const res = await fetch(`${base}${file}`);
      expect(res.status, file).toBe(200);
      expect(res.headers.get('content-type')).toMatch(type);
      await res.arrayBuffer();
    }
    // The JSON status and 404s are as before.
    expect((await fetch(`${base}/status`)).status).toBe(200);
    expect((await fetch(`${base}/nothing-here`)).status).toBe(404);
  }, 30_000);

  it('streams the charts, the history and then a picture every T; member links share the port', async () => {
    // A replica dials the same port and heartbeats, like a real one.
    const link = new DialingLink({ url: base.replace('http', 'ws'), hello: () => ({ t: 'hello', role: 'replica', id: 'r1', epoch: 1, clusterId: 'freebs' }) });
    const up = new Promise<void>((resolve) => link.once('up', () => resolve()));
    await up;
    link.send({ t: 'heartbeat', id: 'r1', role: 'replica', epoch: 1, state: 'syncing', appliedVersion: 3, durableVersion: 3, view: {} });

    const seen = await listen((s) => records(s).some((r) => r.kind === 'state' && r.node === 'r1') && records(s).filter((r) => r.kind === 'status').length >= 2);
    await link.close();
    const hello = seen[0];
    expect(hello.t).toBe('hello');
    if (hello.t !== 'hello') return;
    expect(hello.charts.map((c) => c.machine)).toEqual(['controller', 'liveness', 'replica', 'driver']);
    expect(hello.source).toBe(`${base}/`);
    const all = records(seen);
    // seq strictly increasing across the history and the live records: nothing missed or doubled.
    for (let i = 1; i < all.length; i++) expect(all[i].seq).toBeGreaterThan(all[i - 1].seq);
    expect(all.some((r) => r.kind === 'event' && r.type === 'epoch')).toBe(true);
    expect(all.some((r) => r.kind === 'state' && r.machine === 'controller' && r.value === 'running')).toBe(true);
    expect(all.some((r) => r.kind === 'state' && r.machine === 'liveness' && r.node === 'r1')).toBe(true);
    expect(all.some((r) => r.kind === 'event' && r.type === 'link' && r.node === 'r1')).toBe(true);
    const r1 = all.find((r) => r.kind === 'state' && r.node === 'r1' && r.machine === 'replica');
    expect(r1).toMatchObject({ value: 'syncing' });
    const status = all.filter((r) => r.kind === 'status').at(-1);
    expect(status?.kind === 'status' && status.cluster.chain).toEqual(['r1', 'r2', 'r3']);
  });

  it('refuses the stream to a page from another origin', async () => {
    await expect(listen(() => true, { origin: 'http://example.com' })).rejects.toThrow(/HTTP 403/);
    const same = await listen((s) => s.length >= 1, { origin: base });
    expect(same[0].t).toBe('hello');
  });

  it('hands out the trace so far as a file the page can load', async () => {
    const res = await fetch(`${base}/viz/trace.json`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-disposition')).toMatch(/attachment; filename="freebs-trace-.*\.json"/);
    const file = (await res.json()) as TraceFile;
    expect(file.format).toBe('freebs-trace');
    expect(file.version).toBe(1);
    expect(file.charts).toHaveLength(4);
    expect(file.records.length).toBeGreaterThan(0);
  });
});

/**
 * The visualizer in a real browser (Debian's chromium, driven by playwright-core) against a real
 * cluster started with `freebs up`: a replica is SIGKILLed while a client writes, and the page
 * must show it going inactive, then failed, the new epoch, and its replacement syncing, then
 * serving — live, and again when each moment is picked on the timeline. A screenshot of each
 * stage goes to test-artifacts/viz/. The run is saved from the page and replayed from the file.
 * Every request the page makes stays on 127.0.0.1.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Browser, Page } from 'playwright-core';
import { afterAll, expect } from 'vitest';
import { NbdClient } from '../../nbd/client.js';
import type { TraceFile } from '../../protocol/trace.js';
import { itWith, requirements } from '../helpers/tools.js';

const chromiumPath = '/usr/bin/chromium';
const needs = requirements({ commands: [chromiumPath] });
const repo = fileURLToPath(new URL('../../', import.meta.url));
const artifacts = path.join(repo, 'test-artifacts', 'viz');
const heartbeatMs = 250;

let up: ChildProcess | null = null;
let browser: Browser | null = null;
let dir: string | null = null;

afterAll(async () => {
  await browser?.close().catch(() => {});
  await stopUp();
  if (dir) {
    await stopLeftovers(dir);
    rmSync(dir, { recursive: true, force: true });
  }
});

/**
 * Members this test started (through `freebs up`) that outlived it, should `up` have died before
 * stopping them: found by PID, as the processes whose command line names this test's own temp
 * directory (mkdtemp: nobody else's), and stopped by that PID.
 */
async function stopLeftovers(ownDir: string): Promise<void> {
  const ours = (): number[] =>
    readdirSync('/proc')
      .filter((p) => /^\d+$/.test(p) && Number(p) !== process.pid)
      .filter((p) => {
        try {
          return readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0').some((a) => a === ownDir || a.startsWith(ownDir + path.sep));
        } catch {
          return false;
        }
      })
      .map(Number);
  const signalAll = (pids: number[], signal: NodeJS.Signals) => pids.forEach((pid) => { try { process.kill(pid, signal); } catch { /* gone */ } });
  let left = ours();
  if (left.length === 0) return;
  console.warn(`stopping ${left.length} leftover member process(es) of ${ownDir}: ${left.join(', ')}`);
  signalAll(left, 'SIGTERM');
  for (let i = 0; i < 50 && (left = ours()).length > 0; i++) await new Promise((r) => setTimeout(r, 100));
  signalAll(left, 'SIGKILL');
}

/** `freebs up` stops its members in order on SIGINT; wait for it to exit (SIGKILL after 30 s). */
async function stopUp(): Promise<void> {
  const child = up;
  up = null;
  if (!child || child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  process.kill(child.pid, 'SIGINT');
  const timer = setTimeout(() => child.pid !== undefined && process.kill(child.pid, 'SIGKILL'), 30_000);
  await exited;
  clearTimeout(timer);
}

function portIsFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

/** `freebs up` puts replica i on base+i: find a base with base+1…base+n free. */
async function freeBasePort(n: number): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const base = await freePort();
    if (base + n > 65535) continue;
    const free = await Promise.all(Array.from({ length: n }, (_, i) => portIsFree(base + i + 1)));
    if (free.every(Boolean)) return base;
  }
  throw new Error('no run of free ports for the replicas');
}

/** Writes 64 KiB blocks (4 in flight) until stopped: IO for the chart and data for the SYNC. */
function startWriter(uri: string): { stop: () => Promise<number> } {
  let running = true;
  let written = 0;
  const done = (async () => {
    const client = await NbdClient.connect(uri);
    const block = Buffer.alloc(64 * 1024, 0xab);
    const span = Math.floor(client.sizeBytes / block.length);
    const worker = async (k: number) => {
      for (let i = k; running; i += 4) {
        await client.write((i % span) * block.length, block);
        written++;
        // Pace it: a few hundred IOPS is plenty, and leaves the CPU to the cluster.
        if (i % 16 === k) await new Promise((r) => setTimeout(r, 10));
      }
    };
    await Promise.all([0, 1, 2, 3].map(worker));
    await client.flush();
    await client.disconnect();
  })();
  return {
    stop: async () => {
      running = false;
      await done;
      return written;
    },
  };
}

const node = (id: string, attrs: Record<string, string>) =>
  `svg.chain [data-node="${id}"]${Object.entries(attrs)
    .map(([k, v]) => `[data-${k}="${v}"]`)
    .join('')}`;

async function shot(page: Page, name: string): Promise<void> {
  await page.screenshot({ path: path.join(artifacts, `${name}.png`), fullPage: true });
}

/** The timeline entries, in order, as the page lists them. */
async function entries(page: Page) {
  // Page functions run in the browser; this file is type-checked without DOM types.
  return page.$$eval('.timeline li.entry', (lis) =>
    lis.map((li) => ({
      seq: Number(li.getAttribute('data-seq')),
      type: li.getAttribute('data-type') ?? '',
      node: li.getAttribute('data-node') ?? '',
      machine: li.getAttribute('data-machine') ?? '',
      value: li.getAttribute('data-value') ?? '',
      text: (li.querySelector('.text')?.textContent ?? '') as string,
    })),
  );
}

/** A number read from the page: an attribute of the first element matching a selector. */
async function numberAt(page: Page, selector: string, attribute: string): Promise<number> {
  return Number(await page.getAttribute(selector, attribute));
}

async function waitForNumber(page: Page, selector: string, attribute: string, above: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const n = await numberAt(page, selector, attribute).catch(() => NaN);
    if (n > above) return;
    if (Date.now() > deadline) throw new Error(`${selector} [${attribute}] stayed at ${n}, not above ${above}, for ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

type Entry = Awaited<ReturnType<typeof entries>>[number];

function findAfter(list: Entry[], afterSeq: number, what: string, match: (e: Entry) => boolean): Entry {
  const found = list.find((e) => e.seq > afterSeq && match(e));
  if (!found) throw new Error(`the timeline has no ${what} after #${afterSeq}:\n${list.map((e) => `#${e.seq} ${e.type} ${e.text}`).join('\n')}`);
  return found;
}

/** Click a timeline entry: the page pauses there and every view shows that moment. */
async function pick(page: Page, e: Entry): Promise<void> {
  await page.click(`.timeline li.entry[data-seq="${e.seq}"]`);
  await page.waitForSelector('#mode[data-mode="paused"], #mode[data-mode="replay"]');
}

itWith(
  needs,
  'shows a killed replica go inactive, then failed, the new epoch, and its replacement syncing then serving',
  async () => {
    mkdirSync(artifacts, { recursive: true });
    dir = mkdtempSync(path.join(os.tmpdir(), 'freebs-viz-'));
    const [controllerPort, nbdPort, driverHttpPort] = [await freePort(), await freePort(), await freePort()];
    const basePort = await freeBasePort(3);
    let output = '';
    up = spawn(
      process.execPath,
      ['--import', 'tsx', path.join(repo, 'cli/freebs.ts'), 'up', '--dir', dir, '--size', '256M',
        '--nbd-port', String(nbdPort), '--base-port', String(basePort), '--controller-port', String(controllerPort),
        '--driver-http-port', String(driverHttpPort), '--heartbeat-ms', String(heartbeatMs)],
      { cwd: repo, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    up.stdout!.on('data', (c: Buffer) => (output += c.toString()));
    up.stderr!.on('data', (c: Buffer) => (output += c.toString()));
    const pageUrl = `http://127.0.0.1:${controllerPort}/`;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`freebs up was not up within 45 s:\n${output}`)), 45_000);
      const check = () => {
        if (!output.includes('FreEBS is up')) return;
        clearTimeout(timer);
        up!.stdout!.off('data', check);
        resolve();
      };
      up!.stdout!.on('data', check);
      up!.once('exit', (code, signal) => reject(new Error(`freebs up exited (${signal ?? code}):\n${output}`)));
    });
    // The banner names the page.
    expect(output).toMatch(new RegExp(`visualizer: +${pageUrl.replace(/[.]/g, '\\.')}`));

    const { chromium } = await import('playwright-core');
    browser = await chromium.launch({
      executablePath: chromiumPath,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
    });
    const page = await browser.newPage({ viewport: { width: 1600, height: 1200 }, acceptDownloads: true });
    const outside: string[] = [];
    const pageErrors: string[] = [];
    page.on('request', (r) => {
      const u = new URL(r.url());
      if (u.hostname !== '127.0.0.1' && u.protocol !== 'blob:' && u.protocol !== 'data:') outside.push(r.url());
    });
    page.on('pageerror', (e) => pageErrors.push(e.message));
    page.on('console', (m) => m.type() === 'error' && pageErrors.push(m.text()));
    await page.goto(pageUrl);

    // Stage 1: all serving, the statecharts drawn, I/O on the chart.
    await page.waitForSelector('#connection[data-state="open"]');
    for (const id of ['r1', 'r2', 'r3']) await page.waitForSelector(node(id, { liveness: 'active', state: 'serving' }), { timeout: 15_000 });
    await page.waitForSelector(node('driver', { liveness: 'active', state: 'attached' }));
    await page.waitForSelector('#charts[data-ready="true"] svg.chart[data-machine="replica"] .state.current[data-state-id="replica.serving"]', { timeout: 15_000 });
    expect(await page.$$eval('svg.chart', (s) => s.map((x) => x.getAttribute('data-machine')))).toEqual(['controller', 'liveness', 'replica', 'driver']);
    const epochBefore = Number(await page.getAttribute('#epoch', 'data-epoch'));
    const writer = startWriter(`nbd://127.0.0.1:${nbdPort}/freebs`);
    await waitForNumber(page, '.io .value[data-series="iops"]', 'data-value', 0, 15_000);
    await shot(page, '1-healthy');

    // Kill the middle replica: no goodbye, no flush. (What the timeline said before is not part
    // of this story: on a loaded machine a member may have been slow to report in at boot.)
    const beforeKill = Math.max(0, ...(await entries(page)).map((e) => e.seq));
    const victim = 'r2';
    const pid = Number(readFileSync(path.join(dir, victim, 'replica.pid'), 'utf8'));
    expect(readFileSync(`/proc/${pid}/cmdline`, 'utf8')).toContain(path.join(dir, victim));
    process.kill(pid, 'SIGKILL');

    // Live: failed, a new epoch without it, and a replacement that ends up serving at the tail.
    await page.waitForSelector(node(victim, { liveness: 'failed' }), { timeout: 15_000 });
    await waitForNumber(page, '#epoch', 'data-epoch', epochBefore, 15_000);
    // The replacement: a new id, serving at the tail.
    const tail = 'svg.chain [data-role="tail"][data-state="serving"][data-liveness="active"]:not([data-node="r1"]):not([data-node="r2"]):not([data-node="r3"])';
    await page.waitForSelector(tail, { timeout: 40_000 });
    const newcomer = (await page.getAttribute(tail, 'data-node'))!;
    const written = await writer.stop();
    expect(written).toBeGreaterThan(0);

    // The story, in order, on the timeline.
    const list = await entries(page);
    const inactive = findAfter(list, beforeKill, `${victim} inactive`, (e) => e.type === 'liveness' && e.node === victim && e.text.includes('inactive'));
    const failed = findAfter(list, inactive.seq, `${victim} failed`, (e) => e.type === 'liveness' && e.node === victim && e.text.includes('failed'));
    const epoch = findAfter(list, failed.seq, 'a new epoch', (e) => e.type === 'epoch' && e.text.includes(`without ${victim}`));
    const syncing = findAfter(list, epoch.seq, `${newcomer} syncing`, (e) => e.type === 'state' && e.machine === 'replica' && e.node === newcomer && e.value === 'syncing');
    const serving = findAfter(list, syncing.seq, `${newcomer} serving`, (e) => e.type === 'state' && e.machine === 'replica' && e.node === newcomer && e.value === 'serving');
    findAfter(list, syncing.seq - 1, `${newcomer}'s sync-end`, (e) => e.type === 'sync-end' && e.node === newcomer);
    const missed = findAfter(list, beforeKill, `${victim}'s missed heartbeat`, (e) => e.type === 'heartbeat-missed' && e.node === victim);
    expect(missed.seq, 'the missed heartbeat is told before the member is inactive').toBeLessThan(inactive.seq);

    // Each stage again, picked on the timeline: the page shows that moment.
    await pick(page, inactive);
    await page.waitForSelector(node(victim, { liveness: 'inactive' }));
    await page.waitForSelector(`svg.chart[data-machine="liveness"] .badge[data-node="${victim}"][data-state-id^="liveness.inactive"]`);
    await shot(page, '2-inactive');

    await pick(page, failed);
    await page.waitForSelector(node(victim, { liveness: 'failed' }));
    await page.waitForSelector(`#machine-table tr[data-machine="liveness"][data-node="${victim}"][data-value="failed"]`);
    await shot(page, '3-failed');

    await pick(page, epoch);
    const epochNumber = Number(/epoch (\d+)/.exec(epoch.text)![1]);
    await page.waitForSelector(`#epoch[data-epoch="${epochNumber}"]`);
    await page.waitForSelector(node(victim, { role: 'retired' }));
    await shot(page, '4-new-epoch');

    await pick(page, syncing);
    await page.waitForSelector(node(newcomer, { state: 'syncing' }));
    await shot(page, '5-replacement-syncing');

    await pick(page, serving);
    await page.waitForSelector(node(newcomer, { state: 'serving' }));
    await shot(page, '6-replacement-serving');

    // Back to live, then save the run and replay it from the file.
    await page.click('#live-toggle');
    await page.waitForSelector('#mode[data-mode="live"]');
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('#save')]);
    const saved = path.join(artifacts, 'run.json');
    await download.saveAs(saved);
    const file = JSON.parse(readFileSync(saved, 'utf8')) as TraceFile;
    expect(file.format).toBe('freebs-trace');
    expect(file.charts.map((c) => c.machine)).toEqual(['controller', 'liveness', 'replica', 'driver']);
    expect(file.records.some((r) => r.seq === failed.seq)).toBe(true);

    await page.setInputFiles('#load', saved);
    await page.waitForSelector('#mode[data-mode="replay"]');
    const replayed = await entries(page);
    expect(replayed.map((e) => e.seq)).toEqual(expect.arrayContaining([inactive.seq, failed.seq, epoch.seq, syncing.seq, serving.seq]));
    await pick(page, replayed.find((e) => e.seq === failed.seq)!);
    await page.waitForSelector(node(victim, { liveness: 'failed' }));
    await shot(page, '7-replay');

    expect(outside).toEqual([]);
    expect(pageErrors).toEqual([]);
    await browser.close();
    browser = null;
    await stopUp();
  },
  { timeout: 120_000 },
);

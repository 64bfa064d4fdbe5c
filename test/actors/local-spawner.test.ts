/**
 * LocalSpawner against real processes: a replacement a killed controller left still starting
 * (no replica.pid yet) is stopped before the new one starts on its directory.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { LocalSpawner } from '../../actors/local-spawner.js';
import { stopMember } from '../../actors/member-process.js';

const cleanups: Array<() => Promise<unknown> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

describe('LocalSpawner', () => {
  it('stops a replica of the directory that is still starting (no replica.pid yet), then starts its own', async () => {
    const dataDir = mkdtempSync(path.join(os.tmpdir(), 'freebs-spawner-'));
    cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));
    // What a replacement looks like before it has opened its store: `… replica --dir DIR/r9`.
    const leftover = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)', 'replica', '--id', 'r9', '--dir', path.join(dataDir, 'r9')], { stdio: 'ignore' });
    const leftoverExit = new Promise<NodeJS.Signals | number | null>((resolve) => leftover.once('exit', (code, signal) => resolve(signal ?? code)));
    cleanups.push(() => void (leftover.exitCode === null && leftover.signalCode === null && leftover.kill('SIGKILL')));

    const spawner = new LocalSpawner({
      dataDir,
      logDir: path.join(dataDir, 'logs'),
      host: '127.0.0.1',
      sizeBytes: 16 * 1024 * 1024,
      controllerUrl: () => 'ws://127.0.0.1:9', // none there: the replica starts all the same
      clusterId: 'spawner-test',
      heartbeatMs: 500,
    });
    cleanups.push(() => Promise.all(spawner.processes.map((m) => stopMember(m))));
    const member = await spawner.spawn('r9');
    expect(member.id).toBe('r9');
    expect(member.url).toMatch(/^ws:\/\/127\.0\.0\.1:\d+$/);
    // Stopped before the new one started (it is reaped by now, or a moment later).
    const stillRunning = new Promise<string>((resolve) => setTimeout(() => resolve('still running'), 5000).unref());
    expect(await Promise.race([leftoverExit, stillRunning])).toBe('SIGTERM');
  });
});

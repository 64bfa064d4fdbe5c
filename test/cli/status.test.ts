/**
 * `freebs status`: the table an operator reads, --json for tools, and a clear error when the
 * controller cannot be reached. The CLI runs as a real process against a small HTTP server that
 * answers /status like a controller (the failover e2e test runs it against a real one).
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ControllerStatus } from '../../actors/controller.js';
import { formatStatus, statusUrl } from '../../cli/status.js';
import { ProcessTracker } from '../helpers/processes.js';

const status: ControllerStatus = {
  clusterId: 'freebs',
  volume: { name: 'vol', sizeBytes: 64 * 1024 * 1024 },
  epoch: 3,
  tick: 40,
  chain: ['r2', 'r3', 'r4'],
  driverId: 'driver',
  lease: { driverId: 'driver', expiresAtTick: 50, expiresInMs: 2500 },
  replicaCount: 3,
  quorum: 2,
  pendingReplacements: [],
  members: {
    r1: { role: 'retired', liveness: 'failed', replicaState: 'serving', caughtUp: false, appliedVersion: 1200, durableVersion: 1100, lagVersions: null, epoch: 1, msSinceHeartbeat: 6500 },
    driver: { role: 'driver', liveness: 'active', replicaState: 'attached', caughtUp: false, appliedVersion: 4650, durableVersion: 4600, lagVersions: null, epoch: 3, msSinceHeartbeat: 250 },
    r4: { role: 'tail', liveness: 'active', replicaState: 'syncing', caughtUp: false, appliedVersion: 3000, durableVersion: 2900, lagVersions: 1658, epoch: 3, msSinceHeartbeat: 0 },
    r3: { role: 'middle', liveness: 'inactive', replicaState: 'serving', caughtUp: true, appliedVersion: 4658, durableVersion: 4600, lagVersions: 0, epoch: 3, msSinceHeartbeat: 750 },
    r2: { role: 'head', liveness: 'active', replicaState: 'serving', caughtUp: true, appliedVersion: 4658, durableVersion: 4658, lagVersions: 0, epoch: 3, msSinceHeartbeat: null },
  },
};

const procs = new ProcessTracker();
let server: Server;
let url: string;

beforeAll(async () => {
  server = createServer((req, res) => {
    if (req.url === '/status') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(status));
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  await procs.stopAll();
  await new Promise((resolve) => server.close(resolve));
});

const freebs = (...args: string[]) => procs.run(process.execPath, ['--import', 'tsx', 'cli/freebs.ts', ...args], { timeoutMs: 30_000 });

describe('freebs status', () => {
  it('prints every member: chain in order, then the driver and the retired, with liveness, state, version, lag, epoch and silence', () => {
    const lines = formatStatus(status).trimEnd().split('\n');
    expect(lines.slice(0, 3)).toEqual([
      'cluster freebs, volume vol (64 MiB), epoch 3',
      'chain r2 → r3 → r4: 3 of 3 replicas, writes need 2',
      'driver driver, lease 2500 ms left',
    ]);
    const table = lines.slice(4);
    expect(table[0].split(/\s+/)).toEqual(['MEMBER', 'ROLE', 'LIVENESS', 'STATE', 'VERSION', 'DURABLE', 'LAG', 'EPOCH', 'HEARTBEAT']);
    expect(table.slice(1).map((l) => l.split(/\s+/)[0])).toEqual(['r2', 'r3', 'r4', 'driver', 'r1']);
    expect(table[1]).toMatch(/^r2 +head +active +serving +4658 +4658 +0 +3 +never$/);
    expect(table[2]).toMatch(/^r3 +middle +inactive +serving +4658 +4600 +0 +3 +750 ms ago$/);
    expect(table[3]).toMatch(/^r4 +tail +active +syncing \(not caught up\) +3000 +2900 +1658 +3 +0 ms ago$/);
    expect(table[4]).toMatch(/^driver +driver +active +attached +4650 +4600 +- +3 +250 ms ago$/);
    expect(table[5]).toMatch(/^r1 +retired +failed +serving +1200 +1100 +- +1 \(behind\) +6500 ms ago$/);
    // Columns line up.
    const at = table[0].indexOf('EPOCH');
    for (const row of table.slice(1)) expect(row.slice(at - 2, at)).toBe('  ');
  });

  it('takes the controller address as operators write it', () => {
    expect(statusUrl('http://10.0.0.5:8080')).toBe('http://10.0.0.5:8080/status');
    expect(statusUrl('ws://127.0.0.1:9000')).toBe('http://127.0.0.1:9000/status');
    expect(statusUrl('wss://ctl.example:443/')).toBe('https://ctl.example/status');
    expect(statusUrl('127.0.0.1:8080')).toBe('http://127.0.0.1:8080/status');
    expect(() => statusUrl('ftp://x')).toThrow(/not a controller address/);
  });

  it('as a command: the table, --json, and a clear error (exit 1) when the controller is unreachable', async () => {
    const closed = await new Promise<number>((resolve) => {
      const s = createServer().listen(0, '127.0.0.1', () => {
        const { port } = s.address() as AddressInfo;
        s.close(() => resolve(port));
      });
    });
    const [table, json, down] = await Promise.all([
      freebs('status', '--controller', url),
      freebs('status', '--controller', url.replace('http:', 'ws:'), '--json'),
      freebs('status', '--controller', `127.0.0.1:${closed}`),
    ]);
    expect(table.code, table.stderr).toBe(0);
    expect(table.stdout).toBe(formatStatus(status));
    expect(json.code, json.stderr).toBe(0);
    expect(JSON.parse(json.stdout)).toEqual(status);
    expect(down.code).toBe(1);
    expect(down.stdout).toBe('');
    expect(down.stderr).toMatch(new RegExp(`freebs status: cannot reach the controller at http://127\\.0\\.0\\.1:${closed}/status \\(ECONNREFUSED\\); is it running\\?`));
  });
});

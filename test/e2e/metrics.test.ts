/**
 * Prometheus /metrics on a running cluster: scraped before and after real IO (qemu-io through
 * the driver), the counters must move by what was done.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { spawnMember, stopMember, waitForLine } from '../../actors/member-process.js';
import { startCluster, type TestCluster } from '../helpers/cluster.js';
import { ProcessTracker, waitUntil } from '../helpers/processes.js';
import { itWith, requirements } from '../helpers/tools.js';

const MiB = 1024 * 1024;
const procs = new ProcessTracker();
let cluster: TestCluster | undefined;

afterEach(async () => {
  await cluster?.stop();
  cluster = undefined;
});
afterAll(() => procs.stopAll());

/** Prometheus text format → value of one series (name plus exact labels, in any order). */
async function scrape(url: string): Promise<(name: string, labels?: Record<string, string>) => number | undefined> {
  const res = await fetch(`${url}/metrics`);
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toMatch(/text\/plain/);
  const text = await res.text();
  const series = new Map<string, number>();
  for (const line of text.split('\n')) {
    const m = /^(\w+)(?:\{([^}]*)\})? (\S+)$/.exec(line);
    if (!m) continue;
    const labels = (m[2] ?? '')
      .split(/,(?=\w+=")/)
      .filter(Boolean)
      .map((kv) => kv.replace(/"/g, ''))
      .filter((kv) => !kv.startsWith('role=') && !kv.startsWith('member='))
      .sort()
      .join(',');
    series.set(`${m[1]}{${labels}}`, Number(m[3]));
  }
  return (name, labels = {}) => {
    const key = Object.entries(labels).map(([k, v]) => `${k}=${v}`).sort().join(',');
    return series.get(`${name}{${key}}`);
  };
}

describe('metrics', () => {
  itWith(requirements({ commands: ['qemu-io'] }), 'driver and replica counters move with IO', async () => {
    cluster = await startCluster({ sizeBytes: 64 * MiB });
    const c = cluster;
    const replicaUrl = `http://127.0.0.1:${c.replicas[1].port}`;
    const driverBefore = await scrape(c.driverHttpUrl);
    const replicaBefore = await scrape(replicaUrl);
    const writesBefore = driverBefore('freebs_io_requests_total', { op: 'write' }) ?? 0;
    const appliedBefore = replicaBefore('freebs_replica_applied_version') ?? -1;
    expect(driverBefore('freebs_epoch')).toBe(1);
    expect(driverBefore('freebs_process_resident_memory_bytes')).toBeGreaterThan(0);

    // 16 writes of 64 KiB, one flush, 4 reads of 64 KiB.
    const cmds = [];
    for (let i = 0; i < 16; i++) cmds.push('-c', `write -P 0x${(i + 1).toString(16)} ${i * 65536} 64k`);
    cmds.push('-c', 'flush');
    for (let i = 0; i < 4; i++) cmds.push('-c', `read -P 0x${(i + 1).toString(16)} ${i * 65536} 64k`);
    const io = await procs.run('qemu-io', ['-f', 'raw', ...cmds, c.nbdUri], { timeoutMs: 60_000 });
    expect(io.stdout + io.stderr).not.toMatch(/error|failed|mismatch/i);
    expect(io.code).toBe(0);

    const driver = await scrape(c.driverHttpUrl);
    expect(driver('freebs_io_requests_total', { op: 'write' })! - writesBefore).toBe(16);
    expect(driver('freebs_io_bytes_total', { op: 'write' })).toBeGreaterThanOrEqual(MiB);
    expect(driver('freebs_io_requests_total', { op: 'read' })).toBeGreaterThanOrEqual(4);
    expect(driver('freebs_io_requests_total', { op: 'flush' })).toBeGreaterThanOrEqual(1);
    expect(driver('freebs_io_seconds_count', { op: 'write' })).toBeGreaterThanOrEqual(16);
    expect(driver('freebs_io_errors_total', { op: 'write', code: 'EIO' })).toBeUndefined();
    const committed = driver('freebs_driver_committed_version')!;
    expect(committed).toBeGreaterThanOrEqual(16);
    expect(driver('freebs_replica_link_up', { replica: 'r1' })).toBe(1);

    const replica = await scrape(replicaUrl);
    expect(replica('freebs_replica_applied_version')! - appliedBefore).toBeGreaterThanOrEqual(16);
    expect(replica('freebs_replica_durable_version')).toBeGreaterThanOrEqual(16);
    expect(replica('freebs_replica_state', { state: 'serving' })).toBe(1);
  });

  it('the controller exports epoch, chain length and member liveness', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'freebs-metrics-'));
    const controller = spawnMember('controller', [
      'controller', '--dir', dir, '--chain', 'r1=ws://127.0.0.1:1,r2=ws://127.0.0.1:2,r3=ws://127.0.0.1:3',
      '--size', String(64 * MiB), '--port', '0', '--no-spawn', '--heartbeat-ms', '100',
    ], path.join(dir, 'logs'));
    try {
      const line = await waitForLine(controller, /^controller listening on ws:\/\/[\d.]+:(\d+)/);
      const url = `http://127.0.0.1:${/:(\d+) /.exec(line)![1]}`;
      const m = await scrape(url);
      expect(m('freebs_epoch')).toBe(1);
      expect(m('freebs_chain_length')).toBe(3);
      // No member ever sends a heartbeat: once the controller's boot grace is over, each is
      // counted inactive (after 2T).
      const missed = await waitUntil(async () => (await scrape(url))('freebs_heartbeats_missed_total', { peer: 'r1' }), 'a missed heartbeat to be counted', 10_000, 100);
      expect(missed).toBeGreaterThanOrEqual(1);
    } finally {
      await stopMember(controller);
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

/**
 * Chain replication end to end: three replica processes and the driver, started with the real
 * `freebs` commands, driven by real NBD clients (fio with verification, qemu-io). Afterwards
 * every replica's LSVD is opened and the content hashes compared.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, describe, expect } from 'vitest';
import { openLsvdStore } from '../../actors/lsvd-store.js';
import { createLogger } from '../../actors/logger.js';
import { startCluster, type TestCluster } from '../helpers/cluster.js';
import { fioJobs } from '../helpers/fio.js';
import { ProcessTracker, waitUntil } from '../helpers/processes.js';
import { itWith, requirements } from '../helpers/tools.js';

const MiB = 1024 * 1024;
const procs = new ProcessTracker();
let cluster: TestCluster | undefined;
const quiet = createLogger('test', 'warn');

afterEach(async () => {
  await cluster?.stop();
  cluster = undefined;
});
afterAll(() => procs.stopAll());

interface ReplicaStatus {
  id: string;
  state: string;
  appliedVersion: number;
  durableVersion: number;
}

async function replicaStatus(port: number): Promise<ReplicaStatus | null> {
  try {
    const res = await fetch(`http://127.0.0.1:${port}/status`);
    return (await res.json()) as ReplicaStatus;
  } catch {
    return null;
  }
}

/** Wait until every replica serves at the same version. */
async function converged(c: TestCluster, timeoutMs = 30_000): Promise<number> {
  return waitUntil(
    async () => {
      const all = await Promise.all(c.replicas.map((r) => replicaStatus(r.port)));
      if (all.some((s) => !s || s.state !== 'serving')) return null;
      const versions = new Set(all.map((s) => s!.appliedVersion));
      return versions.size === 1 ? [...versions][0] || -1 : null;
    },
    'every replica serving at the same version',
    timeoutMs,
    100,
  );
}

/** Stop the cluster, open each replica's store, and return the content hashes. */
async function contentHashes(c: TestCluster): Promise<string[]> {
  await c.stop({ keepData: true });
  const hashes: string[] = [];
  for (const r of c.replicas) {
    const store = await openLsvdStore(r.dir, undefined, quiet);
    hashes.push(await store.contentHash());
    await store.close();
  }
  rmSync(c.dir, { recursive: true, force: true });
  return hashes;
}

function fioArgs(uri: string, extra: string[]): string[] {
  return ['--name=verify', '--ioengine=nbd', `--uri=${uri}`, '--rw=randwrite', '--bs=4k', '--iodepth=16', '--verify=crc32c', '--verify_fatal=1', '--verify_state_save=0', '--output-format=json', ...extra];
}

const fio = requirements({ commands: ['fio'] });
const qemu = requirements({ commands: ['qemu-io'] });

describe('chain replication across three processes', () => {
  itWith(fio, 'fio verify through the driver; afterwards the three replicas are identical', async () => {
    cluster = await startCluster({ sizeBytes: 128 * MiB });
    const r = await procs.run('fio', fioArgs(cluster.nbdUri, ['--size=32M']), { timeoutMs: 120_000 });
    expect(r.stderr + r.stdout).not.toMatch(/verify: bad|error=/i);
    expect(r.code).toBe(0);
    const job = fioJobs(r.stdout)[0];
    expect(job.error).toBe(0);
    expect(job.write.total_ios).toBe(8192);
    const version = await converged(cluster);
    expect(version).toBeGreaterThanOrEqual(8192);
    const hashes = await contentHashes(cluster);
    cluster = undefined;
    expect(new Set(hashes).size).toBe(1);
  });

  itWith(fio, 'a replica killed mid-write and restarted syncs and ends identical, with no client error', async () => {
    cluster = await startCluster({ sizeBytes: 128 * MiB });
    const c = cluster;
    const run = procs.run('fio', fioArgs(c.nbdUri, ['--size=48M', '--time_based', '--runtime=8']), { timeoutMs: 120_000 });
    await new Promise((r) => setTimeout(r, 2000));
    c.signal('r2', 'SIGKILL');
    await new Promise((r) => setTimeout(r, 2000));
    await c.restart('r2');
    const result = await run;
    expect(result.code).toBe(0);
    const job = fioJobs(result.stdout)[0];
    expect(job.error).toBe(0);
    await converged(c);
    const hashes = await contentHashes(c);
    cluster = undefined;
    expect(new Set(hashes).size).toBe(1);
  });

  itWith(fio, 'a replica whose write buffer fills (a slow disk) holds the writes, stops reading its predecessor past a bound, and ends identical', async () => {
    // r3: 2 MiB of write buffer in front of a disk that takes 30 ms per write: 1 MiB writes at QD8
    // fill it at once. A full buffer used to stop the replica taking writes for good; and the
    // writes waiting for it grew without bound while r2 forwarded at its own disk's speed.
    const faults = path.join(mkdtempSync(path.join(os.tmpdir(), 'freebs-slow-')), 'r3.json');
    writeFileSync(faults, JSON.stringify({ writeDelayMs: 30 }));
    cluster = await startCluster({ sizeBytes: 128 * MiB, replicaArgs: (id) => (id === 'r3' ? ['--write-buffer', '2M', '--disk-faults', faults] : []) });
    const r = await procs.run(
      'fio',
      ['--name=seq', '--ioengine=nbd', `--uri=${cluster.nbdUri}`, '--rw=write', '--bs=1m', '--iodepth=8', '--size=48M',
        '--verify=crc32c', '--verify_fatal=1', '--verify_state_save=0', '--output-format=json'],
      { timeoutMs: 120_000 },
    );
    expect(r.code).toBe(0);
    expect(fioJobs(r.stdout)[0].error).toBe(0);
    await converged(cluster, 60_000);
    const r3log = readFileSync(path.join(cluster.dir, 'logs', 'r3.log'), 'utf8');
    expect(r3log).toContain('store write buffer full: writes wait for the disk');
    expect(r3log).toContain('store took the writes that waited for room');
    // Past a write buffer's worth of waiting writes r3 stops reading from r2, and reads again.
    expect(r3log).toContain('store behind: reading from the predecessor paused');
    expect(r3log).toContain('store caught up: reading from the predecessor again');
    expect(r3log).not.toContain('replica stops taking writes');
    const hashes = await contentHashes(cluster);
    cluster = undefined;
    expect(new Set(hashes).size).toBe(1);
    rmSync(path.dirname(faults), { recursive: true, force: true });
  });

  itWith(qemu, 'two of three down: writes fail with EIO, reads still served; back up, everything heals', async () => {
    cluster = await startCluster({ sizeBytes: 64 * MiB });
    const c = cluster;
    const io = (...cmds: string[]) => procs.run('qemu-io', ['-f', 'raw', ...cmds.flatMap((x) => ['-c', x]), c.nbdUri], { timeoutMs: 60_000 });
    expect((await io('write -P 0x5a 0 1M')).code).toBe(0);
    c.signal('r2', 'SIGKILL');
    c.signal('r3', 'SIGKILL');
    await new Promise((r) => setTimeout(r, 2500));
    const write = await io('write -P 0x77 1M 64k');
    expect(write.stdout + write.stderr).toMatch(/Input\/output error|failed/i);
    const read = await io('read -P 0x5a 0 1M');
    expect(read.stdout + read.stderr).not.toMatch(/error|failed|mismatch/i);
    expect(read.code).toBe(0);
    await c.restart('r2');
    await c.restart('r3');
    await waitUntil(async () => (await io('write -P 0x66 2M 64k')).code === 0, 'writes to succeed again', 20_000, 500);
    expect((await io('read -P 0x66 2M 64k')).code).toBe(0);
    await converged(c);
    const hashes = await contentHashes(c);
    cluster = undefined;
    expect(new Set(hashes).size).toBe(1);
  });
});

/**
 * ext4 through the driver of a 3-replica cluster (real processes): mkfs (which discards the
 * whole device), files written, everything detached and attached again, files read back,
 * fsck clean; afterwards the three replicas hold identical content.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect } from 'vitest';
import { createLogger } from '../../actors/logger.js';
import { openLsvdStore } from '../../actors/lsvd-store.js';
import { CleanupStack } from '../helpers/cleanup.js';
import { startCluster, type TestCluster } from '../helpers/cluster.js';
import { ext4Needs, ext4RoundTrip } from '../helpers/ext4-roundtrip.js';
import { ProcessTracker } from '../helpers/processes.js';
import { itWith } from '../helpers/tools.js';

const MiB = 1024 * 1024;
const procs = new ProcessTracker();
const cleanup = new CleanupStack();
let cluster: TestCluster | undefined;

afterAll(async () => {
  try {
    await cleanup.runAll();
  } finally {
    await procs.stopAll();
    await cluster?.stop();
  }
});

describe('ext4 on the replicated volume', () => {
  itWith(ext4Needs, 'mkfs, write, detach, re-attach, read back, fsck clean; replicas identical', async () => {
    cluster = await startCluster({ sizeBytes: 256 * MiB });
    const dir = mkdtempSync(path.join(os.tmpdir(), 'freebs-ext4-'));
    cleanup.defer(`rm ${dir}`, () => rmSync(dir, { recursive: true, force: true }));
    await ext4RoundTrip({ uri: cluster.nbdUri, sizeBytes: 256 * MiB, dir, procs, cleanup });

    const c = cluster;
    await c.stop({ keepData: true });
    cluster = undefined;
    const hashes: string[] = [];
    for (const r of c.replicas) {
      const store = await openLsvdStore(r.dir, undefined, createLogger('test', 'warn'));
      hashes.push(await store.contentHash());
      await store.close();
    }
    rmSync(c.dir, { recursive: true, force: true });
    expect(new Set(hashes).size).toBe(1);
  });
});

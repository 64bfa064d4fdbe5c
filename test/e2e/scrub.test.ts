/**
 * `freebs scrub` against a real cluster (controller, three replicas, driver; T = 250 ms): data is
 * written through NBD, then bytes of a live record in the tail's log are flipped on disk while it
 * runs. The scrub must name the tail and the damaged range (exit 1), `--repair --dir` must replace
 * it (the controller starts a fresh replica that SYNCs) and scrub clean (exit 0), and the data must
 * still read back as written.
 */
import { rmSync } from 'node:fs';
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { corruptRecord } from '../../actors/corrupt.js';
import { FaultCluster } from '../../actors/fault-cluster.js';
import { chainWhole, type ScrubReport } from '../../actors/scrub.js';
import { NbdClient } from '../../nbd/client.js';
import { ProcessTracker, waitUntil } from '../helpers/processes.js';
import { patternBytes } from '../storage/helpers.js';

const MiB = 1024 * 1024;
const procs = new ProcessTracker();
let cluster: FaultCluster | null = null;
let dir = '';

afterAll(async () => {
  await procs.stopAll();
  await cluster?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('freebs scrub', () => {
  it('finds the replica whose log was damaged, repairs it, and then all agree', async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'freebs-scrub-'));
    cluster = await FaultCluster.start({ dir, replicas: 3, sizeBytes: 64 * MiB, heartbeatMs: 250 });
    const c = cluster;
    const whole = await waitUntil(async () => {
      const s = await c.status();
      return s && chainWhole(s) ? s : null;
    }, 'a whole chain', 30_000, 100);
    const client = await NbdClient.connect(c.nbdUri);
    const data = patternBytes(9, 1, 3 * MiB);
    await client.write(0, data);
    await client.write(5 * MiB, data.subarray(0, MiB));
    await client.write(0, data.subarray(0, 64 * 1024)); // later records: the damaged one is mid-log
    await client.flush();
    const tail = whole.chain[2];
    const hit = await corruptRecord(c.replicaDir(tail), { offsetBytes: 5 * MiB, lengthBytes: MiB });
    expect(hit.offsetBytes).toBe(5 * MiB);

    const cli = ['--import', 'tsx', 'cli/freebs.ts', 'scrub', '--controller', c.controllerUrl];
    const check = await procs.run(process.execPath, [...cli, '--json'], { timeoutMs: 60_000 });
    expect(check.code, check.stderr).toBe(1);
    const { report } = JSON.parse(check.stdout) as { report: ScrubReport };
    expect(report.bad).toEqual([tail]);
    expect(report.differences[tail]).toEqual([{ offsetBytes: 5 * MiB, lengthBytes: MiB }]);
    expect(report.chunksCompared).toBe(4);

    c.expectExit(tail);
    const repair = await procs.run(process.execPath, [...cli, '--repair', '--dir', dir], { timeoutMs: 90_000 });
    expect(repair.code, `${repair.stdout}\n${repair.stderr}`).toBe(0);
    expect(repair.stdout).toMatch(new RegExp(`replaced ${tail} \\(its data is in .*${tail}\\.scrub-`));
    expect(repair.stdout).toMatch(/after the repair:[\s\S]*agrees[\s\S]*agrees[\s\S]*agrees/);
    const after = await c.status();
    expect(after?.chain).not.toContain(tail);
    expect((await client.read(5 * MiB, MiB)).equals(data.subarray(0, MiB))).toBe(true);
    expect((await client.read(MiB, 2 * MiB)).equals(data.subarray(MiB))).toBe(true);
    await client.disconnect();
  });
});

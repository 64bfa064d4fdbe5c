/**
 * ext4 over nbdfuse + loop on the NBD server running in this process (see
 * test/helpers/ext4-roundtrip.ts for the steps and why files move with child processes).
 */
import { afterAll, beforeAll, describe, expect } from 'vitest';
import { CleanupStack } from '../helpers/cleanup.js';
import { ext4Needs, ext4RoundTrip } from '../helpers/ext4-roundtrip.js';
import { startNbdServer, type TestNbdServer } from '../helpers/nbd-server.js';
import { ProcessTracker } from '../helpers/processes.js';
import { itWith } from '../helpers/tools.js';

const MiB = 1024 * 1024;
const procs = new ProcessTracker();
const cleanup = new CleanupStack();
let srv: TestNbdServer | undefined;

beforeAll(async () => {
  if (ext4Needs.missing === undefined) srv = await startNbdServer({ sizeBytes: 256 * MiB });
});

afterAll(async () => {
  try {
    await cleanup.runAll();
  } finally {
    await procs.stopAll();
    await srv?.close();
  }
});

describe('ext4 over nbdfuse + loop', () => {
  itWith(ext4Needs, 'mkfs, write, detach everything, re-attach, read back, fsck clean', async () => {
    const s = srv!;
    let readBefore = 0;
    await ext4RoundTrip(
      { uri: s.uri, sizeBytes: 256 * MiB, dir: s.dir, procs, cleanup },
      {
        written: (totalBytes) => {
          expect(s.server.metrics().bytesWritten).toBeGreaterThan(totalBytes);
          readBefore = s.server.metrics().bytesRead;
        },
        readBack: (totalBytes) => {
          expect(s.server.metrics().bytesRead - readBefore).toBeGreaterThan(totalBytes);
        },
      },
    );
    expect(s.server.metrics().requestErrors).toBe(0);
  });
});

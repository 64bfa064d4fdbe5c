/**
 * Seeds that found bugs in actors/ (the simulator mirrors actors/replica.ts and forwarder.ts in
 * sim/replica.ts). Each failed before its fix, in the way named; they stay as regression seeds.
 *
 * Seeds pin the simulator's draws: a change to sim/ may move a bug to another seed, so these
 * guard the fix only as long as the draws stay; the wider seed ranges guard the rest.
 */
import { describe, expect, it } from 'vitest';
import { runSeed } from '../../sim/run.js';

const cases: Array<{ seed: number; bug: string }> = [
  { seed: 14, bug: "a late 'close' of a successor's old link stopped forwarding on its new one; the successor waited forever" },
  { seed: 46, bug: 'the forwarder stopped for good when an image replaced the log under its cursor; the successor waited forever' },
  { seed: 339, bug: "a second sync-start during an image was queued behind it while its chunks went into the first; the replica never left 'syncing'" },
  {
    seed: 3537,
    bug: "the answer to a SYNC of the previous epoch, arriving after a new config, was taken as the current one: the replica went 'serving', refused the stream's writes as stale and never asked again",
  },
  {
    seed: 8750,
    bug: "a new sync-start during an older image's commit let a newer image commit first and the older one over it: the store fell back to the older version while the machine, serving, still acked the newer one as durable",
  },
  { seed: 8923, bug: "the driver refused a write as quorum lost right after a majority of links came back, until its next tick cleared the mark ('only 3 of 3 replicas reachable')" },
  {
    seed: 9217,
    bug: "an image the predecessor stopped streaming (its successor left the chain and came back) stayed in progress: the refusal of the next SYNC was queued behind it and the replica never asked again",
  },
];

describe('actor bugs the simulator found, fixed', () => {
  for (const c of cases) {
    it(`seed ${c.seed}: ${c.bug}`, () => {
      const r = runSeed({ seed: c.seed });
      expect(r.failure, `${r.params}\n${r.state}\nreplay: npm run sim -- --seed ${c.seed} --verbose`).toBeNull();
      expect(r.lastVersion).toBeGreaterThan(0);
    });
  }
});

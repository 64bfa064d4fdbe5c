/**
 * Bugs the simulator found in actors/ (not ours to change while others work there): each seed
 * below fails with the actors as they are and passes with the one fix the simulator models
 * (sim/env.ts, ActorPatch). When an actor is fixed, mirror the fix in sim/ (replica.ts follows
 * actors/replica.ts and forwarder.ts), drop its patch, and this test turns into a plain seed.
 *
 * Seeds pin the simulator's current draws: a change to sim/ may move a bug to another seed
 * (`npx tsx sim/cli.ts --seeds 400` lists the failing ones).
 */
import { describe, expect, it } from 'vitest';
import type { ActorPatch } from '../../sim/env.js';
import { runSeed } from '../../sim/run.js';

const cases: Array<{ patch: ActorPatch; seed: number; failure: RegExp; what: string }> = [
  {
    patch: 'stale-successor-down',
    seed: 14,
    failure: /not converged/,
    what: "a late 'close' of a successor's old link stops forwarding on its new one; the successor waits forever",
  },
  {
    patch: 'forwarder-log-truncated',
    seed: 46,
    failure: /not converged/,
    what: 'the forwarder stops for good when an image replaced the log under its cursor; the successor waits forever',
  },
  {
    patch: 'restarted-image-stream',
    seed: 339,
    failure: /r4 is syncing/,
    what: "a second sync-start during an image is queued behind it while its chunks go into the first; the replica never leaves 'syncing'",
  },
];

describe('actor bugs the simulator found', () => {
  for (const c of cases) {
    it(`${c.patch}: ${c.what} (seed ${c.seed})`, () => {
      const asIs = runSeed({ seed: c.seed });
      expect(asIs.failure, 'the actors as they are now pass this seed: fixed? mirror the fix in sim/ and drop the patch').toMatch(c.failure);
      const fixed = runSeed({ seed: c.seed, patches: [c.patch] });
      expect(fixed.failure, fixed.state).toBeNull();
    });
  }
});

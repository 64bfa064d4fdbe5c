/**
 * Shared by the seed files: run a fixed range of seeds of the deterministic simulator (sim/run.ts)
 * and fail with the seed, what broke and the cluster's state. Replay one with
 * `npm run sim -- --seed N --patch-actors --verbose`.
 */
import { expect, it } from 'vitest';
import { allActorPatches } from '../../sim/env.js';
import { runSeed } from '../../sim/run.js';

/**
 * The seeds run with the actor fixes the simulator models (sim/env.ts ActorPatch): the actors as
 * they are fail some seeds for reasons test/sim/actor-bugs.test.ts shows one by one.
 */
export function seedRange(first: number, count: number): void {
  const seeds = Array.from({ length: count }, (_, i) => first + i);
  it.each(seeds)('seed %i: no acknowledged write lost, reads linearizable, replicas converge', (seed) => {
    const r = runSeed({ seed, patches: allActorPatches });
    expect(r.failure, `seed ${seed} (${r.params})\n${r.state}\nreplay: npm run sim -- --seed ${seed} --patch-actors --verbose`).toBeNull();
    // The run did something: writes were applied and reads checked.
    expect(r.lastVersion).toBeGreaterThan(0);
  });
}

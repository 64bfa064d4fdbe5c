/**
 * Shared by the seed files: run a fixed range of seeds of the deterministic simulator (sim/run.ts)
 * and fail with the seed, what broke and the cluster's state. Replay one with
 * `npm run sim -- --seed N --verbose`.
 */
import { expect, it } from 'vitest';
import { runSeed } from '../../sim/run.js';

export function seedRange(first: number, count: number): void {
  const seeds = Array.from({ length: count }, (_, i) => first + i);
  it.each(seeds)('seed %i: no acknowledged write lost, reads linearizable, replicas converge', (seed) => {
    const r = runSeed({ seed });
    expect(r.failure, `seed ${seed} (${r.params})\n${r.state}\nreplay: npm run sim -- --seed ${seed} --verbose`).toBeNull();
    // The run did something: writes were applied and reads checked.
    expect(r.lastVersion).toBeGreaterThan(0);
  });
}

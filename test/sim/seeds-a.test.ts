/**
 * CI's fixed seeds, first half (the other half runs in parallel in seeds-b): each seed drives a
 * 3-replica cluster of the real machines through crashes, partitions, lost links and controller
 * restarts, then checks it heals to identical replicas holding every acknowledged write.
 */
import { describe, expect, it } from 'vitest';
import { runSeed } from '../../sim/run.js';
import { seedRange } from './seeds.js';

describe('simulator: seeds 1…60', () => {
  seedRange(1, 60);
});

describe('simulator: a seed replays exactly', () => {
  it('the same seed, run twice, takes the same steps to the same end', () => {
    const a = runSeed({ seed: 7, trace: true, traceKeep: 50 });
    const b = runSeed({ seed: 7, trace: true, traceKeep: 50 });
    expect([b.steps, b.simMs, b.lastVersion, b.failure, b.state]).toEqual([a.steps, a.simMs, a.lastVersion, a.failure, a.state]);
    expect(b.trace).toEqual(a.trace);
    // And the trace does not change the run.
    const c = runSeed({ seed: 7 });
    expect([c.steps, c.lastVersion]).toEqual([a.steps, a.lastVersion]);
  });
});

/**
 * Scenario files: times in ms, s and T (resolved against the heartbeat period), one action per
 * step, repeats, steps in time order — and errors that name the key at fault.
 */
import { describe, expect, it } from 'vitest';
import { parseDuration, parseScenario, resolveMs, schedule, ScenarioError } from '../../actors/scenario.js';

const errorOf = (doc: unknown): string => {
  try {
    parseScenario(doc, 'test.yaml');
  } catch (err) {
    expect(err).toBeInstanceOf(ScenarioError);
    return (err as Error).message;
  }
  throw new Error('no error');
};

describe('scenarios', () => {
  it('reads times in ms, s and heartbeat periods', () => {
    expect(resolveMs(parseDuration('500ms'), 250)).toBe(500);
    expect(resolveMs(parseDuration('1.5s'), 250)).toBe(1500);
    expect(resolveMs(parseDuration('3T'), 250)).toBe(750);
    expect(resolveMs(parseDuration('4T+1s'), 500)).toBe(3000);
    expect(resolveMs(parseDuration(120), 500)).toBe(120);
    expect(() => parseDuration('2 minutes')).toThrow(/not a time/);
  });

  it('fills in defaults and expands repeats into steps in time order', () => {
    const s = parseScenario(
      {
        duration: '20T',
        steps: [
          { at: '4T', partition: 'head', from: ['driver', 'middle'], repeat: { times: 3, every: '4T' } },
          { at: '6T', heal: 'head', repeat: { times: 3, every: '4T' } },
          { at: '1s', delay: '200ms', to: 'tail' },
          { at: '2s', kill: 'r2' },
        ],
      },
      'x.yaml',
      '/some/where/flap.yaml',
    );
    expect(s).toMatchObject({ name: 'flap', replicas: 3, heartbeatMs: 500, sizeBytes: 64 * 1024 * 1024, workload: { blocks: 2048, queueDepth: 8 } });
    expect(s.expect).toMatchObject({ clientErrors: [], identical: true });
    const order = schedule(s, 250).map((x) => `${x.atMs} ${x.text}`);
    expect(order).toEqual([
      '1000 partition head from driver, middle',
      '1000 delay tail 200ms',
      '1500 heal head',
      '2000 partition head from driver, middle',
      '2000 kill r2',
      '2500 heal head',
      '3000 partition head from driver, middle',
      '3500 heal head',
    ]);
  });

  it('names the bad key in its errors', () => {
    expect(errorOf({ duration: '10T', steps: [{ at: '2s', kill: 'hed' }] })).toMatch(/^steps\[0\]\.kill: expected head, middle, tail/m);
    expect(errorOf({ duration: '10T', steps: [{ at: '2s', kill: 'head', stop: 'tail' }] })).toMatch(/^steps\[0\]: a step has one action, this one has kill and stop/m);
    expect(errorOf({ duration: '10T', steps: [{ at: '2s' }] })).toMatch(/^steps\[0\]: a step needs one action/m);
    expect(errorOf({ duration: '10T', steps: [{ at: '2s', delay: '100ms' }] })).toMatch(/^steps\[0\]\.to: delay needs "to"/m);
    expect(errorOf({ duration: '10T', steps: [{ at: '2s', kill: 'head', from: ['driver'] }] })).toMatch(/^steps\[0\]\.from: "from" does not go with kill/m);
    expect(errorOf({ duration: '10T', steps: [{ at: 'soon', kill: 'head' }] })).toMatch(/^steps\[0\]\.at: "soon" is not a time/m);
    expect(errorOf({ duration: '10T', replicas: 0 })).toMatch(/^replicas: /m);
    expect(errorOf({ duration: '10T', workload: { blockz: 1 } })).toMatch(/^workload: unknown key "blockz"/m);
    expect(errorOf({ steps: [] })).toMatch(/^duration: /m);
    expect(errorOf({ duration: '10T', tmpfs: { third: '4MiB' } })).toMatch(/^tmpfs\.third: /m);
    expect(errorOf({ duration: '10T', steps: [{ at: '2s', 'slow-disk': 'r2' }] })).toMatch(/^steps\[0\]\.latency: slow-disk needs "latency"/m);
    expect(errorOf({ duration: '10T', steps: [{ at: '2s', 'slow-disk': 'driver', latency: '50ms' }] })).toMatch(/^steps\[0\]\.slow-disk: expected head, middle, tail or a replica id/m);
    expect(errorOf({ duration: '10T', steps: [{ at: '2s', kill: 'r2', latency: '50ms' }] })).toMatch(/^steps\[0\]\.latency: "latency" does not go with kill/m);
  });
});

/**
 * The driver's I/O in its heartbeat (HeartbeatFrame.io, for the visualizer): optional, so old
 * peers' heartbeats stay valid; when present, every counter is checked like any wire number.
 */
import { describe, expect, it } from 'vitest';
import type { HeartbeatFrame } from '../../protocol/frames.js';
import { validateFrame } from '../../protocol/validate.js';

const beat: HeartbeatFrame = { t: 'heartbeat', id: 'driver', role: 'driver', epoch: 3, state: 'attached', appliedVersion: 10, durableVersion: 9, view: { r1: 12 } };
const io = { ops: 100, readBytes: 4096, writeBytes: 8192, errors: 0, windowOps: 7, latencyMsP50: 0.4, latencyMsP99: 3.25 };

describe('heartbeat I/O counters', () => {
  it('accepts a heartbeat without them (older drivers, replicas) and with them', () => {
    expect(() => validateFrame(beat)).not.toThrow();
    expect(() => validateFrame({ ...beat, io })).not.toThrow();
  });

  it.each([
    ['not an object', 'lots'],
    ['a negative counter', { ...io, ops: -1 }],
    ['a fractional byte count', { ...io, writeBytes: 1.5 }],
    ['a missing counter', { ...io, errors: undefined }],
    ['an infinite latency', { ...io, latencyMsP99: Infinity }],
    ['a negative latency', { ...io, latencyMsP50: -0.1 }],
    ['a latency that is not a number', { ...io, latencyMsP99: '3' }],
  ])('refuses %s', (_what, bad) => {
    expect(() => validateFrame({ ...beat, io: bad } as unknown as HeartbeatFrame)).toThrow(/heartbeat.*io/);
  });
});

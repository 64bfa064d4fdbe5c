import type { Batch, Frame, FrameType } from '../../protocol/frames.js';

/** One valid sample of every frame type. */
export const sampleFrames: { [T in FrameType]: Extract<Frame, { t: T }> } = {
  hello: { t: 'hello', role: 'driver', id: 'drv-1', epoch: 3, clusterId: 'c1' },
  welcome: { t: 'welcome', role: 'replica', id: 'rep-a', epoch: 3, appliedVersion: 10 },
  write: { t: 'write', epoch: 3, v: 11, kind: 'write', offsetBytes: 8192, lengthBytes: 4, data: Buffer.from([1, 2, 3, 4]) },
  flush: { t: 'flush', epoch: 3, v: 11 },
  ack: { t: 'ack', epoch: 3, id: 'rep-a', appliedVersion: 11, durableVersion: 10 },
  read: { t: 'read', epoch: 3, r: 7, offsetBytes: 0, lengthBytes: 4096, minVersion: 11 },
  'read-reply': { t: 'read-reply', r: 7, ok: true, appliedVersion: 11, data: Buffer.alloc(16, 9) },
  sync: { t: 'sync', epoch: 3, id: 'rep-b', fromVersion: 5 },
  'sync-start': { t: 'sync-start', epoch: 3, mode: 'log', fromVersion: 5, imageVersion: 0, targetVersion: 11 },
  'image-chunk': { t: 'image-chunk', epoch: 3, offsetBytes: 0, data: Buffer.alloc(32, 1) },
  'image-end': { t: 'image-end', epoch: 3, imageVersion: 9 },
  heartbeat: {
    t: 'heartbeat', id: 'rep-a', role: 'replica', epoch: 3, state: 'active', appliedVersion: 11, durableVersion: 10,
    view: { 'rep-b': 120, ctl: 3 },
  },
  config: {
    t: 'config', epoch: 3, chain: [{ id: 'rep-a', url: 'ws://127.0.0.1:1' }, { id: 'rep-b', url: 'ws://127.0.0.1:2' }],
    driverId: 'drv-1', volume: { name: 'vol', sizeBytes: 1 << 30 },
  },
  error: { t: 'error', code: 'ERR_EPOCH_STALE', message: 'stale', epoch: 4 },
};

export function batchOf(frames: Frame[], from = 'test', lc = 1): Batch {
  return { from, lc, frames };
}

export function writeFrame(v: number, sizeBytes = 4096): Frame {
  return { t: 'write', epoch: 1, v, kind: 'write', offsetBytes: v * sizeBytes, lengthBytes: sizeBytes, data: Buffer.alloc(sizeBytes, v & 0xff) };
}

import { describe, expect, it } from 'vitest';
import { createActor } from 'xstate';
import type { ConfigFrame, WriteFrame } from '../../protocol/frames.js';
import { admitWrites, replicaMachine, type ReplicaEmitted } from '../../machines/replica.js';

const chain = [
  { id: 'r1', url: 'ws://127.0.0.1:1' },
  { id: 'r2', url: 'ws://127.0.0.1:2' },
  { id: 'r3', url: 'ws://127.0.0.1:3' },
];
const config = (epoch: number, members = chain): ConfigFrame => ({ t: 'config', epoch, chain: members, driverId: 'd', volume: { name: 'v', sizeBytes: 1 << 20 } });
const write = (v: number, epoch = 1): WriteFrame => ({ t: 'write', epoch, v, kind: 'write', offsetBytes: 0, lengthBytes: 1, data: new Uint8Array([v & 0xff]) });

function start(id: string, appliedVersion = 0) {
  const emitted: ReplicaEmitted[] = [];
  const actor = createActor(replicaMachine, { input: { id, appliedVersion, durableVersion: appliedVersion } });
  actor.on('*', (e) => emitted.push(e as ReplicaEmitted));
  actor.start();
  return { actor, emitted, take: () => emitted.splice(0) };
}

describe('admitWrites', () => {
  it('drops duplicates, admits the contiguous run, stops at a gap', () => {
    const r = admitWrites(2, [write(1), write(2), write(3), write(4), write(6), write(7)]);
    expect(r.admitted.map((f) => f.v)).toEqual([3, 4]);
    expect(r.gapAt).toBe(5);
  });
});

describe('replica machine', () => {
  it('as head: appends driver writes, acks after the store applied them', () => {
    const { actor, take } = start('r1');
    actor.send({ type: 'config', config: config(1) });
    expect(actor.getSnapshot().value).toBe('serving');
    take();
    actor.send({ type: 'writes', from: 'd', frames: [write(1), write(2)] });
    expect(take()).toEqual([{ type: 'append', frames: [write(1), write(2)] }]);
    actor.send({ type: 'store.applied', appliedVersion: 2 });
    expect(take()).toEqual([{ type: 'ack', to: 'd', appliedVersion: 2, durableVersion: 0 }]);
  });

  it('ignores resent versions and refuses a gap with the version it expects', () => {
    const { actor, take } = start('r1', 5);
    actor.send({ type: 'config', config: config(1) });
    take();
    actor.send({ type: 'writes', from: 'd', frames: [write(4), write(5)] });
    expect(take()).toEqual([]);
    actor.send({ type: 'writes', from: 'd', frames: [write(7)] });
    const out = take();
    expect(out).toHaveLength(1);
    expect(out[0]).toMatchObject({ type: 'refuse', to: 'd', frame: { code: 'ERR_VERSION_GAP' } });
    expect((out[0] as { frame: { message: string } }).frame.message).toContain('expected version 6');
  });

  it('refuses frames from an older epoch and says which epoch it holds', () => {
    const { actor, take } = start('r1');
    actor.send({ type: 'config', config: config(3) });
    take();
    actor.send({ type: 'writes', from: 'd', frames: [write(1, 2)] });
    expect(take()).toEqual([expect.objectContaining({ type: 'refuse', frame: expect.objectContaining({ code: 'ERR_EPOCH_STALE', epoch: 3 }) })]);
    expect(actor.getSnapshot().context.acceptedVersion).toBe(0);
  });

  it('takes writes only from its predecessor', () => {
    const { actor, take } = start('r2');
    actor.send({ type: 'config', config: config(1) });
    take();
    actor.send({ type: 'writes', from: 'd', frames: [write(1)] });
    expect(take()).toEqual([expect.objectContaining({ type: 'refuse', to: 'd', frame: expect.objectContaining({ code: 'ERR_NOT_SERVING' }) })]);
    actor.send({ type: 'writes', from: 'r1', frames: [write(1)] });
    expect(take()).toEqual([{ type: 'append', frames: [write(1)] }]);
  });

  it('joins behind a predecessor: syncs, then serves once caught up', () => {
    const { actor, take } = start('r3', 4);
    actor.send({ type: 'config', config: config(1) });
    expect(actor.getSnapshot().value).toBe('syncing');
    expect(take()).toContainEqual({ type: 'syncFrom', predecessor: chain[1], fromVersion: 4 });
    actor.send({ type: 'sync.start', frame: { t: 'sync-start', epoch: 1, mode: 'log', fromVersion: 4, imageVersion: 0, targetVersion: 6 } });
    actor.send({ type: 'writes', from: 'r2', frames: [write(5), write(6)] });
    actor.send({ type: 'store.applied', appliedVersion: 5 });
    expect(actor.getSnapshot().value).toBe('syncing');
    actor.send({ type: 'store.applied', appliedVersion: 6 });
    expect(actor.getSnapshot().value).toBe('serving');
  });

  it('ignores the answer to a SYNC of an earlier epoch: it keeps syncing and waits for the current one', () => {
    const { actor, take } = start('r2', 7);
    actor.send({ type: 'config', config: config(2) });
    actor.send({ type: 'config', config: config(3) });
    expect(take()).toContainEqual({ type: 'syncFrom', predecessor: chain[0], fromVersion: 7 });
    // The epoch-2 SYNC's answer, with nothing new in it, arrives after epoch 3 began.
    actor.send({ type: 'sync.start', frame: { t: 'sync-start', epoch: 2, mode: 'log', fromVersion: 7, imageVersion: 0, targetVersion: 7 } });
    expect(actor.getSnapshot().value).toBe('syncing');
    expect(actor.getSnapshot().context.sync).toBeNull();
    actor.send({ type: 'sync.start', frame: { t: 'sync-start', epoch: 3, mode: 'log', fromVersion: 7, imageVersion: 0, targetVersion: 8 } });
    expect(actor.getSnapshot().context.sync).toMatchObject({ mode: 'log', targetVersion: 8 });
    actor.send({ type: 'writes', from: 'r1', frames: [write(8, 3)] });
    actor.send({ type: 'store.applied', appliedVersion: 8 });
    expect(actor.getSnapshot().value).toBe('serving');
  });

  it('loses its upstream link: syncs again from what it holds', () => {
    const { actor, take } = start('r2', 9);
    actor.send({ type: 'config', config: config(1) });
    actor.send({ type: 'sync.start', frame: { t: 'sync-start', epoch: 1, mode: 'log', fromVersion: 9, imageVersion: 0, targetVersion: 9 } });
    actor.send({ type: 'store.applied', appliedVersion: 9 });
    expect(actor.getSnapshot().value).toBe('serving');
    take();
    actor.send({ type: 'upstream.down', reason: 'closed' });
    expect(actor.getSnapshot().value).toBe('syncing');
    expect(take()).toContainEqual({ type: 'syncFrom', predecessor: chain[0], fromVersion: 9 });
  });

  it('parks a read until its version is applied', () => {
    const { actor, take } = start('r1');
    actor.send({ type: 'config', config: config(1) });
    take();
    const read = { t: 'read' as const, epoch: 1, r: 7, offsetBytes: 0, lengthBytes: 512, minVersion: 2 };
    actor.send({ type: 'read', from: 'd', frame: read });
    expect(take()).toEqual([]);
    actor.send({ type: 'writes', from: 'd', frames: [write(1), write(2)] });
    actor.send({ type: 'store.applied', appliedVersion: 2 });
    expect(take()).toContainEqual({ type: 'serveRead', to: 'd', frame: read });
  });

  it('forwards only to its successor in the current epoch', () => {
    const { actor, take } = start('r1', 3);
    actor.send({ type: 'config', config: config(1) });
    take();
    actor.send({ type: 'sync.request', from: 'r3', frame: { t: 'sync', epoch: 1, id: 'r3', fromVersion: 0 } });
    expect(take()).toEqual([expect.objectContaining({ type: 'refuse', to: 'r3' })]);
    actor.send({ type: 'sync.request', from: 'r2', frame: { t: 'sync', epoch: 1, id: 'r2', fromVersion: 3 } });
    expect(take()).toEqual([{ type: 'forwardFrom', to: 'r2', fromVersion: 3 }]);
  });

  it('flushes once applied reaches the flush version, and acks the durable version', () => {
    const { actor, take } = start('r2');
    actor.send({ type: 'config', config: config(1) });
    take();
    actor.send({ type: 'flush', from: 'd', frame: { t: 'flush', epoch: 1, v: 1 } });
    expect(take()).toEqual([]);
    actor.send({ type: 'writes', from: 'r1', frames: [write(1)] });
    actor.send({ type: 'store.applied', appliedVersion: 1 });
    expect(take()).toContainEqual({ type: 'storeFlush' });
    actor.send({ type: 'store.durable', durableVersion: 1 });
    expect(take()).toEqual([{ type: 'ack', to: 'd', appliedVersion: 1, durableVersion: 1 }]);
  });

  it('a failed store stops taking writes', () => {
    const { actor, take } = start('r1');
    actor.send({ type: 'config', config: config(1) });
    actor.send({ type: 'store.failed', code: 'ERR_NO_SPACE', message: 'disk full' });
    expect(actor.getSnapshot().value).toBe('faulted');
    take();
    actor.send({ type: 'writes', from: 'd', frames: [write(1)] });
    expect(take()).toEqual([expect.objectContaining({ type: 'refuse', frame: expect.objectContaining({ message: expect.stringContaining('disk full') }) })]);
  });

  it('a resent config of the same epoch changes nothing', () => {
    const { actor, take } = start('r2');
    actor.send({ type: 'config', config: config(1) });
    actor.send({ type: 'sync.start', frame: { t: 'sync-start', epoch: 1, mode: 'log', fromVersion: 0, imageVersion: 0, targetVersion: 0 } });
    actor.send({ type: 'store.applied', appliedVersion: 0 });
    expect(actor.getSnapshot().value).toBe('serving');
    take();
    actor.send({ type: 'config', config: config(1) });
    expect(actor.getSnapshot().value).toBe('serving');
    expect(take()).toEqual([]);
  });
});

// Each found by the deterministic simulator (sim/, `npm run sim`); see the report of issue 7.
describe('replica machine: bugs the simulator found', () => {
  const sync = (from: string, fromVersion: number, epoch = 1) => ({ type: 'sync.request' as const, from, frame: { t: 'sync' as const, epoch, id: from, fromVersion } });

  it('does not answer a successor that holds more than it does: it would overwrite acknowledged writes with an older image', () => {
    // r1 restarted and recovered v5 of the v8 it had applied; r2 still holds v8.
    const { actor, take } = start('r1', 5);
    actor.send({ type: 'config', config: config(1) });
    take();
    actor.send(sync('r2', 8));
    expect(take()).toEqual([expect.objectContaining({ type: 'refuse', to: 'r2', frame: expect.objectContaining({ code: 'ERR_NOT_SERVING' }) })]);
    expect(actor.getSnapshot().context.forwardingTo).toBeNull();
    // Caught up (the driver resends what the head lost), it answers.
    actor.send({ type: 'writes', from: 'd', frames: [write(6), write(7), write(8)] });
    actor.send({ type: 'store.applied', appliedVersion: 8 });
    take();
    actor.send(sync('r2', 8));
    expect(take()).toEqual([{ type: 'forwardFrom', to: 'r2', fromVersion: 8 }]);
  });

  it('does not answer SYNC while syncing itself: its successor would call itself caught up with less than the chain holds', () => {
    const { actor, take } = start('r2');
    actor.send({ type: 'config', config: config(1) });
    expect(actor.getSnapshot().value).toBe('syncing');
    take();
    actor.send(sync('r3', 0));
    expect(take()).toEqual([expect.objectContaining({ type: 'refuse', to: 'r3', frame: expect.objectContaining({ code: 'ERR_NOT_SERVING' }) })]);
    actor.send({ type: 'sync.start', frame: { t: 'sync-start', epoch: 1, mode: 'log', fromVersion: 0, imageVersion: 0, targetVersion: 2 } });
    actor.send({ type: 'writes', from: 'r1', frames: [write(1), write(2)] });
    actor.send({ type: 'store.applied', appliedVersion: 2 });
    expect(actor.getSnapshot().value).toBe('serving');
    take();
    actor.send(sync('r3', 0));
    expect(take()).toEqual([{ type: 'forwardFrom', to: 'r3', fromVersion: 0 }]);
  });

  it('after installing an image its acks claim the image as durable, not what it had made durable before', () => {
    const emitted: ReplicaEmitted[] = [];
    const actor = createActor(replicaMachine, { input: { id: 'r3', appliedVersion: 86, durableVersion: 79 } });
    actor.on('*', (e) => emitted.push(e as ReplicaEmitted));
    actor.start();
    actor.send({ type: 'config', config: config(1) });
    emitted.length = 0;
    // The predecessor sent an image at v40 (the store now holds that and nothing else).
    actor.send({ type: 'sync.start', frame: { t: 'sync-start', epoch: 1, mode: 'image', fromVersion: 86, imageVersion: 40, targetVersion: 40 } });
    actor.send({ type: 'store.applied', appliedVersion: 40 });
    expect(emitted).toContainEqual({ type: 'ack', to: 'd', appliedVersion: 40, durableVersion: 40 });
  });
  it('an image installed late (its stream of an older epoch, the replica serving by now) still sets what its acks claim durable', () => {
    const { actor, take } = start('r2', 0);
    actor.send({ type: 'config', config: config(4) });
    // Caught up from a newer image at v86 and made v90 durable.
    actor.send({ type: 'store.image', imageVersion: 86 });
    actor.send({ type: 'sync.start', frame: { t: 'sync-start', epoch: 4, mode: 'image', fromVersion: 0, imageVersion: 86, targetVersion: 86 } });
    actor.send({ type: 'store.applied', appliedVersion: 86 });
    expect(actor.getSnapshot().value).toBe('serving');
    actor.send({ type: 'writes', from: 'r1', frames: [87, 88, 89, 90].map((v) => write(v, 4)) });
    actor.send({ type: 'store.applied', appliedVersion: 90 });
    actor.send({ type: 'flush', from: 'd', frame: { t: 'flush', epoch: 4, v: 90 } });
    actor.send({ type: 'store.durable', durableVersion: 90 });
    take();
    // Then the image of an epoch-3 stream, at v79, finished committing: the store holds v79 only.
    actor.send({ type: 'store.image', imageVersion: 79 });
    actor.send({ type: 'sync.start', frame: { t: 'sync-start', epoch: 3, mode: 'image', fromVersion: 0, imageVersion: 79, targetVersion: 79 } });
    actor.send({ type: 'store.applied', appliedVersion: 79 });
    expect(take()).toContainEqual({ type: 'ack', to: 'd', appliedVersion: 79, durableVersion: 79 });
    expect(actor.getSnapshot().context).toMatchObject({ acceptedVersion: 79, appliedVersion: 79, durableVersion: 79 });
  });
});

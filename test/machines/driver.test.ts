import { describe, expect, it } from 'vitest';
import { createActor, SimulatedClock } from 'xstate';
import type { ConfigFrame } from '../../protocol/frames.js';
import { driverMachine, type DriverEmitted } from '../../machines/driver.js';

const chain = [
  { id: 'r1', url: 'ws://127.0.0.1:1' },
  { id: 'r2', url: 'ws://127.0.0.1:2' },
  { id: 'r3', url: 'ws://127.0.0.1:3' },
];
const config = (epoch: number, members = chain): ConfigFrame => ({ t: 'config', epoch, chain: members, driverId: 'd', volume: { name: 'v', sizeBytes: 1 << 20 } });

function start() {
  const clock = new SimulatedClock();
  const emitted: DriverEmitted[] = [];
  const actor = createActor(driverMachine, {
    clock,
    input: { id: 'd', tickMs: 100, writeTimeoutTicks: 50, readTimeoutTicks: 10, quorumGraceTicks: 20 },
  });
  actor.on('*', (e) => emitted.push(e as DriverEmitted));
  actor.start();
  actor.send({ type: 'config', config: config(1) });
  for (const m of chain) actor.send({ type: 'link.up', id: m.id, appliedVersion: 0 });
  emitted.length = 0;
  const ticks = (n: number) => {
    for (let i = 0; i < n; i++) clock.increment(100);
  };
  return { actor, emitted, take: () => emitted.splice(0), ticks };
}

const data = new Uint8Array(4096);
const ack = (id: string, appliedVersion: number, durableVersion = 0) => ({ type: 'ack' as const, id, epoch: 1, appliedVersion, durableVersion });

describe('driver machine', () => {
  it('numbers writes gaplessly and sends them to the head', () => {
    const { actor, take } = start();
    actor.send({ type: 'io.write', reqId: 10, kind: 'write', offsetBytes: 0, lengthBytes: 4096, data, fua: false });
    actor.send({ type: 'io.write', reqId: 11, kind: 'trim', offsetBytes: 4096, lengthBytes: 4096, fua: false });
    const sent = take();
    expect(sent.map((e) => e.type)).toEqual(['send', 'send']);
    expect(sent.every((e) => e.type === 'send' && e.to === 'r1')).toBe(true);
    expect(sent.flatMap((e) => (e.type === 'send' ? e.frames.map((f) => (f as { v: number }).v) : []))).toEqual([1, 2]);
  });

  it('takes a turn of requests as one io.batch: writes to the head in one send, flushed behind them, reads served', () => {
    const { actor, take } = start();
    const w = (reqId: number, offsetBytes: number) => ({ type: 'io.write' as const, reqId, kind: 'write' as const, offsetBytes, lengthBytes: 4096, data, fua: false });
    actor.send({ type: 'io.batch', requests: [w(1, 0), w(2, 4096), { type: 'io.flush', reqId: 3 }, w(4, 8192), { type: 'io.read', reqId: 5, offsetBytes: 0, lengthBytes: 4096 }] });
    const sent = take().filter((e) => e.type === 'send');
    const toHead = sent.filter((e) => e.type === 'send' && e.to === 'r1').map((e) => (e.type === 'send' ? e.frames.map((f) => `${f.t}${'v' in f ? f.v : ''}`) : []));
    // Writes 1–2 go out before the flush that covers them, the read next, write 3 at the end.
    expect(toHead).toEqual([['write1', 'write2'], ['flush2'], ['read'], ['write3']]);
    expect(sent.filter((e) => e.type === 'send' && e.frames[0].t === 'flush').map((e) => (e as { to: string }).to)).toEqual(['r1', 'r2', 'r3']);
    for (const id of ['r1', 'r2']) actor.send(ack(id, 3, 2));
    actor.send({ type: 'read.replies', from: 'r1', frames: [{ t: 'read-reply', r: 1, ok: true, appliedVersion: 3, data }] });
    expect(take().filter((e) => e.type === 'reply').map((e) => (e as { reqId: number }).reqId).sort()).toEqual([1, 2, 3, 4, 5]);
  });

  it('answers a write only when a majority has applied it', () => {
    const { actor, take } = start();
    actor.send({ type: 'io.write', reqId: 10, kind: 'write', offsetBytes: 0, lengthBytes: 4096, data, fua: false });
    take();
    actor.send(ack('r1', 1));
    expect(take()).toEqual([]);
    actor.send(ack('r2', 1));
    expect(take()).toEqual([{ type: 'reply', reqId: 10, ok: true }]);
  });

  it('one cumulative ack covers every version up to it', () => {
    const { actor, take } = start();
    for (let i = 0; i < 3; i++) actor.send({ type: 'io.write', reqId: i, kind: 'write', offsetBytes: 0, lengthBytes: 4096, data, fua: false });
    take();
    actor.send(ack('r1', 3));
    actor.send(ack('r2', 3));
    expect(take()).toEqual([0, 1, 2].map((reqId) => ({ type: 'reply', reqId, ok: true })));
  });

  it('FUA waits for a durable majority, and flush is broadcast to every replica', () => {
    const { actor, take } = start();
    actor.send({ type: 'io.write', reqId: 1, kind: 'write', offsetBytes: 0, lengthBytes: 4096, data, fua: true });
    const sent = take();
    expect(sent.filter((e) => e.type === 'send' && e.frames[0].t === 'flush').map((e) => (e as { to: string }).to)).toEqual(['r1', 'r2', 'r3']);
    actor.send(ack('r1', 1));
    actor.send(ack('r2', 1));
    expect(take()).toEqual([]);
    actor.send(ack('r1', 1, 1));
    actor.send(ack('r3', 1, 1));
    expect(take()).toEqual([{ type: 'reply', reqId: 1, ok: true }]);
  });

  it('without a majority of acks the write fails with an error, never a silent success', () => {
    const { actor, take, ticks } = start();
    actor.send({ type: 'io.write', reqId: 5, kind: 'write', offsetBytes: 0, lengthBytes: 4096, data, fua: false });
    actor.send(ack('r1', 1));
    take();
    ticks(49);
    expect(take()).toEqual([]);
    ticks(2);
    expect(take()).toEqual([expect.objectContaining({ type: 'reply', reqId: 5, ok: false, code: 'ERR_QUORUM_LOST' })]);
  });

  it('with a majority of links down, pending and new writes fail fast', () => {
    const { actor, take, ticks } = start();
    actor.send({ type: 'io.write', reqId: 5, kind: 'write', offsetBytes: 0, lengthBytes: 4096, data, fua: false });
    actor.send({ type: 'link.down', id: 'r2' });
    actor.send({ type: 'link.down', id: 'r3' });
    take();
    ticks(22);
    expect(take()).toEqual([expect.objectContaining({ reqId: 5, ok: false, code: 'ERR_QUORUM_LOST' })]);
    actor.send({ type: 'io.write', reqId: 6, kind: 'write', offsetBytes: 0, lengthBytes: 4096, data, fua: false });
    expect(take()).toEqual([expect.objectContaining({ reqId: 6, ok: false, code: 'ERR_QUORUM_LOST' })]);
  });

  it('takes writes again as soon as a majority of links is back, not only from the next tick on', () => {
    const { actor, take, ticks } = start();
    actor.send({ type: 'link.down', id: 'r2' });
    actor.send({ type: 'link.down', id: 'r3' });
    ticks(22);
    take();
    actor.send({ type: 'link.up', id: 'r2', appliedVersion: 0 });
    actor.send({ type: 'link.up', id: 'r3', appliedVersion: 0 });
    take();
    // Same tick: the quorum-lost mark is still set until expire runs, but 3 of 3 links are up.
    actor.send({ type: 'io.write', reqId: 7, kind: 'write', offsetBytes: 0, lengthBytes: 4096, data, fua: false });
    actor.send({ type: 'io.flush', reqId: 8 });
    const out = take();
    expect(out.filter((e) => e.type === 'reply')).toEqual([]);
    expect(out).toContainEqual(expect.objectContaining({ type: 'send', to: 'r1' }));
  });

  it('resends uncommitted writes to a head that reconnects, from what it holds', () => {
    const { actor, take } = start();
    for (let i = 0; i < 3; i++) actor.send({ type: 'io.write', reqId: i, kind: 'write', offsetBytes: 0, lengthBytes: 4096, data, fua: false });
    actor.send({ type: 'link.down', id: 'r1' });
    take();
    actor.send({ type: 'link.up', id: 'r1', appliedVersion: 1 });
    const sent = take().filter((e) => e.type === 'send' && e.to === 'r1');
    expect(sent.flatMap((e) => (e.type === 'send' ? e.frames.map((f) => (f as { v: number }).v) : []))).toEqual([2, 3]);
  });

  it('reads from the newest replica and falls back down the chain on error', () => {
    const { actor, take } = start();
    actor.send({ type: 'io.read', reqId: 9, offsetBytes: 0, lengthBytes: 512 });
    const first = take();
    expect(first).toEqual([expect.objectContaining({ type: 'send', to: 'r1' })]);
    const r = (first[0] as { frames: Array<{ r: number }> }).frames[0].r;
    actor.send({ type: 'read.reply', from: 'r1', frame: { t: 'read-reply', r, ok: false, appliedVersion: 0, code: 'EIO', message: 'disk' } });
    expect(take()).toEqual([expect.objectContaining({ type: 'send', to: 'r2' })]);
    const bytes = new Uint8Array(512).fill(3);
    actor.send({ type: 'read.reply', from: 'r2', frame: { t: 'read-reply', r, ok: true, appliedVersion: 0, data: bytes } });
    expect(take()).toEqual([{ type: 'reply', reqId: 9, ok: true, data: bytes }]);
  });

  it('a read nobody answers fails after every replica timed out', () => {
    const { actor, take, ticks } = start();
    actor.send({ type: 'io.read', reqId: 9, offsetBytes: 0, lengthBytes: 512 });
    take();
    ticks(35);
    const out = take();
    expect(out.filter((e) => e.type === 'send').map((e) => (e as { to: string }).to)).toEqual(['r2', 'r3']);
    expect(out.at(-1)).toMatchObject({ type: 'reply', reqId: 9, ok: false, code: 'ERR_READ_FAILED' });
  });

  it('learns of a newer epoch from a refusal', () => {
    const { actor, take } = start();
    actor.send({ type: 'peer.error', from: 'r1', frame: { t: 'error', code: 'ERR_EPOCH_STALE', message: 'old', epoch: 4 } });
    expect(take()).toEqual([{ type: 'staleEpoch', epoch: 4, from: 'r1' }]);
  });

  it('a restarted driver waits for a majority, then numbers after the newest version held', () => {
    const emitted: DriverEmitted[] = [];
    const actor = createActor(driverMachine, { clock: new SimulatedClock(), input: { id: 'd', tickMs: 100, writeTimeoutTicks: 50, readTimeoutTicks: 10, quorumGraceTicks: 20 } });
    actor.on('*', (e) => emitted.push(e as DriverEmitted));
    actor.start();
    actor.send({ type: 'config', config: config(1) });
    actor.send({ type: 'link.up', id: 'r1', appliedVersion: 7 });
    actor.send({ type: 'io.write', reqId: 1, kind: 'write', offsetBytes: 0, lengthBytes: 4096, data, fua: false });
    expect(emitted.at(-1)).toMatchObject({ type: 'reply', reqId: 1, ok: false, code: 'ERR_NOT_SERVING' });
    actor.send({ type: 'link.up', id: 'r3', appliedVersion: 5 });
    expect(actor.getSnapshot().value).toBe('attached');
    emitted.length = 0;
    actor.send({ type: 'io.write', reqId: 2, kind: 'write', offsetBytes: 0, lengthBytes: 4096, data, fua: false });
    expect(emitted).toEqual([expect.objectContaining({ type: 'send', to: 'r1', frames: [expect.objectContaining({ v: 8 })] })]);
  });

  it('on a new epoch without the head, resends uncommitted writes to the new head from what it holds', () => {
    const { actor, take } = start();
    for (let i = 0; i < 3; i++) actor.send({ type: 'io.write', reqId: i, kind: 'write', offsetBytes: 0, lengthBytes: 4096, data, fua: false });
    actor.send(ack('r1', 3));
    actor.send(ack('r2', 1));
    expect(take().filter((e) => e.type === 'reply')).toEqual([{ type: 'reply', reqId: 0, ok: true }]);
    actor.send({ type: 'link.down', id: 'r1' });
    actor.send({ type: 'config', config: config(2, chain.slice(1)) });
    const sent = take().filter((e) => e.type === 'send');
    expect(sent[0]).toMatchObject({ to: 'r2', frames: [expect.objectContaining({ v: 2, epoch: 2 }), expect.objectContaining({ v: 3, epoch: 2 })] });
    // Two replicas left: a majority is both of them.
    actor.send({ type: 'ack', id: 'r2', epoch: 2, appliedVersion: 3, durableVersion: 0 });
    expect(take()).toEqual([]);
    actor.send({ type: 'ack', id: 'r3', epoch: 2, appliedVersion: 3, durableVersion: 0 });
    expect(take()).toEqual([1, 2].map((reqId) => ({ type: 'reply', reqId, ok: true })));
  });

  it('acks count whatever their epoch: a replica may ack in the new epoch before the driver adopts it, or in the old one after', () => {
    // The middle dies; r3 hears of epoch 2 first, syncs from r1 and acks — before the driver's
    // own copy of epoch 2 arrives. Nothing more will be written until these writes complete, so
    // no later ack would make up for a dropped one.
    const { actor, take } = start();
    for (let i = 0; i < 3; i++) actor.send({ type: 'io.write', reqId: i, kind: 'write', offsetBytes: 0, lengthBytes: 4096, data, fua: false });
    actor.send(ack('r1', 3));
    actor.send({ type: 'link.down', id: 'r2' });
    take();
    actor.send({ type: 'ack', id: 'r3', epoch: 2, appliedVersion: 1, durableVersion: 0 });
    expect(take()).toEqual([{ type: 'reply', reqId: 0, ok: true }]);
    // The driver moves to epoch 2; r3's ack of the rest was sent before r3 moved.
    actor.send({ type: 'config', config: config(2, [chain[0], chain[2]]) });
    actor.send({ type: 'ack', id: 'r3', epoch: 1, appliedVersion: 3, durableVersion: 0 });
    expect(take().filter((e) => e.type === 'reply')).toEqual([1, 2].map((reqId) => ({ type: 'reply', reqId, ok: true })));
  });

  it('an ack from a replica outside the chain never counts', () => {
    const { actor, take } = start();
    actor.send({ type: 'io.write', reqId: 1, kind: 'write', offsetBytes: 0, lengthBytes: 4096, data, fua: false });
    actor.send(ack('r1', 1));
    actor.send({ type: 'config', config: config(2, [chain[0], chain[2]]) });
    take();
    actor.send({ type: 'ack', id: 'r2', epoch: 2, appliedVersion: 1, durableVersion: 0 });
    actor.send({ type: 'ack', id: 'r9', epoch: 2, appliedVersion: 1, durableVersion: 0 });
    expect(take().filter((e) => e.type === 'reply')).toEqual([]);
    actor.send({ type: 'ack', id: 'r3', epoch: 2, appliedVersion: 1, durableVersion: 0 });
    expect(take().filter((e) => e.type === 'reply')).toEqual([{ type: 'reply', reqId: 1, ok: true }]);
  });

  it('a chain shrunk to one replica completes what that replica already acked', () => {
    const { actor, take } = start();
    actor.send({ type: 'config', config: config(2, [chain[0], chain[1]]) });
    actor.send({ type: 'io.write', reqId: 1, kind: 'write', offsetBytes: 0, lengthBytes: 4096, data, fua: false });
    actor.send({ type: 'ack', id: 'r1', epoch: 2, appliedVersion: 1, durableVersion: 0 });
    take();
    actor.send({ type: 'config', config: config(3, [chain[0]]) });
    expect(take().filter((e) => e.type === 'reply')).toEqual([{ type: 'reply', reqId: 1, ok: true }]);
  });

  it('a read every replica refuses during an epoch change is tried again next tick, not failed', () => {
    const { actor, take, ticks } = start();
    actor.send({ type: 'io.read', reqId: 9, offsetBytes: 0, lengthBytes: 512 });
    const refuse = (from: string, r: number) =>
      actor.send({ type: 'read.reply', from, frame: { t: 'read-reply', r, ok: false, appliedVersion: 0, code: 'ERR_NOT_SERVING', message: 'config not yet received' } });
    const r = (take()[0] as { frames: Array<{ r: number }> }).frames[0].r;
    refuse('r1', r);
    refuse('r2', r);
    refuse('r3', r);
    expect(take().filter((e) => e.type === 'reply')).toEqual([]);
    ticks(1);
    expect(take()).toEqual([expect.objectContaining({ type: 'send', to: 'r1', frames: [expect.objectContaining({ t: 'read', r })] })]);
    const bytes = new Uint8Array(512).fill(7);
    actor.send({ type: 'read.reply', from: 'r1', frame: { t: 'read-reply', r, ok: true, appliedVersion: 0, data: bytes } });
    expect(take()).toEqual([{ type: 'reply', reqId: 9, ok: true, data: bytes }]);
  });

  it('a read refused everywhere for too long fails with EIO after the read timeout', () => {
    const { actor, take, ticks } = start();
    actor.send({ type: 'io.read', reqId: 9, offsetBytes: 0, lengthBytes: 512 });
    /** Refuse every read sent, as replicas stuck on another epoch would; the reply if one came. */
    const refuseAll = (): DriverEmitted | undefined => {
      for (let out = take(); out.length > 0; out = take()) {
        const reply = out.find((e) => e.type === 'reply');
        if (reply) return reply;
        for (const e of out) {
          if (e.type !== 'send' || e.frames[0].t !== 'read') continue;
          actor.send({ type: 'read.reply', from: e.to, frame: { t: 'read-reply', r: e.frames[0].r, ok: false, appliedVersion: 0, code: 'ERR_EPOCH_STALE', message: 'old' } });
        }
      }
      return undefined;
    };
    let tick = 0;
    let reply = refuseAll();
    while (!reply && tick < 20) {
      ticks(1);
      tick++;
      reply = refuseAll();
    }
    // readTimeoutTicks is 10.
    expect(tick).toBe(10);
    expect(reply).toMatchObject({ type: 'reply', reqId: 9, ok: false, code: 'ERR_READ_FAILED' });
  });

  it('a head that refuses a newer epoch gets the writes again on the next tick', () => {
    const { actor, take, ticks } = start();
    actor.send({ type: 'io.write', reqId: 1, kind: 'write', offsetBytes: 0, lengthBytes: 4096, data, fua: false });
    take();
    actor.send({ type: 'peer.error', from: 'r1', frame: { t: 'error', code: 'ERR_NOT_SERVING', message: 'config not yet received', epoch: 1 } });
    expect(take()).toEqual([]);
    ticks(1);
    expect(take()).toEqual([expect.objectContaining({ type: 'send', to: 'r1', frames: [expect.objectContaining({ v: 1 })] })]);
  });
});

// Each found by the deterministic simulator (sim/, `npm run sim`); the seed that first showed it
// is in the report of issue 7.
describe('driver machine: bugs the simulator found', () => {
  const writeReq = (reqId: number, fua = false) => ({ type: 'io.write' as const, reqId, kind: 'write' as const, offsetBytes: 0, lengthBytes: 4096, data, fua });
  const sentVersions = (out: DriverEmitted[], to: string) =>
    out.flatMap((e) => (e.type === 'send' && e.to === to ? e.frames.filter((f) => f.t === 'write').map((f) => (f as { v: number }).v) : []));
  const flushesTo = (out: DriverEmitted[]) =>
    out.flatMap((e) => (e.type === 'send' ? e.frames.filter((f) => f.t === 'flush').map((f) => ({ to: e.to, v: (f as { v: number }).v })) : []));

  it('a welcome counts as an ack: writes a majority holds are answered when the links come back', () => {
    // The acks went out while the links were down (after a SYNC, say); no later write brings more.
    const { actor, take } = start();
    actor.send(writeReq(1));
    actor.send({ type: 'link.down', id: 'r2' });
    actor.send({ type: 'link.down', id: 'r3' });
    take();
    actor.send({ type: 'link.up', id: 'r2', appliedVersion: 1 });
    actor.send({ type: 'link.up', id: 'r3', appliedVersion: 1 });
    expect(take().filter((e) => e.type === 'reply')).toEqual([{ type: 'reply', reqId: 1, ok: true }]);
  });

  it('a FUA write still waiting asks a (re)linked replica and a new chain for durability', () => {
    const { actor, take } = start();
    actor.send(writeReq(1, true));
    actor.send(ack('r1', 1));
    actor.send(ack('r2', 1));
    take();
    // The flush frames were lost with the links; r3 relinks, then the chain changes.
    actor.send({ type: 'link.down', id: 'r3' });
    actor.send({ type: 'link.up', id: 'r3', appliedVersion: 1 });
    expect(flushesTo(take())).toContainEqual({ to: 'r3', v: 1 });
    actor.send({ type: 'config', config: config(2, [chain[0], chain[2]]) });
    expect(flushesTo(take())).toEqual([{ to: 'r1', v: 1 }, { to: 'r3', v: 1 }]);
    actor.send({ type: 'ack', id: 'r1', epoch: 2, appliedVersion: 1, durableVersion: 1 });
    actor.send({ type: 'ack', id: 'r3', epoch: 2, appliedVersion: 1, durableVersion: 1 });
    expect(take().filter((e) => e.type === 'reply')).toEqual([{ type: 'reply', reqId: 1, ok: true }]);
  });

  it('a FUA write the client gave up on does not hold back the answers of later writes', () => {
    const { actor, take, ticks } = start();
    actor.send(writeReq(1, true));
    take();
    ticks(51);
    expect(take().filter((e) => e.type === 'reply')).toEqual([expect.objectContaining({ reqId: 1, ok: false })]);
    actor.send(writeReq(2));
    actor.send(ack('r1', 2));
    actor.send(ack('r2', 2));
    expect(take().filter((e) => e.type === 'reply')).toEqual([{ type: 'reply', reqId: 2, ok: true }]);
  });

  it('keeps committed writes until every member has them on disk, and resends them to a head that lacks them', () => {
    // The tail was behind; the chain loses head and middle (a cut-off controller failed them
    // while they went on committing): the old tail leads the new chain without the last writes.
    const { actor, take } = start();
    for (let i = 1; i <= 3; i++) actor.send(writeReq(i));
    actor.send(ack('r1', 3, 3));
    actor.send(ack('r2', 3, 3));
    actor.send(ack('r3', 1, 1));
    expect(take().filter((e) => e.type === 'reply').map((e) => (e as { reqId: number }).reqId)).toEqual([1, 2, 3]);
    actor.send({ type: 'config', config: config(2, [chain[2]]) });
    expect(sentVersions(take(), 'r3')).toEqual([2, 3]);
  });

  it('a head that restarted with less than it acked is sent what it lost', () => {
    const { actor, take } = start();
    for (let i = 1; i <= 3; i++) actor.send(writeReq(i));
    for (const id of ['r1', 'r2', 'r3']) actor.send(ack(id, 3, 1));
    take();
    // r1 crashed: it recovered only what it had flushed.
    actor.send({ type: 'link.down', id: 'r1' });
    actor.send({ type: 'link.up', id: 'r1', appliedVersion: 1 });
    expect(sentVersions(take(), 'r1')).toEqual([2, 3]);
  });

  it('asks, once a tick, the members that lack committed writes on disk to flush them', () => {
    const { actor, take, ticks } = start();
    actor.send(writeReq(1));
    actor.send(ack('r1', 1, 1));
    actor.send(ack('r2', 1));
    actor.send(ack('r3', 1));
    take();
    ticks(1);
    expect(flushesTo(take())).toEqual([{ to: 'r2', v: 1 }, { to: 'r3', v: 1 }]);
    actor.send(ack('r2', 1, 1));
    actor.send(ack('r3', 1, 1));
    ticks(1);
    expect(flushesTo(take())).toEqual([]);
    expect(actor.getSnapshot().context.writes.size).toBe(0);
  });

  it('a flush is answered by a majority of the current chain, not of a smaller one before it', () => {
    const { actor, take } = start();
    actor.send({ type: 'config', config: config(2, [chain[0]]) });
    actor.send(writeReq(1));
    actor.send({ type: 'ack', id: 'r1', epoch: 2, appliedVersion: 1, durableVersion: 1 });
    take();
    // The chain grows back to two: both must hold v1 on disk now.
    actor.send({ type: 'config', config: config(3, chain.slice(0, 2)) });
    take();
    actor.send({ type: 'io.flush', reqId: 9 });
    expect(take().filter((e) => e.type === 'reply')).toEqual([]);
    actor.send({ type: 'ack', id: 'r2', epoch: 3, appliedVersion: 1, durableVersion: 1 });
    expect(take().filter((e) => e.type === 'reply')).toEqual([{ type: 'reply', reqId: 9, ok: true }]);
  });

  it('a restarted driver waits for the head too: a majority behind it would have it hand out the head’s newest versions again', () => {
    const emitted: DriverEmitted[] = [];
    const actor = createActor(driverMachine, { clock: new SimulatedClock(), input: { id: 'd', tickMs: 100, writeTimeoutTicks: 50, readTimeoutTicks: 10, quorumGraceTicks: 20 } });
    actor.on('*', (e) => emitted.push(e as DriverEmitted));
    actor.start();
    actor.send({ type: 'config', config: config(1) });
    actor.send({ type: 'link.up', id: 'r2', appliedVersion: 155 });
    actor.send({ type: 'link.up', id: 'r3', appliedVersion: 155 });
    expect(actor.getSnapshot().value).toBe('attaching');
    actor.send({ type: 'link.up', id: 'r1', appliedVersion: 156 });
    expect(actor.getSnapshot().value).toBe('attached');
    emitted.length = 0;
    actor.send(writeReq(1));
    expect(emitted).toEqual([expect.objectContaining({ type: 'send', to: 'r1', frames: [expect.objectContaining({ v: 157 })] })]);
  });

  it('a gap the head reports is answered next tick, not bounced back at once', () => {
    const { actor, take, ticks } = start();
    for (let i = 1; i <= 2; i++) actor.send(writeReq(i));
    for (const id of ['r1', 'r2', 'r3']) actor.send(ack(id, 2, 2));
    actor.send(writeReq(3));
    take();
    // The head lost v1 and v2 (durable everywhere, so no longer kept): it refuses v3.
    actor.send({ type: 'peer.error', from: 'r1', frame: { t: 'error', code: 'ERR_VERSION_GAP', message: 'r1 expected version 1 next', epoch: 1 } });
    expect(take()).toEqual([]);
    ticks(1);
    expect(sentVersions(take(), 'r1')).toEqual([3]);
  });
});

/**
 * The simulator's own parts: if these lie, every seed that passes proves nothing. A seeded
 * PRNG that replays, a scheduler that orders by time then arrival, links that are FIFO and lose
 * what is in flight when they break, a disk that keeps the durable prefix across a crash and
 * cuts a torn record, and a checker that does catch a stale read, a divergent record, a bad image.
 */
import { describe, expect, it } from 'vitest';
import { blockData, Checker } from '../../sim/checker.js';
import { SimStore } from '../../sim/disk.js';
import { Network, SimDialer, type LinkEnd } from '../../sim/network.js';
import { Rng } from '../../sim/rng.js';
import { Scheduler } from '../../sim/scheduler.js';
import { Trace } from '../../sim/trace.js';
import type { Frame, WriteFrame } from '../../protocol/frames.js';

const B = 512;
const w = (v: number, opId: number, block: number): WriteFrame => ({ t: 'write', epoch: 1, v, kind: 'write', offsetBytes: block * B, lengthBytes: B, data: blockData(opId, block, B) });

describe('Rng', () => {
  it('replays from its seed; forks are independent of later draws', () => {
    const a = new Rng(42);
    const b = new Rng(42);
    expect(Array.from({ length: 5 }, () => a.u32())).toEqual(Array.from({ length: 5 }, () => b.u32()));
    const c = new Rng(7);
    const f1 = c.fork();
    const x = f1.next();
    const d = new Rng(7);
    const f2 = d.fork();
    d.next();
    d.next();
    expect(f2.next()).toBe(x);
    expect(new Rng(1).u32()).not.toBe(new Rng(2).u32());
  });
});

describe('Scheduler', () => {
  it('runs tasks by time, then in the order they were scheduled; cancelled ones never', () => {
    const s = new Scheduler();
    const out: string[] = [];
    s.after(5, () => out.push('b'));
    s.after(1, () => out.push('a'));
    s.after(5, () => out.push('c'));
    const x = s.after(3, () => out.push('x'));
    s.cancel(x);
    s.runUntil(10);
    expect(out).toEqual(['a', 'b', 'c']);
    expect(s.now).toBe(10);
  });

  it('gives XState a clock whose timers die with their owner', () => {
    const s = new Scheduler();
    const owner = { alive: true };
    let fired = 0;
    s.clock(owner).setTimeout(() => fired++, 10);
    owner.alive = false;
    s.runUntil(20);
    expect(fired).toBe(0);
  });
});

describe('Network', () => {
  function pair(seed = 1) {
    const sched = new Scheduler();
    const net = new Network(sched, new Rng(seed), new Trace(false, () => sched.now));
    const got: Frame[][] = [];
    let acceptorEnd: LinkEnd | null = null;
    net.listen('b', {
      alive: true,
      accept(end) {
        acceptorEnd = end;
        end.send({ t: 'welcome', role: 'replica', id: 'b', epoch: 1, appliedVersion: 0 });
        end.onBatch = (frames) => got.push(frames);
      },
    });
    const owner = { alive: true, id: 'a' };
    const dialer = new SimDialer(net, owner, 'sim://b', 'b', () => ({ t: 'hello', role: 'driver', id: 'a', epoch: 1, clusterId: 'c' }), new Rng(seed + 1), {
      reconnectMinMs: 50, reconnectMaxMs: 2000, stableLinkMs: 10_000, helloTimeoutMs: 5000,
    });
    const events: string[] = [];
    dialer.handlers.up = () => events.push('up');
    dialer.handlers.down = () => events.push('down');
    return { sched, net, dialer, got, events, acceptor: () => acceptorEnd };
  }

  it('delivers in order on one link, frames of one step as one batch', () => {
    const { sched, dialer, got, events } = pair();
    sched.runUntil(100);
    expect(events).toEqual(['up']);
    for (let v = 1; v <= 3; v++) dialer.send(w(v, v, 0));
    sched.drain();
    sched.after(0, () => {
      for (let v = 4; v <= 6; v++) dialer.send(w(v, v, 0));
    });
    sched.runUntil(1000);
    expect(got.map((b) => b.map((f) => (f as WriteFrame).v))).toEqual([[1, 2, 3], [4, 5, 6]]);
  });

  it('a partition breaks the link: what was in flight is lost, both sides notice, and it redials once healed', () => {
    const { sched, net, dialer, got, events } = pair(3);
    sched.runUntil(100);
    dialer.send(w(1, 1, 0));
    sched.drain();
    net.block('a', 'b');
    sched.runUntil(3000);
    expect(got).toEqual([]);
    expect(events).toEqual(['up', 'down']);
    net.unblock('a', 'b');
    sched.runUntil(30_000);
    expect(events).toEqual(['up', 'down', 'up']);
  });
});

describe('SimStore', () => {
  it('applies versions in order, ignores resends, refuses a gap', () => {
    const s = new SimStore(4 * B);
    s.append(w(1, 1, 0));
    s.append(w(1, 1, 0));
    expect(s.version).toBe(1);
    expect(() => s.append(w(3, 3, 0))).toThrow(expect.objectContaining({ code: 'ERR_VERSION_GAP' }));
  });

  it('a crash keeps what was flushed and maybe a prefix of the rest; a torn record is cut', () => {
    for (let seed = 1; seed <= 40; seed++) {
      const s = new SimStore(4 * B);
      for (let v = 1; v <= 10; v++) s.append(w(v, v, v % 4));
      s.completeFlush(4);
      const r = s.crash(new Rng(seed), 0.5);
      expect(r.after).toBeGreaterThanOrEqual(4);
      expect(r.after).toBeLessThanOrEqual(10);
      expect(s.version).toBe(r.after);
      expect(s.durableVersion).toBe(r.after);
      // Content is exactly versions 1…after.
      const expected = new SimStore(4 * B);
      for (let v = 1; v <= r.after; v++) expected.append(w(v, v, v % 4));
      expect(s.sameAs(expected)).toBe(true);
    }
  });

  it('an image replaces everything, durably; the log before it is gone', () => {
    const s = new SimStore(4 * B, 2);
    for (let v = 1; v <= 5; v++) s.append(w(v, v, 0));
    expect(s.hasRecordsSince(2)).toBe(false);
    expect(s.hasRecordsSince(3)).toBe(true);
    const image = new Uint8Array(4 * B).fill(7);
    s.commitImage(9, image);
    expect([s.version, s.durableVersion, s.hasRecordsSince(5)]).toEqual([9, 9, false]);
    expect(s.read(0, 4)).toEqual(new Uint8Array(4).fill(7));
  });
});

describe('Checker', () => {
  function history() {
    const c = new Checker(4, B);
    c.recordVersion({ v: 1, kind: 'write', offsetBytes: 0, lengthBytes: B, data: blockData(1, 0, B), opId: 1 });
    c.recordVersion({ v: 2, kind: 'write', offsetBytes: 0, lengthBytes: B, data: blockData(2, 0, B), opId: 2 });
    return c;
  }

  it('accepts a read of the newest acknowledged write or of one in flight', () => {
    const c = history();
    c.checkRead('r', 0, blockData(1, 0, B), 1, 2);
    c.checkRead('r', 0, blockData(2, 0, B), 1, 2);
    expect(c.failure).toBeNull();
  });

  it('catches a stale read: older than a write acknowledged before it was sent', () => {
    const c = history();
    c.checkRead('r', 0, blockData(1, 0, B), 2, 2);
    expect(c.failure).toMatch(/no single version/);
  });

  it('catches a read of a block never written that way, and zeros after a write', () => {
    const c = history();
    c.checkRead('r', 0, blockData(1, 3, B), 0, 2);
    expect(c.failure).toMatch(/misplaced/);
    const d = history();
    d.checkRead('r', 0, new Uint8Array(B), 1, 2);
    expect(d.failure).toMatch(/no single version/);
  });

  it('catches a replica applying a version that differs from the driver’s, and a wrong image', () => {
    const c = history();
    c.checkAppend('r1', { v: 2, kind: 'write', offsetBytes: 0, lengthBytes: B, data: blockData(1, 0, B) });
    expect(c.failure).toMatch(/differs/);
    const d = history();
    d.checkImage('r2', 2, new Uint8Array(4 * B));
    expect(d.failure).toMatch(/image at version 2 that differs/);
  });
});

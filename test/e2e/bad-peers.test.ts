/**
 * Peers that misbehave against real replica processes: garbage instead of a hello, a peer that
 * hangs up in the middle of a WebSocket frame, a member that is not the writer, a stale epoch,
 * a version gap. Each is refused with a clear error; the cluster keeps serving and nothing
 * acknowledged is lost.
 */
import { connect } from 'node:net';
import { afterAll, afterEach, describe, expect } from 'vitest';
import WebSocket from 'ws';
import { createLogger } from '../../actors/logger.js';
import { DialingLink } from '../../protocol/dialer.js';
import type { ErrorFrame, Frame, HelloFrame } from '../../protocol/frames.js';
import { startCluster, type TestCluster } from '../helpers/cluster.js';
import { ProcessTracker, waitUntil } from '../helpers/processes.js';
import { itWith, requirements } from '../helpers/tools.js';

const MiB = 1024 * 1024;
const procs = new ProcessTracker();
let cluster: TestCluster | undefined;
const links: DialingLink[] = [];

afterEach(async () => {
  await Promise.all(links.splice(0).map((l) => l.close()));
  await cluster?.stop();
  cluster = undefined;
});
afterAll(() => procs.stopAll());

async function status(port: number): Promise<{ state: string; epoch: number; appliedVersion: number }> {
  return (await fetch(`http://127.0.0.1:${port}/status`)).json() as Promise<{ state: string; epoch: number; appliedVersion: number }>;
}

/** Dial a replica as `id` and collect the error frames it answers with. */
async function dialAs(port: number, id: string, epoch: number): Promise<{ link: DialingLink; errors: ErrorFrame[] }> {
  const hello: HelloFrame = { t: 'hello', role: 'replica', id, epoch, clusterId: 'freebs' };
  const link = new DialingLink({ url: `ws://127.0.0.1:${port}`, hello, logger: createLogger('test', 'silent') });
  links.push(link);
  const errors: ErrorFrame[] = [];
  link.on('batch', (b) => {
    for (const f of b.frames as Frame[]) if (f.t === 'error') errors.push(f);
  });
  await new Promise<void>((resolve) => link.once('up', () => resolve()));
  return { link, errors };
}

const write = (epoch: number, v: number): Frame => ({ t: 'write', epoch, v, kind: 'write', offsetBytes: 0, lengthBytes: 4096, data: new Uint8Array(4096).fill(0xee) });

describe('misbehaving peers against real replicas', () => {
  itWith(requirements({ commands: ['qemu-io'] }), 'are refused with clear errors; the cluster keeps serving and loses nothing', async () => {
    cluster = await startCluster({ sizeBytes: 64 * MiB });
    const c = cluster;
    const io = (...cmds: string[]) => procs.run('qemu-io', ['-f', 'raw', ...cmds.flatMap((x) => ['-c', x]), c.nbdUri], { timeoutMs: 60_000 });
    expect((await io('write -P 0x5a 0 1M')).code).toBe(0);
    const r2 = c.replicas[1];
    const before = await status(r2.port);
    expect(before.state).toBe('serving');

    // Garbage instead of a hello: dropped.
    const raw = new WebSocket(`ws://127.0.0.1:${r2.port}`);
    await new Promise((resolve) => raw.once('open', resolve));
    raw.send(Buffer.from('this is not msgpack, not a hello'));
    await new Promise((resolve) => raw.once('close', resolve));

    // A WebSocket frame cut off in the middle.
    const socket = connect(r2.port, '127.0.0.1');
    socket.on('error', () => {});
    await new Promise((resolve) => socket.once('connect', resolve));
    socket.write('GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n');
    await new Promise((resolve) => socket.once('data', resolve));
    socket.write(Buffer.concat([Buffer.from([0x82, 0xfe, 0x03, 0xe8, 1, 2, 3, 4]), Buffer.alloc(10, 0x55)]));
    socket.destroy();

    // A member that is not r2's writer.
    const stranger = await dialAs(r2.port, 'intruder', before.epoch);
    stranger.link.send(write(before.epoch, before.appliedVersion + 1));
    await waitUntil(() => stranger.errors.length > 0, 'a refusal of the intruder');
    expect(stranger.errors[0]).toMatchObject({ code: 'ERR_NOT_SERVING' });
    expect(stranger.errors[0].message).toMatch(/takes writes from r1, not intruder/);

    // Its predecessor's name with a stale epoch, then a version gap.
    const stale = await dialAs(r2.port, 'r1', 0);
    stale.link.send(write(0, before.appliedVersion + 1));
    await waitUntil(() => stale.errors.length > 0, 'a refusal of the stale epoch');
    expect(stale.errors[0]).toMatchObject({ code: 'ERR_EPOCH_STALE', epoch: before.epoch });
    stale.link.send(write(before.epoch, (await status(r2.port)).appliedVersion + 5));
    await waitUntil(() => stale.errors.length > 1, 'a refusal of the version gap');
    expect(stale.errors[1]).toMatchObject({ code: 'ERR_VERSION_GAP' });
    await stale.link.close();

    // Still serving, everything acknowledged is there, new writes work, replicas converge.
    const read = await io('read -P 0x5a 0 1M');
    expect(read.stdout + read.stderr).not.toMatch(/error|failed|mismatch/i);
    expect((await io('write -P 0x77 1M 1M', 'read -P 0x77 1M 1M')).code).toBe(0);
    const final = await waitUntil(async () => {
      const all = await Promise.all(c.replicas.map((r) => status(r.port)));
      return all.every((s) => s.state === 'serving' && s.appliedVersion === all[0].appliedVersion) ? all : null;
    }, 'replicas serving at one version', 20_000, 100);
    expect(final[0].appliedVersion).toBeGreaterThan(before.appliedVersion);
  });
});

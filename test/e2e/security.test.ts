/**
 * Strangers and stale members against a real cluster whose members share a secret (each replica
 * and the driver its own process, started with --secret-file): a peer with no credential, one
 * with the wrong secret, one in another cluster, a replayed upgrade request, frames replayed from
 * an old epoch by a member, an oversized frame, and slow lorises from another address. Each is
 * refused and logged; nothing acknowledged is lost; the cluster keeps serving (qemu-io and fio
 * verify through the driver) and the replicas converge.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect } from 'vitest';
import WebSocket from 'ws';
import { createLogger } from '../../actors/logger.js';
import { AuthHeaders, CHALLENGE_PATH, parseChallenge, upgradeHeaders } from '../../protocol/auth.js';
import { encodeBatch } from '../../protocol/codec.js';
import { DialingLink, type DialFailure, type DialingLinkOptions } from '../../protocol/dialer.js';
import type { ErrorFrame, Frame, HelloFrame } from '../../protocol/frames.js';
import { startCluster, type TestCluster } from '../helpers/cluster.js';
import { fioJobs } from '../helpers/fio.js';
import { ProcessTracker, waitUntil } from '../helpers/processes.js';
import { itWith, requirements } from '../helpers/tools.js';

const MiB = 1024 * 1024;
const procs = new ProcessTracker();
const keyDir = mkdtempSync(path.join(os.tmpdir(), 'freebs-secret-'));
const secretFile = path.join(keyDir, 'secret');
writeFileSync(secretFile, `${randomBytes(32).toString('hex')}\n`, { mode: 0o600 });
const secret = readFileSync(secretFile).subarray(0, 64);
let cluster: TestCluster | undefined;
const links: DialingLink[] = [];
const sockets: Socket[] = [];

afterAll(async () => {
  for (const s of sockets) s.destroy();
  await Promise.all(links.splice(0).map((l) => l.close()));
  await cluster?.stop();
  await procs.stopAll();
  rmSync(keyDir, { recursive: true, force: true });
});

interface Status {
  state: string;
  epoch: number;
  appliedVersion: number;
}
const status = async (port: number): Promise<Status> => (await fetch(`http://127.0.0.1:${port}/status`)).json() as Promise<Status>;

function dialer(port: number, options: Partial<DialingLinkOptions> & { hello: HelloFrame }): DialingLink {
  const link = new DialingLink({ url: `ws://127.0.0.1:${port}`, logger: createLogger('test', 'silent'), limits: { reconnectMinMs: 5000, reconnectMaxMs: 5000 }, ...options });
  links.push(link);
  return link;
}

const firstFailure = (link: DialingLink): Promise<DialFailure> => new Promise((resolve) => link.once('dial-error', resolve));

/** An upgrade request with exactly these headers: the open WebSocket, or the HTTP status of the refusal. */
function upgrade(port: number, headers: Record<string, string>): Promise<{ ws?: WebSocket; status?: number; code?: string }> {
  return new Promise((resolve) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}`, { headers, perMessageDeflate: false });
    ws.on('error', () => {});
    ws.once('open', () => resolve({ ws }));
    ws.once('unexpected-response', (req, res) => {
      req.destroy();
      resolve({ status: res.statusCode, code: res.headers[AuthHeaders.error] as string });
    });
  });
}

async function credential(port: number, id: string) {
  const text = await (await fetch(`http://127.0.0.1:${port}${CHALLENGE_PATH}`)).text();
  return upgradeHeaders(secret, parseChallenge(text)!, { clusterId: 'freebs', id, role: 'replica' }).headers;
}

const write = (epoch: number, v: number, fill: number): Frame => ({ t: 'write', epoch, v, kind: 'write', offsetBytes: 0, lengthBytes: 4096, data: new Uint8Array(4096).fill(fill) });

describe('a cluster with a secret, against strangers and stale members', () => {
  itWith(requirements({ commands: ['qemu-io', 'fio'] }), 'refuses each and logs it; nothing is lost and the cluster keeps serving', async () => {
    cluster = await startCluster({ sizeBytes: 64 * MiB, secretFile });
    const c = cluster;
    const io = (...cmds: string[]) => procs.run('qemu-io', ['-f', 'raw', ...cmds.flatMap((x) => ['-c', x]), c.nbdUri], { timeoutMs: 60_000 });
    expect((await io('write -P 0x5a 0 1M')).code).toBe(0);
    const r2 = c.replicas[1]!;
    const before = await status(r2.port);
    expect(before.state).toBe('serving');

    // Slow lorises from another address (127.0.0.2 stands for another host): they take the
    // handshake slots of that address only, and are dropped after the handshake bound (5 s),
    // while everything below goes on.
    const lorises = Array.from({ length: 24 }, () => {
      const s = connect({ host: '127.0.0.1', port: r2.port, localAddress: '127.0.0.2' });
      s.on('error', () => {});
      sockets.push(s);
      return new Promise<number>((resolve) => {
        const startedMs = Date.now();
        s.once('close', () => resolve(Date.now() - startedMs));
      });
    });

    // A stranger with no credential never gets a WebSocket; a DialingLink without the secret is told why.
    expect(await upgrade(r2.port, {})).toMatchObject({ status: 401, code: 'ERR_AUTH_REQUIRED' });
    const hello: HelloFrame = { t: 'hello', role: 'replica', id: 'intruder', epoch: before.epoch, clusterId: 'freebs' };
    expect(await firstFailure(dialer(r2.port, { hello }))).toMatchObject({ code: 'ERR_AUTH_REQUIRED' });
    // The wrong secret; the right secret but another cluster.
    expect(await firstFailure(dialer(r2.port, { hello, security: { secret: randomBytes(32) } }))).toMatchObject({ code: 'ERR_AUTH_FAILED' });
    expect(await firstFailure(dialer(r2.port, { hello: { ...hello, clusterId: 'other' }, security: { secret } }))).toMatchObject({ code: 'ERR_WRONG_CLUSTER' });
    // A recorded upgrade request, replayed.
    const recorded = await credential(r2.port, 'r1');
    const first = await upgrade(r2.port, recorded);
    expect(first.ws).toBeDefined();
    first.ws!.terminate();
    expect(await upgrade(r2.port, recorded)).toMatchObject({ status: 401, code: 'ERR_AUTH_FAILED' });

    // Members (they hold the secret) replaying frames of an old epoch. As r2's predecessor: a
    // write of epoch 0 is refused as stale. As a driver of the past: its epoch-0 config (which
    // would make it r2's writer, in a chain of one) is ignored, and its writes are refused.
    const replayed = async (who: HelloFrame, frames: Frame[], until: (e: ErrorFrame[]) => boolean): Promise<ErrorFrame[]> => {
      const link = dialer(r2.port, { hello: who, security: { secret } });
      const errors: ErrorFrame[] = [];
      link.on('batch', (b) => {
        for (const f of b.frames) if (f.t === 'error') errors.push(f);
      });
      await new Promise((resolve) => link.once('up', resolve));
      for (const f of frames) link.send(f);
      await waitUntil(() => until(errors), `the refusals of ${who.id}`);
      await link.close();
      return errors;
    };
    const asPredecessor = await replayed({ ...hello, id: 'r1', epoch: 0 }, [write(0, before.appliedVersion + 1, 0xee)], (e) => e.length > 0);
    expect(asPredecessor[0]).toMatchObject({ code: 'ERR_EPOCH_STALE', epoch: before.epoch });
    const oldDriver = await replayed(
      { ...hello, role: 'driver', id: 'old-driver', epoch: 0 },
      [
        { t: 'config', epoch: 0, chain: [{ id: 'r2', url: `ws://127.0.0.1:${r2.port}` }], driverId: 'old-driver', volume: { name: 'freebs', sizeBytes: 64 * MiB } },
        write(0, before.appliedVersion + 1, 0xee),
      ],
      (e) => e.length > 0,
    );
    expect(oldDriver[0]).toMatchObject({ code: 'ERR_NOT_SERVING', message: expect.stringContaining('not old-driver') });
    expect(await status(r2.port)).toMatchObject({ state: 'serving', epoch: before.epoch });

    // An oversized frame from an authenticated peer: a header announcing 100 MiB is refused with
    // 1009 before any of it is buffered.
    const big = await upgrade(r2.port, await credential(r2.port, 'big'));
    const bigClosed = new Promise<number>((resolve) => big.ws!.once('close', (code) => resolve(code)));
    big.ws!.send(encodeBatch({ from: 'big', lc: 1, frames: [{ ...hello, id: 'big' }] }));
    const header = Buffer.alloc(14);
    header[0] = 0x82;
    header[1] = 0x80 | 127;
    header.writeBigUInt64BE(BigInt(100 * MiB), 2);
    (big.ws as unknown as { _socket: Socket })._socket.write(header);
    expect(await bigClosed).toBe(1009);

    // I/O through the driver goes on while the lorises hang.
    expect((await io('write -P 0x33 2M 1M', 'read -P 0x33 2M 1M')).code).toBe(0);

    // Every loris is gone: the ones past the per-address bound at once, the rest after ~5 s.
    const lifetimesMs = await Promise.all(lorises);
    expect(lifetimesMs.filter((ms) => ms < 1000).length).toBeGreaterThanOrEqual(24 - 16);
    expect(Math.max(...lifetimesMs)).toBeLessThan(8000);

    // Nothing acknowledged is lost, r2 is in its epoch, new writes work, fio verifies, replicas converge.
    const read = await io('read -P 0x5a 0 1M', 'read -P 0x33 2M 1M');
    expect(read.code).toBe(0);
    expect(read.stdout + read.stderr).not.toMatch(/pattern verification failed|error/i);
    const fio = await procs.run('fio', [
      '--name=after', '--ioengine=nbd', `--uri=${c.nbdUri}`, '--rw=randwrite', '--bs=4k', '--size=8M', '--offset=16M',
      '--iodepth=8', '--verify=crc32c', '--do_verify=1', '--verify_state_save=0', '--output-format=json',
    ], { timeoutMs: 60_000 });
    expect(fio.code, fio.stderr).toBe(0);
    expect(fioJobs(fio.stdout)[0]!.error).toBe(0);
    const final = await waitUntil(async () => {
      const all = await Promise.all(c.replicas.map((r) => status(r.port)));
      return all.every((s) => s.state === 'serving' && s.appliedVersion === all[0]!.appliedVersion) ? all : null;
    }, 'replicas serving at one version', 20_000, 100);
    expect(final.map((s) => s.epoch)).toEqual([before.epoch, before.epoch, before.epoch]);
    expect(final[0]!.appliedVersion).toBeGreaterThan(before.appliedVersion);

    // And r2's log says what it refused.
    const log = readFileSync(r2.member.logPath, 'utf8');
    for (const code of ['ERR_AUTH_REQUIRED', 'ERR_AUTH_FAILED', 'ERR_WRONG_CLUSTER', 'ERR_OVERLOADED']) expect(log).toContain(code);
  });
});

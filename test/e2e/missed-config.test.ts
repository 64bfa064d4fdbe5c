/**
 * A configuration that reaches only some members — the controller died in the middle of its
 * broadcast — must not stall I/O until the controller is back: whoever is refused for an older
 * epoch learns the newer configuration from the member that refused it (and a member that
 * refuses something newer is told it by the sender). The test plays the controller itself, so it
 * decides exactly who hears of each epoch; replicas and driver are real `freebs` processes.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../actors/logger.js';
import { spawnMember, stopMember, waitForLine, type MemberProcess } from '../../actors/member-process.js';
import { NbdClient } from '../../nbd/client.js';
import type { ChainMember, ConfigFrame, MemberId } from '../../protocol/frames.js';
import type { Link } from '../../protocol/link.js';
import { LinkServer } from '../../protocol/server.js';
import { waitUntil } from '../helpers/processes.js';

const MiB = 1024 * 1024;
const T = 250;
const dir = mkdtempSync(path.join(os.tmpdir(), 'freebs-missed-config-'));
const members: MemberProcess[] = [];
const links = new Map<MemberId, Link>();
let server: LinkServer | undefined;
let client: NbdClient | undefined;

afterAll(async () => {
  await client?.disconnect().catch(() => undefined);
  await Promise.all(members.map((m) => stopMember(m)));
  await server?.close();
  rmSync(dir, { recursive: true, force: true });
});

type Status = { epoch: number; state: string };
const statusOf = async (url: string) => (await fetch(`${url}/status`)).json() as Promise<Status>;

describe('a configuration the controller sent to only some members before it died', () => {
  it('reaches the others through the members that have it; writes go on within a beat or two', async () => {
    // The test is the controller: it answers hellos and hands out configurations, nothing else.
    server = new LinkServer({
      localId: 'controller',
      clusterId: 'freebs',
      logger: createLogger('test', 'silent'),
      onLink: (link, hello) => {
        link.send({ t: 'welcome', role: 'controller', id: 'controller', epoch: 0, appliedVersion: 0 });
        links.set(hello.id, link);
      },
    });
    const { port } = await server.listen();
    const common = ['--cluster', 'freebs', '--heartbeat-ms', String(T), '--controller', `ws://127.0.0.1:${port}`];
    const chain: ChainMember[] = [];
    for (const id of ['r1', 'r2']) {
      const m = spawnMember(id, ['replica', '--id', id, '--dir', path.join(dir, id), '--size', String(64 * MiB), '--port', '0', ...common], path.join(dir, 'logs'));
      members.push(m);
      const line = await waitForLine(m, /^replica \S+ listening on (ws:\/\/\S+)/);
      chain.push({ id, url: /(ws:\/\/\S+)/.exec(line)![1] });
    }
    const driver = spawnMember('driver', ['driver', '--size', String(64 * MiB), '--nbd-port', '0', '--http-port', '0', ...common], path.join(dir, 'logs'));
    members.push(driver);
    const config = (epoch: number): ConfigFrame => ({ t: 'config', epoch, chain, driverId: 'driver', volume: { name: 'freebs', sizeBytes: 64 * MiB } });
    const tell = (epoch: number, to: MemberId[]) => {
      for (const id of to) links.get(id)!.send(config(epoch));
    };
    await waitUntil(() => ['r1', 'r2', 'driver'].every((id) => links.has(id)), 'every member to link to the controller', 30_000);
    tell(1, ['r1', 'r2', 'driver']);
    const ready = await waitForLine(driver, /^driver ready: (nbd:\/\/\S+)/);
    const driverUrl = /(http:\/\/[\d.]+:\d+)/.exec(ready)![1];
    const replicaUrl = (id: MemberId) => chain.find((m) => m.id === id)!.url.replace('ws:', 'http:');
    client = await NbdClient.connect(/(nbd:\/\/\S+)/.exec(ready)![1]);
    const block = (n: number) => Buffer.alloc(4096, n);
    await client.write(0, block(1));

    // Epoch 2 reaches only the head: the driver's writes (epoch 1) are refused by it, and the
    // tail refuses what the head forwards (epoch 2). Both must learn epoch 2 from the head.
    tell(2, ['r1']);
    await waitUntil(async () => (await statusOf(replicaUrl('r1'))).epoch === 2, 'the head to adopt epoch 2');
    let started = Date.now();
    await client.write(4096, block(2));
    const headOnlyMs = Date.now() - started;
    await waitUntil(async () => (await statusOf(driverUrl)).epoch === 2 && (await statusOf(replicaUrl('r2'))).epoch === 2, 'driver and tail at epoch 2', 15_000);

    // Epoch 3 reaches only the tail: the head is refused by it (what it forwards is older) and
    // learns epoch 3 from it; the driver then from the head.
    tell(3, ['r2']);
    await waitUntil(async () => (await statusOf(replicaUrl('r2'))).epoch === 3, 'the tail to adopt epoch 3');
    started = Date.now();
    await client.write(8192, block(3));
    const tailOnlyMs = Date.now() - started;
    await waitUntil(async () => (await statusOf(driverUrl)).epoch === 3 && (await statusOf(replicaUrl('r1'))).epoch === 3, 'driver and head at epoch 3', 15_000);

    console.log(`[missed config] a write took ${headOnlyMs} ms with epoch 2 only at the head, ${tailOnlyMs} ms with epoch 3 only at the tail`);
    // Without the controller these would wait until the driver's write timeout (30 s).
    expect(headOnlyMs).toBeLessThan(4 * T + 1000);
    expect(tailOnlyMs).toBeLessThan(4 * T + 1000);
    for (const [offset, n] of [[0, 1], [4096, 2], [8192, 3]]) expect((await client.read(offset, 4096)).equals(block(n))).toBe(true);
    await waitUntil(async () => {
      const all = await Promise.all([statusOf(replicaUrl('r1')), statusOf(replicaUrl('r2'))]);
      return all.every((st) => st.state === 'serving' && st.epoch === 3);
    }, 'both replicas serving at epoch 3', 15_000);
  });
});

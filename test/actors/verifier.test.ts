/**
 * The verifying workload against a real NBD server: a clean run verifies; a block put back to
 * an older generation than the acknowledged one is reported lost; foreign bytes are corrupt.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { blockContent, Verifier } from '../../actors/verifier.js';
import { NbdClient } from '../../nbd/client.js';
import { startNbdServer, type TestNbdServer } from '../helpers/nbd-server.js';

let srv: TestNbdServer;
beforeAll(async () => {
  srv = await startNbdServer({ exports: [{ name: '', sizeBytes: 8 * 1024 * 1024 }] });
});
afterAll(() => srv.close());

describe('Verifier', () => {
  it('verifies a clean run, then reports a lost acknowledged write and a corrupt block', async () => {
    const uri = srv.uriFor('');
    const v = new Verifier({ uri, blocks: 256, queueDepth: 8, flushEvery: 100, seed: 7 });
    await v.start();
    await new Promise((r) => setTimeout(r, 500));
    const report = await v.stop();
    expect(report.writesAcked).toBeGreaterThan(256);
    expect(report.flushesAcked).toBeGreaterThan(0);
    expect(report.clientErrors).toEqual({});
    const clean = await v.verify();
    expect(clean).toMatchObject({ lost: [], corrupt: [] });
    expect(clean.ok).toBe(clean.blocksChecked);
    expect(clean.blocksChecked).toBeGreaterThan(200);

    const c = await NbdClient.connect(uri);
    const generations = await Promise.all(Array.from({ length: 256 }, (_, b) => c.read(b * 4096, 4096).then((d) => d.readUInt32LE(8))));
    const rolled = generations.findIndex((g) => g >= 2);
    const garbled = generations.findIndex((g, b) => g >= 1 && b !== rolled);
    expect(rolled).toBeGreaterThanOrEqual(0);
    await c.write(rolled * 4096, blockContent(rolled, generations[rolled] - 1, 4096));
    await c.write(garbled * 4096, Buffer.alloc(4096, 0x5a));
    await c.disconnect();

    const damaged = await v.verify();
    expect(damaged.lost).toEqual([{ block: rolled, found: generations[rolled] - 1, acked: generations[rolled] }]);
    expect(damaged.corrupt).toEqual([garbled]);
    await v.close();
  });

  it('reports a refused connection as a clear error', async () => {
    await expect(NbdClient.connect('nbd://127.0.0.1:1/x', 2000)).rejects.toThrow(/ECONNREFUSED/);
  });
});

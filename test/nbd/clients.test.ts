/**
 * Real NBD clients against the server: nbdinfo, qemu-io, nbdcopy, fio. Each runs as a child
 * process on 127.0.0.1 and is stopped by PID at the end. A missing tool skips its test (or
 * fails it under FREEBS_REQUIRE_TOOLS=1).
 */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect } from 'vitest';
import { fioJobs } from '../helpers/fio.js';
import { startNbdServer, type TestNbdServer } from '../helpers/nbd-server.js';
import { ProcessTracker } from '../helpers/processes.js';
import { itWith, requirements } from '../helpers/tools.js';

const MiB = 1024 * 1024;
const procs = new ProcessTracker();
let srv: TestNbdServer;

beforeAll(async () => {
  srv = await startNbdServer({
    exports: [
      { name: '', sizeBytes: 64 * MiB, description: 'scratch' },
      { name: 'ro', sizeBytes: 4 * MiB, readOnly: true },
      { name: 'fio', sizeBytes: 64 * MiB },
      { name: 'qemu', sizeBytes: 16 * MiB },
    ],
  });
});

afterAll(async () => {
  await procs.stopAll();
  await srv?.close();
});

function sha256File(file: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const h = createHash('sha256');
    createReadStream(file)
      .on('data', (c) => h.update(c))
      .on('end', () => resolve(h.digest('hex')))
      .on('error', reject);
  });
}

describe('nbdinfo', () => {
  itWith(requirements({ commands: ['nbdinfo'] }), 'lists exports with size and truthful flags', async () => {
    const { stdout } = await procs.runOk('nbdinfo', ['--list', '--json', srv.uri], { timeoutMs: 30_000 });
    const info = JSON.parse(stdout) as { protocol: string; structured: boolean; exports: Array<Record<string, unknown>> };
    expect(info.protocol).toBe('newstyle-fixed');
    expect(info.structured).toBe(true);
    const byName = new Map(info.exports.map((e) => [e['export-name'] as string, e]));
    expect([...byName.keys()].sort()).toEqual(['', 'fio', 'qemu', 'ro']);
    expect(byName.get('')).toMatchObject({
      'export-size': 64 * MiB,
      description: 'scratch',
      is_read_only: false,
      can_flush: true,
      can_fua: true,
      can_trim: true,
      can_zero: true,
      can_cache: true,
      can_multi_conn: true,
      can_fast_zero: false,
      block_size_maximum: 32 * MiB,
    });
    expect(byName.get('ro')).toMatchObject({ 'export-size': 4 * MiB, is_read_only: true, can_trim: false, can_zero: false });
  });
});

describe('qemu-io', () => {
  itWith(requirements({ commands: ['qemu-io'] }), 'writes and reads back patterns', async () => {
    const uri = srv.uriFor('qemu');
    const { stdout } = await procs.runOk(
      'qemu-io',
      ['-f', 'raw', '-c', 'write -P 0xab 0 1M', '-c', 'write -P 0xcd 1M 64k', '-c', 'write -z 2M 1M', '-c', 'discard 3M 1M', '-c', 'flush',
        '-c', 'read -P 0xab 0 1M', '-c', 'read -P 0xcd 1M 64k', '-c', 'read -P 0 2M 1M', uri],
      { timeoutMs: 30_000 },
    );
    expect(stdout).not.toMatch(/verification failed|error/i);
    expect(stdout.match(/^read /gm)?.length).toBe(3);
    // A second process sees the data (it reached the backend, not a client cache).
    const again = await procs.runOk('qemu-io', ['-f', 'raw', '-r', '-c', 'read -P 0xab 0 1M', uri], { timeoutMs: 30_000 });
    expect(again.stdout).toContain('read 1048576/1048576');
    expect(again.stdout).not.toMatch(/verification failed/i);
  });

  itWith(requirements({ commands: ['qemu-io'] }), 'cannot open a read-only export for writing', async () => {
    const r = await procs.run('qemu-io', ['-f', 'raw', '-c', 'write -P 1 0 4k', srv.uriFor('ro')], { timeoutMs: 30_000 });
    expect(`${r.stdout}${r.stderr}`).toMatch(/Permission denied|read-only|EPERM/i);
  });
});

describe('nbdcopy', () => {
  itWith(requirements({ commands: ['nbdcopy'] }), 'copies 64 MiB of random data in and out unchanged', async () => {
    const input = path.join(srv.dir, 'in.img');
    const output = path.join(srv.dir, 'out.img');
    const data = randomBytes(64 * MiB);
    writeFileSync(input, data);
    await procs.runOk('nbdcopy', [input, srv.uri], { timeoutMs: 60_000 });
    await procs.runOk('nbdcopy', [srv.uri, output], { timeoutMs: 60_000 });
    expect(await sha256File(output)).toBe(createHash('sha256').update(data).digest('hex'));
  });
});

describe('fio', () => {
  itWith(requirements({ commands: ['fio'] }), 'random writes at QD16 verify with crc32c', async () => {
    const { stdout } = await procs.runOk(
      'fio',
      ['--name=verify', '--ioengine=nbd', `--uri=${srv.uriFor('fio')}`, '--rw=randwrite', '--bs=4k', '--iodepth=16', '--size=32M',
        '--verify=crc32c', '--do_verify=1', '--verify_fatal=1', '--verify_state_save=0', '--output-format=json'],
      { timeoutMs: 90_000 },
    );
    const job = fioJobs(stdout)[0];
    expect(job.error).toBe(0);
    expect(job.write.io_bytes).toBe(32 * MiB);
    expect(job.read.io_bytes).toBe(32 * MiB); // the verify pass read everything back
  });

  itWith(requirements({ commands: ['fio'] }), 'mixed 64k read/write at QD32 with verify', async () => {
    const { stdout } = await procs.runOk(
      'fio',
      ['--name=mixed', '--ioengine=nbd', `--uri=${srv.uriFor('fio')}`, '--rw=randrw', '--bs=64k', '--iodepth=32', '--size=32M',
        '--offset=32M', '--verify=crc32c', '--verify_fatal=1', '--verify_state_save=0', '--output-format=json'],
      { timeoutMs: 90_000 },
    );
    const job = fioJobs(stdout)[0];
    expect(job.error).toBe(0);
  });
});

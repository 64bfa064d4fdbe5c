/**
 * NBD over TLS (NBD_OPT_STARTTLS): certificates made with openssl for this run, real clients
 * (nbdinfo, nbdcopy, qemu-io) with libnbd's and qemu's certificate directories, and raw sockets
 * for what the clients will not do (plaintext options before TLS, STARTTLS twice, data in the
 * clear after STARTTLS).
 */
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect } from 'vitest';
import * as C from '../../nbd/constants.js';
import { startNbdServer, type TestNbdServer } from '../helpers/nbd-server.js';
import { ProcessTracker, waitUntil } from '../helpers/processes.js';
import { itWith, requirements } from '../helpers/tools.js';
import { RawNbdClient } from './raw-client.js';

const MiB = 1024 * 1024;
const procs = new ProcessTracker();
const dir = mkdtempSync(path.join(os.tmpdir(), 'freebs-nbd-tls-'));
/** libnbd and qemu read ca-cert.pem, client-cert.pem and client-key.pem from one directory. */
const clientDir = path.join(dir, 'client');
const noCertDir = path.join(dir, 'no-client-cert');
const pem = (name: string) => readFileSync(path.join(dir, name));
const hasOpenssl = requirements({ commands: ['openssl'] });
let required: TestNbdServer;
let optional: TestNbdServer;

/** A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA. */
function makeCertificates(): void {
  const openssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  openssl('req', '-x509', ...ec, '-keyout', 'ca-key.pem', '-out', 'ca-cert.pem', '-days', '2', '-subj', '/CN=freebs test CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
  for (const [who, san, usage] of [['server', 'IP:127.0.0.1,DNS:localhost', 'serverAuth'], ['client', 'DNS:client', 'clientAuth']]) {
    openssl('req', ...ec, '-keyout', `${who}-key.pem`, '-out', `${who}.csr`, '-subj', `/CN=${who}`);
    writeFileSync(path.join(dir, `${who}.ext`), `subjectAltName=${san}\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=${usage}\n`);
    openssl('x509', '-req', '-in', `${who}.csr`, '-CA', 'ca-cert.pem', '-CAkey', 'ca-key.pem', '-CAcreateserial', '-out', `${who}-cert.pem`, '-days', '2', '-extfile', `${who}.ext`);
  }
  mkdirSync(clientDir);
  mkdirSync(noCertDir);
  for (const f of ['ca-cert.pem', 'client-cert.pem', 'client-key.pem']) copyFileSync(path.join(dir, f), path.join(clientDir, f));
  copyFileSync(path.join(dir, 'ca-cert.pem'), path.join(noCertDir, 'ca-cert.pem'));
}

beforeAll(async () => {
  if (hasOpenssl.missing) return;
  makeCertificates();
  const tls = { key: pem('server-key.pem'), cert: pem('server-cert.pem'), ca: pem('ca-cert.pem') };
  required = await startNbdServer({ exports: [{ name: 'disk', sizeBytes: 16 * MiB }], tls });
  optional = await startNbdServer({ exports: [{ name: 'disk', sizeBytes: 4 * MiB }], tls: { ...tls, required: false } });
});

afterAll(async () => {
  await procs.stopAll();
  await required?.close();
  await optional?.close();
  rmSync(dir, { recursive: true, force: true });
});

const tlsUri = (srv: TestNbdServer, certs = clientDir) => `nbds://127.0.0.1:${srv.port}/disk?tls-certificates=${certs}`;

function sha256(file: string): string {
  return createHash('sha256').update(readFileSync(file)).digest('hex');
}

/** A raw client past the greeting and flags, before any option. */
async function rawClient(srv: TestNbdServer): Promise<RawNbdClient> {
  const c = await RawNbdClient.connect(srv.port);
  await c.greeting();
  const flags = Buffer.alloc(4);
  flags.writeUInt32BE(C.NBD_FLAG_C_FIXED_NEWSTYLE | C.NBD_FLAG_C_NO_ZEROES);
  c.write(flags);
  return c;
}

const clientTls = () => ({ ca: pem('ca-cert.pem'), cert: pem('client-cert.pem'), key: pem('client-key.pem'), servername: 'localhost' });

describe('NBD over TLS', () => {
  itWith(requirements({ commands: ['openssl', 'nbdinfo'] }), 'nbdinfo connects with its certificates and sees the export through TLS', async () => {
    const { stdout } = await procs.runOk('nbdinfo', ['--json', tlsUri(required)], { timeoutMs: 30_000 });
    const info = JSON.parse(stdout) as { TLS: boolean; exports: Array<Record<string, unknown>> };
    expect(info.TLS).toBe(true);
    expect(info.exports[0]['export-size']).toBe(16 * MiB);
  });

  itWith(requirements({ commands: ['openssl', 'nbdcopy'] }), 'nbdcopy moves 8 MiB of random data in and out unchanged', async () => {
    const source = path.join(dir, 'in.img');
    const back = path.join(dir, 'out.img');
    writeFileSync(source, randomBytes(8 * MiB));
    await procs.runOk('nbdcopy', [source, tlsUri(required)], { timeoutMs: 60_000 });
    await procs.runOk('nbdcopy', [tlsUri(required), back], { timeoutMs: 60_000 });
    // The export is 16 MiB: compare the part written.
    expect(createHash('sha256').update(readFileSync(back).subarray(0, 8 * MiB)).digest('hex')).toBe(sha256(source));
  });

  itWith(requirements({ commands: ['openssl', 'qemu-io'] }), 'qemu-io writes and reads a pattern with its x509 credentials', async () => {
    const { stdout } = await procs.runOk(
      'qemu-io',
      [
        '--object', `tls-creds-x509,id=tls0,dir=${clientDir},endpoint=client`,
        '--image-opts', `driver=nbd,host=127.0.0.1,port=${required.port},export=disk,tls-creds=tls0`,
        '-c', 'write -P 0x5a 1M 64k', '-c', 'read -P 0x5a 1M 64k',
      ],
      { timeoutMs: 30_000 },
    );
    expect(stdout).toMatch(/wrote 65536\/65536 bytes/);
    expect(stdout).toMatch(/read 65536\/65536 bytes/);
    expect(stdout).not.toMatch(/Pattern verification failed/);
  });

  itWith(requirements({ commands: ['openssl', 'nbdinfo'] }), 'refuses plaintext clients of a TLS-only server, and clients without a certificate', async () => {
    const plain = await procs.run('nbdinfo', [`nbd://127.0.0.1:${required.port}/disk`], { timeoutMs: 30_000 });
    expect(plain.code).not.toBe(0);
    const noCert = await procs.run('nbdinfo', [tlsUri(required, noCertDir)], { timeoutMs: 30_000 });
    expect(noCert.code).not.toBe(0);
    expect(required.logs.some((l) => l.msg === 'nbd: TLS handshake failed' && /certificate/.test(String(l.obj.reason)))).toBe(true);
    // Everyone else is still served.
    await procs.runOk('nbdinfo', [tlsUri(required)], { timeoutMs: 30_000 });
  });

  itWith(hasOpenssl, 'answers options before STARTTLS with ERR_TLS_REQD and hangs up on EXPORT_NAME', async () => {
    const c = await rawClient(required);
    for (const option of [C.NBD_OPT_LIST, C.NBD_OPT_GO, C.NBD_OPT_INFO, C.NBD_OPT_STRUCTURED_REPLY]) {
      c.sendOption(option, option === C.NBD_OPT_GO || option === C.NBD_OPT_INFO ? Buffer.from([0, 0, 0, 0, 0, 0]) : undefined);
      const r = await c.optionReply();
      expect(r.option).toBe(option);
      expect(r.type).toBe(C.NBD_REP_ERR_TLS_REQD);
    }
    c.sendOption(C.NBD_OPT_EXPORT_NAME, Buffer.from('disk'));
    expect(await c.closedWithin()).toBe(true);
    expect(required.logs.some((l) => l.obj.code === 'ERR_NBD_TLS_REQUIRED')).toBe(true);
  });

  itWith(hasOpenssl, 'after STARTTLS haggling starts over through TLS; a second STARTTLS is invalid', async () => {
    const c = await rawClient(required);
    c.sendOption(C.NBD_OPT_STARTTLS, Buffer.from('x'));
    expect((await c.optionReply()).type).toBe(C.NBD_REP_ERR_INVALID);
    c.sendOption(C.NBD_OPT_STARTTLS);
    expect((await c.optionReply()).type).toBe(C.NBD_REP_ACK);
    const secure = await c.startTls(clientTls());
    expect(secure.authorized).toBe(true);
    c.sendOption(C.NBD_OPT_STARTTLS);
    expect((await c.optionReply()).type).toBe(C.NBD_REP_ERR_INVALID);
    const { sizeBytes } = await c.go('disk');
    expect(sizeBytes).toBe(16 * MiB);
    await c.disconnect();
  });

  itWith(hasOpenssl, 'drops a client that sends more in the clear right after STARTTLS', async () => {
    const c = await rawClient(required);
    const header = Buffer.alloc(16);
    header.writeBigUInt64BE(C.NBD_OPTS_MAGIC, 0);
    header.writeUInt32BE(C.NBD_OPT_STARTTLS, 8);
    // STARTTLS and, in the same packet, a plaintext LIST: the server must not read it as either.
    const list = Buffer.alloc(16);
    list.writeBigUInt64BE(C.NBD_OPTS_MAGIC, 0);
    list.writeUInt32BE(C.NBD_OPT_LIST, 8);
    c.write(Buffer.concat([header, list]));
    expect(await c.closedWithin()).toBe(true);
  });

  itWith(requirements({ commands: ['openssl', 'nbdinfo'] }), 'a server with optional TLS serves both kinds of client', async () => {
    const secure = JSON.parse((await procs.runOk('nbdinfo', ['--json', tlsUri(optional)], { timeoutMs: 30_000 })).stdout) as { TLS: boolean };
    expect(secure.TLS).toBe(true);
    const plain = JSON.parse((await procs.runOk('nbdinfo', ['--json', `nbd://127.0.0.1:${optional.port}/disk`], { timeoutMs: 30_000 })).stdout) as { TLS: boolean };
    expect(plain.TLS).toBe(false);
  });

  itWith(requirements({ commands: ['openssl', 'nbdinfo'] }), 'freebs serve --nbd-tls-*: nbds:// with client certificates; bad flags are refused with a clear error', async () => {
    const cli = path.join(import.meta.dirname, '../../cli/freebs.ts');
    const base = ['--import', 'tsx', cli, 'serve', '--dir', path.join(dir, 'serve'), '--size', '8M', '--port', '0'];
    const tlsFlags = ['--nbd-tls-cert', path.join(dir, 'server-cert.pem'), '--nbd-tls-key', path.join(dir, 'server-key.pem'), '--nbd-tls-ca', path.join(dir, 'ca-cert.pem')];
    const serve = procs.start(process.execPath, [...base, ...tlsFlags]);
    const line = await waitUntil(() => /serving (nbds:\/\/\S+) .*TLS required, client certificates required/.exec(serve.output()), 'the serving line', 30_000);
    const uri = `${line[1]}?tls-certificates=${clientDir}`;
    const info = JSON.parse((await procs.runOk('nbdinfo', ['--json', uri], { timeoutMs: 30_000 })).stdout) as { TLS: boolean; exports: Array<Record<string, unknown>> };
    expect(info.TLS).toBe(true);
    expect(info.exports[0]['export-size']).toBe(8 * MiB);
    await serve.stop();
    const noKey = await procs.run(process.execPath, [...base, '--nbd-tls-cert', path.join(dir, 'server-cert.pem')], { timeoutMs: 30_000 });
    expect(noKey.code).not.toBe(0);
    expect(noKey.stderr).toContain('NBD TLS needs both --nbd-tls-cert and --nbd-tls-key');
    const missing = await procs.run(process.execPath, [...base, '--nbd-tls-cert', path.join(dir, 'nope.pem'), '--nbd-tls-key', path.join(dir, 'server-key.pem')], { timeoutMs: 30_000 });
    expect(missing.code).not.toBe(0);
    expect(missing.stderr).toMatch(/--nbd-tls-cert .*nope\.pem: no such file/);
  });
});

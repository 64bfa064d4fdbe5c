/**
 * Member config files: YAML keys are the flag names; bad keys and values are errors naming the
 * file, key and value; flags and environment variables override the file; relative paths are
 * relative to the file. The example files in deploy/config/ must load.
 */
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Command, Option } from 'commander';
import { afterAll, describe, expect, it } from 'vitest';
import { ConfigError, loadConfigFile, resolveOptions } from '../../cli/config.js';
import { ensureSecretFile, isLoopback, loadSecurity, readSecretFile, SecurityError } from '../../cli/security.js';
import { createLogger } from '../../actors/logger.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'freebs-config-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function file(name: string, text: string): string {
  const p = path.join(dir, name);
  writeFileSync(p, text);
  return p;
}

function errorOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as Error).message;
  }
  throw new Error('expected a ConfigError');
}

/** The replica command's shape, as cli/freebs.ts declares it. */
function replicaCommand(argv: string[]): Command {
  const cmd = new Command('replica')
    .exitOverride()
    .option('--config <file>')
    .addOption(new Option('--secret-file <path>').env('FREEBS_TEST_SECRET_FILE'))
    .option('--id <id>')
    .option('--dir <path>')
    .option('--host <addr>', '', '127.0.0.1')
    .option('--port <port>', '', Number)
    .option('--heartbeat-ms <ms>', '', Number, 500)
    .action(() => {});
  cmd.parse(argv, { from: 'user' });
  return cmd;
}

describe('config files', () => {
  it('load with flag names as keys, sizes parsed, paths resolved against the file', () => {
    const p = file('r1.yaml', 'id: r1\ndir: data/r1\nsize: 10G\nport: 7401\nheartbeat-ms: 250\nsecret-file: /etc/freebs/secret\ncontroller: ws://10.0.0.10:8080\n');
    expect(loadConfigFile(p, 'replica')).toEqual({
      id: 'r1', dir: path.join(dir, 'data/r1'), size: 10 * 1024 ** 3, port: 7401, heartbeatMs: 250, secretFile: '/etc/freebs/secret', controller: 'ws://10.0.0.10:8080',
    });
    const chain = file('c.yaml', 'dir: /var/lib/freebs\nsize: 1G\nchain:\n  - r1=ws://a:1\n  - { id: r2, url: "wss://b:2" }\nspawn: false\ndriver-id: drv\n');
    expect(loadConfigFile(chain, 'controller')).toMatchObject({ chain: 'r1=ws://a:1,r2=wss://b:2', spawn: false, driverId: 'drv' });
    expect(loadConfigFile(file('empty.yaml', '# nothing\n'), 'driver')).toEqual({});
  });

  it('name the file, the key and the value when something is wrong', () => {
    const bad = file('bad.yaml', 'id: r1\nport: 99999\nheartbeat-ms: fast\nsize: 10Q\nhearbeat-ms: 3\ncontroller: http://x\n');
    const message = errorOf(() => loadConfigFile(bad, 'replica'));
    expect(message).toContain(`config ${bad}:`);
    expect(message).toContain('port: expected a TCP port (a whole number 0-65535), got 99999');
    expect(message).toContain('heartbeat-ms: expected a whole number ≥ 1, got "fast"');
    expect(message).toContain('size: not a size: "10Q"');
    expect(message).toContain('controller: expected a ws:// or wss:// address, got "http://x"');
    expect(message).toMatch(/unknown key "hearbeat-ms" for freebs replica \(known keys: .*heartbeat-ms/);
    expect(errorOf(() => loadConfigFile(file('nbd.yaml', 'nbd-port: 1\n'), 'replica'))).toContain('unknown key "nbd-port"');
    expect(errorOf(() => loadConfigFile(file('list.yaml', '- a\n'), 'driver'))).toContain('expected a map of settings');
    expect(errorOf(() => loadConfigFile(file('yaml.yaml', 'id: [\n'), 'driver'))).toContain('not valid YAML');
    expect(errorOf(() => loadConfigFile(path.join(dir, 'missing.yaml'), 'driver'))).toContain('cannot read it');
    expect(errorOf(() => loadConfigFile(file('chain.yaml', 'chain: [r1]\n'), 'driver'))).toContain('chain');
  });

  it('are overridden by flags and environment variables, and override defaults', () => {
    const p = file('o.yaml', `id: from-file\ndir: d\nport: 7000\nheartbeat-ms: 250\nhost: 10.0.0.5\nsecret-file: file-secret\n`);
    const fromFile = resolveOptions<Record<string, unknown>>(replicaCommand(['--config', p]), 'replica');
    expect(fromFile).toMatchObject({ id: 'from-file', port: 7000, heartbeatMs: 250, host: '10.0.0.5', secretFile: path.join(dir, 'file-secret') });
    const flags = resolveOptions<Record<string, unknown>>(replicaCommand(['--config', p, '--port', '7001', '--host', '127.0.0.1']), 'replica');
    expect(flags).toMatchObject({ id: 'from-file', port: 7001, host: '127.0.0.1', heartbeatMs: 250 });
    process.env.FREEBS_TEST_SECRET_FILE = '/run/secrets/freebs';
    try {
      expect(resolveOptions<Record<string, unknown>>(replicaCommand(['--config', p]), 'replica')).toMatchObject({ secretFile: '/run/secrets/freebs' });
    } finally {
      delete process.env.FREEBS_TEST_SECRET_FILE;
    }
  });

  it('say which required settings are missing, from flags and file together', () => {
    const p = file('partial.yaml', 'id: r1\n');
    expect(errorOf(() => resolveOptions(replicaCommand(['--config', p]), 'replica'))).toBe(
      'freebs replica: missing --dir, --port (give the flag, or the key in a --config file: "dir: …", "port: …")',
    );
    expect(resolveOptions(replicaCommand(['--config', p, '--dir', 'x', '--port', '1']), 'replica')).toMatchObject({ id: 'r1', dir: 'x', port: 1 });
  });

});

describe('cluster secret files', () => {
  const log = createLogger('test', 'silent');

  it('are made once, mode 0600, and read without the trailing newline', () => {
    const p = path.join(dir, 'secret');
    expect(ensureSecretFile(p)).toBe(true);
    expect(ensureSecretFile(p)).toBe(false);
    expect(statSync(p).mode & 0o777).toBe(0o600);
    expect(readSecretFile(p).toString()).toMatch(/^[0-9a-f]{64}$/);
  });

  it('refuse short secrets, and running without one on a non-loopback address unless --insecure', () => {
    expect(() => readSecretFile(file('short', 'abc\n'))).toThrow(/at least 16/);
    expect(() => loadSecurity({}, { name: 'replica r1', listenHost: '10.0.0.5', log })).toThrow(SecurityError);
    expect(() => loadSecurity({}, { name: 'replica r1', listenHost: '0.0.0.0', log })).toThrow(/--insecure/);
    expect(() => loadSecurity({ tlsCert: 'x' }, { name: 'replica r1', listenHost: '127.0.0.1', log })).toThrow(/together/);
    expect(isLoopback('127.0.0.1') && isLoopback('localhost') && isLoopback('::1') && !isLoopback('10.1.2.3')).toBe(true);
  });
});

/**
 * Config files for `freebs replica|driver|controller --config FILE`: YAML, one file per member,
 * whose keys are the command's flag names without the dashes (`heartbeat-ms: 500`). Flags given
 * on the command line (or through their environment variable) override the file; the file
 * overrides the defaults. Relative paths in the file are relative to the file's directory.
 * Unknown keys and bad values are errors that name the file, the key and the value.
 * deploy/README.md documents the format; deploy/config/ has an example per member.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { parseSizeBytes } from './size.js';

export type MemberCommand = 'replica' | 'driver' | 'controller';

const text = z.string({ error: 'expected a non-empty string' }).min(1, { error: 'expected a non-empty string' });
const id = z.string({ error: 'expected a member id (letters, digits, . _ -)' }).regex(/^[\w.-]+$/, { error: 'expected a member id (letters, digits, . _ -)' });
const port = z.number({ error: 'expected a TCP port (a whole number 0-65535)' }).int({ error: 'expected a TCP port (a whole number 0-65535)' }).min(0).max(65535, { error: 'expected a TCP port (a whole number 0-65535)' });
const positive = z.number({ error: 'expected a whole number ≥ 1' }).int({ error: 'expected a whole number ≥ 1' }).min(1, { error: 'expected a whole number ≥ 1' });
const flag = z.boolean({ error: 'expected true or false' });
const wsUrl = z.string({ error: 'expected a ws:// or wss:// address' }).regex(/^wss?:\/\/\S+$/, { error: 'expected a ws:// or wss:// address' });

const size = z.union([z.number(), z.string()], { error: 'expected a size such as 10G or a number of bytes' }).transform((value, ctx) => {
  try {
    return parseSizeBytes(String(value));
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: (err as Error).message });
    return z.NEVER;
  }
});

/** A chain as the flag takes it ("r1=ws://…,r2=ws://…"), or as a list of "id=url" or {id, url}. */
const chain = z
  .union(
    [
      z.string(),
      z.array(z.union([z.string().regex(/^[\w.-]+=wss?:\/\/\S+$/, { error: 'expected id=ws://host:port' }), z.strictObject({ id, url: wsUrl })])),
    ],
    { error: 'expected "id=ws://host:port,…" or a list of id=ws://host:port entries or {id, url} maps' },
  )
  .transform((value) => (typeof value === 'string' ? value : value.map((m) => (typeof m === 'string' ? m : `${m.id}=${m.url}`)).join(',')));

/** Keys that every member command takes. */
const common = {
  cluster: text,
  'secret-file': text,
  'tls-cert': text,
  'tls-key': text,
  'tls-ca': text,
  insecure: flag,
  host: text,
  'heartbeat-ms': positive,
};

export const configSchemas = {
  replica: z.strictObject({ ...common, id, dir: text, size, port, controller: wsUrl, 'write-buffer': size, 'sync-window': size }).partial(),
  driver: z
    .strictObject({ ...common, id, chain, controller: wsUrl, size, name: text, 'nbd-port': port, 'http-port': port, 'nbd-tls-cert': text, 'nbd-tls-key': text, 'nbd-tls-ca': text, 'nbd-tls-optional': flag })
    .partial(),
  controller: z.strictObject({ ...common, dir: text, chain, size, name: text, 'driver-id': id, replicas: positive, port, spawn: flag }).partial(),
} as const;

/** Keys holding paths, resolved against the config file's directory. */
const pathKeys = new Set(['dir', 'secret-file', 'tls-cert', 'tls-key', 'tls-ca', 'nbd-tls-cert', 'nbd-tls-key', 'nbd-tls-ca']);

/** What each command cannot run without, flag or file. */
const requiredKeys: Record<MemberCommand, string[]> = {
  replica: ['id', 'dir', 'port'],
  driver: ['size'],
  controller: ['dir', 'chain', 'size'],
};

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
}

const camel = (key: string): string => key.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());

function show(value: unknown): string {
  const json = JSON.stringify(value);
  return json === undefined ? String(value) : json.length > 60 ? `${json.slice(0, 57)}...` : json;
}

/** Read and validate FILE for `command`: option values keyed as commander keys them (camelCase). */
export function loadConfigFile(file: string, command: MemberCommand): Record<string, unknown> {
  let source: string;
  try {
    source = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`config ${file}: cannot read it: ${(err as Error).message}`);
  }
  let raw: unknown;
  try {
    raw = parseYaml(source) ?? {};
  } catch (err) {
    throw new ConfigError(`config ${file}: not valid YAML: ${(err as Error).message}`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new ConfigError(`config ${file}: expected a map of settings (key: value lines), got ${show(raw)}`);
  }
  const schema = configSchemas[command];
  const parsed = schema.safeParse(raw);
  if (!parsed.success) {
    const known = Object.keys(schema.shape).join(', ');
    const lines = parsed.error.issues.map((issue) => {
      if (issue.code === 'unrecognized_keys') {
        return issue.keys.map((k) => `unknown key "${k}" for freebs ${command} (known keys: ${known})`).join('\n  ');
      }
      const key = issue.path.map(String).join('.');
      let value: unknown = raw;
      for (const p of issue.path) value = (value as Record<PropertyKey, unknown> | undefined)?.[p as PropertyKey];
      // Custom issues (sizes) already quote the value.
      return issue.code === 'custom' ? `${key}: ${issue.message}` : `${key}: ${issue.message}, got ${show(value)}`;
    });
    throw new ConfigError(`config ${file}:\n  ${lines.join('\n  ')}`);
  }
  const dir = path.dirname(path.resolve(file));
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(parsed.data)) {
    if (value === undefined) continue;
    out[camel(key)] = pathKeys.has(key) && typeof value === 'string' ? path.resolve(dir, value) : value;
  }
  return out;
}

/**
 * The options of a member command after its --config file: flags and environment variables win,
 * then the file, then the defaults. Throws ConfigError for a bad file or a missing required key.
 */
export function resolveOptions<T>(cmd: Command, command: MemberCommand): T {
  const options: Record<string, unknown> = { ...cmd.opts() };
  const file = options.config;
  if (typeof file === 'string') {
    for (const [key, value] of Object.entries(loadConfigFile(file, command))) {
      const source = cmd.getOptionValueSource(key);
      if (source === 'cli' || source === 'env') continue;
      options[key] = value;
    }
  }
  const missing = requiredKeys[command].filter((key) => options[camel(key)] === undefined);
  if (missing.length > 0) {
    throw new ConfigError(
      `freebs ${command}: missing ${missing.map((k) => `--${k}`).join(', ')} (give the flag, or the key in a --config file: ${missing.map((k) => `"${k}: …"`).join(', ')})`,
    );
  }
  return options as T;
}

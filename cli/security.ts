/**
 * The cluster secret and TLS files of a member command, turned into the links' LinkSecurity.
 *
 * Policy without a secret: a member whose link port listens on loopback only (a single-host dev
 * cluster) runs unauthenticated, with a loud warning; one that listens on any other address
 * refuses to start unless --insecure says the operator accepts that anyone who can reach the
 * port can join the cluster and write the volume. `freebs up` always makes a secret.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import type { Logger } from 'pino';
import { MIN_SECRET_BYTES, type LinkSecurity } from '../protocol/auth.js';

export interface SecurityFlags {
  secretFile?: string;
  tlsCert?: string;
  tlsKey?: string;
  tlsCa?: string;
  insecure?: boolean;
}

export class SecurityError extends Error {
  override readonly name = 'SecurityError';
}

export function isLoopback(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  return h === 'localhost' || h === '::1' || /^127\.\d+\.\d+\.\d+$/.test(h);
}

/** The secret is the file's bytes without trailing whitespace (so `openssl rand -hex 32 > FILE` works). */
export function readSecretFile(file: string, log?: Logger): Buffer {
  let bytes: Buffer;
  try {
    bytes = readFileSync(file);
  } catch (err) {
    throw new SecurityError(`cannot read the cluster secret file ${file}: ${(err as Error).message}`);
  }
  let end = bytes.length;
  while (end > 0 && [0x20, 0x09, 0x0a, 0x0d].includes(bytes[end - 1]!)) end--;
  const secret = bytes.subarray(0, end);
  if (secret.length < MIN_SECRET_BYTES) {
    throw new SecurityError(`the cluster secret in ${file} is ${secret.length} bytes; use at least ${MIN_SECRET_BYTES} (e.g. openssl rand -hex 32 > ${file})`);
  }
  // Group-readable is a deliberate choice (root:freebs 0640, Kubernetes secret volumes with an
  // fsGroup); readable by everyone is a mistake worth saying.
  const mode = statSync(file).mode & 0o777;
  if ((mode & 0o007) !== 0) {
    log?.warn({ file, mode: `0${mode.toString(8)}` }, `the cluster secret file is readable by every user of this host; chmod 600 ${file}`);
  }
  return secret;
}

/** A fresh secret in FILE (mode 0600) unless it exists; returns whether it was created. */
export function ensureSecretFile(file: string): boolean {
  if (existsSync(file)) return false;
  // 'wx': never overwrite one that appeared meanwhile; 0600 from the start, not after a chmod.
  writeFileSync(file, `${randomBytes(32).toString('hex')}\n`, { mode: 0o600, flag: 'wx' });
  return true;
}

function readPem(file: string, what: string): Buffer {
  try {
    return readFileSync(file);
  } catch (err) {
    throw new SecurityError(`cannot read the TLS ${what} ${file}: ${(err as Error).message}`);
  }
}

/**
 * LinkSecurity for a member. `listenUrl` is where it accepts links (null for the driver, which
 * only dials); it decides whether running without a secret is allowed.
 */
export function loadSecurity(flags: SecurityFlags, member: { name: string; listenHost: string | null; log: Logger }): LinkSecurity {
  const security: LinkSecurity = {};
  if (flags.tlsCert !== undefined || flags.tlsKey !== undefined || flags.tlsCa !== undefined) {
    if ((flags.tlsCert === undefined) !== (flags.tlsKey === undefined)) throw new SecurityError('give --tls-cert and --tls-key together');
    security.tls = {
      ...(flags.tlsCert !== undefined ? { cert: readPem(flags.tlsCert, 'certificate') } : {}),
      ...(flags.tlsKey !== undefined ? { key: readPem(flags.tlsKey, 'key') } : {}),
      ...(flags.tlsCa !== undefined ? { ca: readPem(flags.tlsCa, 'CA bundle') } : {}),
    };
  }
  if (flags.secretFile !== undefined) {
    security.secret = readSecretFile(flags.secretFile, member.log);
    return security;
  }
  const { listenHost } = member;
  if (listenHost !== null && !isLoopback(listenHost) && !flags.insecure) {
    throw new SecurityError(
      `refusing to accept links on ${listenHost} without a cluster secret: anyone who can reach it could join the cluster and ` +
        'overwrite the volume. Give --secret-file FILE (or FREEBS_SECRET_FILE), or --insecure to accept that risk.',
    );
  }
  const where = listenHost === null ? '' : ` (links on ${listenHost})`;
  member.log.warn({ insecure: true }, 'no cluster secret: links are NOT authenticated');
  process.stderr.write(
    `\n*** WARNING: ${member.name} runs WITHOUT a cluster secret${where}. Any process that can reach its links can join\n` +
      '*** the cluster and read or overwrite the volume. Fine for a single-host test; anywhere else give every member\n' +
      '*** --secret-file FILE (or FREEBS_SECRET_FILE). `freebs up` makes one for you.\n\n',
  );
  return security;
}

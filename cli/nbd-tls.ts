/**
 * `--nbd-tls-*` flags of `freebs serve` and `freebs driver`: TLS for NBD clients (STARTTLS), with
 * client certificates when a CA is given. Separate from `--tls-*`, which secures member links.
 */
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import type { NbdServerOptions } from '../nbd/server.js';

export interface NbdTlsFlags {
  nbdTlsCert?: string;
  nbdTlsKey?: string;
  nbdTlsCa?: string;
  nbdTlsOptional?: boolean;
}

export function addNbdTlsOptions(command: Command): Command {
  return command
    .option('--nbd-tls-cert <path>', 'PEM certificate: NBD clients connect with TLS (nbds://); plaintext clients are refused')
    .option('--nbd-tls-key <path>', 'PEM private key of --nbd-tls-cert')
    .option('--nbd-tls-ca <path>', 'PEM CA: NBD clients must present a certificate it signed')
    .option('--nbd-tls-optional', 'offer TLS but still serve plaintext NBD clients');
}

/** The server's TLS from the flags; undefined without --nbd-tls-cert. Throws with what is wrong. */
export function nbdTlsFromFlags(flags: NbdTlsFlags): NbdServerOptions['tls'] {
  if (flags.nbdTlsCert === undefined && flags.nbdTlsKey === undefined) {
    if (flags.nbdTlsCa !== undefined || flags.nbdTlsOptional) throw new Error('--nbd-tls-ca and --nbd-tls-optional need --nbd-tls-cert and --nbd-tls-key');
    return undefined;
  }
  if (flags.nbdTlsCert === undefined || flags.nbdTlsKey === undefined) throw new Error('NBD TLS needs both --nbd-tls-cert and --nbd-tls-key');
  const read = (flag: string, file: string): Buffer => {
    try {
      return readFileSync(file);
    } catch (err) {
      throw new Error(`${flag} ${file}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (err as Error).message}`);
    }
  };
  return {
    cert: read('--nbd-tls-cert', flags.nbdTlsCert),
    key: read('--nbd-tls-key', flags.nbdTlsKey),
    ...(flags.nbdTlsCa !== undefined ? { ca: read('--nbd-tls-ca', flags.nbdTlsCa) } : {}),
    required: !flags.nbdTlsOptional,
  };
}

/** What to say about who may reach the export. */
export function nbdAccessNote(tls: NbdServerOptions['tls']): string | null {
  if (!tls) return 'NBD has no authentication: anyone who can reach this NBD port can read and write the volume; keep it on a trusted network, or use --nbd-tls-cert/--nbd-tls-key/--nbd-tls-ca';
  if (!tls.ca) return 'NBD over TLS without --nbd-tls-ca: traffic is encrypted, but any client may connect';
  if (!tls.required) return 'NBD TLS is optional (--nbd-tls-optional): plaintext clients are served without a certificate';
  return null;
}

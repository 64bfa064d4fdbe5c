/**
 * One cluster member per process. Each prints one line on stdout when it is ready
 * (`freebs up` and the tests wait for it) and stops cleanly on SIGINT/SIGTERM.
 */
import { rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { ControllerProcess } from '../actors/controller.js';
import { DriverProcess } from '../actors/driver.js';
import { LocalSpawner } from '../actors/local-spawner.js';
import { LocalVolume } from '../actors/local-volume.js';
import { createLogger } from '../actors/logger.js';
import { openLsvdStore } from '../actors/lsvd-store.js';
import { DEFAULT_MAX_BUFFERED_BYTES } from '../storage/lsvd.js';
import { nbdAccessNote, nbdTlsFromFlags, type NbdTlsFlags } from './nbd-tls.js';
import { ReplicaProcess } from '../actors/replica.js';
import type { ChainMember } from '../protocol/frames.js';
import { NbdServer } from '../nbd/server.js';
import { isLoopback, loadSecurity, type SecurityFlags } from './security.js';

/** Stop on the first SIGINT/SIGTERM; a second one forces the exit. */
function onSignals(close: () => Promise<void>): void {
  let closing = false;
  const handler = (signal: string) => {
    if (closing) process.exit(1);
    closing = true;
    close().then(
      () => process.exit(0),
      (err: unknown) => {
        console.error(`error while stopping on ${signal}: ${(err as Error).message}`);
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
}

function fail(message: string): never {
  console.error(`freebs: ${message}`);
  process.exit(2);
}

function security(flags: SecurityFlags, name: string, listenHost: string | null, log: ReturnType<typeof createLogger>) {
  try {
    return loadSecurity(flags, { name, listenHost, log });
  } catch (err) {
    return fail((err as Error).message);
  }
}

/** The flags every security-aware member takes again when it starts another (replacements). */
export function securityArgs(flags: SecurityFlags): string[] {
  const args: string[] = [];
  if (flags.secretFile !== undefined) args.push('--secret-file', path.resolve(flags.secretFile));
  if (flags.tlsCert !== undefined) args.push('--tls-cert', path.resolve(flags.tlsCert));
  if (flags.tlsKey !== undefined) args.push('--tls-key', path.resolve(flags.tlsKey));
  if (flags.tlsCa !== undefined) args.push('--tls-ca', path.resolve(flags.tlsCa));
  if (flags.insecure) args.push('--insecure');
  return args;
}

export interface ReplicaCliOptions extends SecurityFlags {
  id: string; dir: string; size?: number; host: string; port: number; cluster: string; controller?: string; heartbeatMs: number;
  /** Bytes of log writes held in memory before the disk has them (LSVD maxBufferedBytes). */
  writeBuffer?: number;
  /** Bytes of log kept for SYNC (LSVD syncWindowBytes). */
  syncWindow?: number;
  /** Fault-injection runs only: a JSON file of disk delays (storage/disk-faults.ts). */
  diskFaults?: string;
}

export async function runReplica(options: ReplicaCliOptions): Promise<void> {
  const log = createLogger(options.id);
  const linkSecurity = security(options, `replica ${options.id}`, options.host, log);
  const diskFaults = options.diskFaults === undefined ? undefined : { file: path.resolve(options.diskFaults) };
  const store = await openLsvdStore(options.dir, options.size, log, { diskFaults, maxBufferedBytes: options.writeBuffer, syncWindowBytes: options.syncWindow }).catch((err: Error) => fail(err.message));
  const { replica, port } = await ReplicaProcess.start({
    id: options.id,
    store,
    host: options.host,
    port: options.port,
    clusterId: options.cluster,
    security: linkSecurity,
    ...(options.controller ? { controllerUrl: options.controller } : {}),
    heartbeatMs: options.heartbeatMs,
    // As many bytes may wait for the store as its write buffer holds.
    heldBoundBytes: options.writeBuffer ?? DEFAULT_MAX_BUFFERED_BYTES,
    log,
  });
  // So `freebs up` can stop every replica of its data directory, replacements included, by PID.
  writeFileSync(path.join(options.dir, 'replica.pid'), `${process.pid}\n`);
  onSignals(async () => {
    await replica.close();
    rmSync(path.join(options.dir, 'replica.pid'), { force: true });
  });
  const scheme = linkSecurity.tls?.cert ? 'wss' : 'ws';
  const auth = linkSecurity.secret ? 'authenticated' : 'UNAUTHENTICATED';
  console.log(`replica ${options.id} listening on ${scheme}://${options.host}:${port} at version ${store.version} (${auth})`);
}

/** `id=ws://host:port,…` → chain members, head first. */
export function parseChain(text: string): ChainMember[] {
  const chain = text.split(',').map((part) => {
    const m = /^([\w.-]+)=(wss?:\/\/\S+)$/.exec(part.trim());
    if (!m) fail(`bad --chain entry "${part}": expected id=ws://host:port`);
    return { id: m[1], url: m[2] };
  });
  const ids = new Set(chain.map((m) => m.id));
  if (ids.size !== chain.length) fail(`--chain names a replica twice: ${text}`);
  return chain;
}

export interface DriverCliOptions extends SecurityFlags, NbdTlsFlags {
  id: string; chain?: string; controller?: string; size: number; name: string; host: string; nbdPort: number; httpPort?: number; heartbeatMs: number; cluster: string;
}

export async function runDriver(options: DriverCliOptions): Promise<void> {
  const log = createLogger(options.id);
  if (!options.chain === !options.controller) fail('give the driver either --chain (a static chain) or --controller (which configures it)');
  const chain = options.chain ? parseChain(options.chain) : [];
  const linkSecurity = security(options, `driver ${options.id}`, null, log);
  const nbdTls = nbdTlsFor(options, log);
  const { driver, nbdPort, httpPort } = await DriverProcess.start({
    id: options.id,
    clusterId: options.cluster,
    security: linkSecurity,
    chain,
    ...(options.controller ? { controllerUrl: options.controller } : {}),
    volume: { name: options.name, sizeBytes: options.size },
    nbdHost: options.host,
    nbdPort: options.nbdPort,
    ...(nbdTls ? { nbdTls } : {}),
    ...(options.httpPort !== undefined ? { httpPort: options.httpPort } : {}),
    tickMs: options.heartbeatMs,
    log,
  });
  onSignals(() => driver.close());
  const ctx = driver.actor.getSnapshot().context;
  const http = httpPort === null ? '' : `; status and metrics on http://${options.host}:${httpPort}`;
  console.log(`driver ready: nbd://${options.host}:${nbdPort}/${options.name} over ${ctx.chain.map((m) => m.id).join(' → ')} (epoch ${ctx.epoch})${http}`);
}

export interface ControllerCliOptions extends SecurityFlags {
  dir: string; chain: string; size: number; name: string; driverId: string; replicas: number;
  host: string; port: number; heartbeatMs: number; cluster: string; spawn: boolean;
}

export async function runController(options: ControllerCliOptions): Promise<void> {
  const log = createLogger('controller');
  const linkSecurity = security(options, 'the controller', options.host, log);
  const scheme = linkSecurity.tls?.cert ? 'wss' : 'ws';
  const dir = path.resolve(options.dir);
  let listenPort = options.port;
  const spawner = options.spawn
    ? new LocalSpawner({
        dataDir: dir,
        logDir: path.join(dir, 'logs'),
        host: options.host,
        sizeBytes: options.size,
        controllerUrl: () => `${scheme}://${options.host}:${listenPort}`,
        clusterId: options.cluster,
        heartbeatMs: options.heartbeatMs,
        extraArgs: securityArgs(options),
      })
    : null;
  const started = await ControllerProcess.start({
    clusterId: options.cluster,
    security: linkSecurity,
    stateDir: dir,
    host: options.host,
    port: options.port,
    volume: { name: options.name, sizeBytes: options.size },
    chain: parseChain(options.chain),
    driverId: options.driverId,
    replicaCount: options.replicas,
    heartbeatMs: options.heartbeatMs,
    spawner,
    log,
  }).catch((err: Error) => fail(err.message));
  listenPort = started.port;
  onSignals(() => started.controller.close());
  const auth = linkSecurity.secret ? 'authenticated' : 'UNAUTHENTICATED';
  const http = scheme === 'wss' ? 'https' : 'http';
  console.log(`controller listening on ${scheme}://${options.host}:${started.port} (${auth}; status: ${http}://${options.host}:${started.port}/status)`);
}

const SINGLE_NODE_SYNC_WINDOW_BYTES = 64 * 1024 * 1024;

export async function runServe(options: { dir: string; size?: number; name: string; host: string; port: number; readOnly?: boolean } & NbdTlsFlags): Promise<void> {
  const log = createLogger('serve');
  const tls = nbdTlsFor(options, log);
  // No peer ever SYNCs from a single-node volume: keep no log beyond one segment for it, so GC
  // (and segment reuse) can take overwritten data at once.
  const store = await openLsvdStore(options.dir, options.size, log, { syncWindowBytes: SINGLE_NODE_SYNC_WINDOW_BYTES }).catch((err: Error) => fail(err.message));
  const volume = new LocalVolume(store, { readOnly: options.readOnly ?? false });
  const server = new NbdServer({
    catalog: {
      list: () => [{ name: options.name, description: `FreEBS local volume in ${options.dir}` }],
      get: (name) => (name === '' || name === options.name ? volume : undefined),
    },
    logger: log,
    host: options.host,
    port: options.port,
    ...(tls ? { tls } : {}),
  });
  const { port } = await server.listen();
  onSignals(async () => {
    await server.close();
    await volume.close();
  });
  const scheme = tls?.required ? 'nbds' : 'nbd';
  console.log(`serving ${scheme}://${options.host}:${port}/${options.name} (${store.sizeBytes} bytes, version ${store.version}${tls ? `, TLS ${tls.required ? 'required' : 'offered'}${tls.ca ? ', client certificates required' : ''}` : ''})`);
}

/** The NBD server's TLS from the flags (a bad flag ends the process), and a warning about who may connect off loopback. */
function nbdTlsFor(options: NbdTlsFlags & { host: string }, log: ReturnType<typeof createLogger>): ReturnType<typeof nbdTlsFromFlags> {
  let tls: ReturnType<typeof nbdTlsFromFlags>;
  try {
    tls = nbdTlsFromFlags(options);
  } catch (err) {
    return fail((err as Error).message);
  }
  const note = nbdAccessNote(tls);
  if (note && !isLoopback(options.host)) log.warn({ host: options.host }, note);
  return tls;
}

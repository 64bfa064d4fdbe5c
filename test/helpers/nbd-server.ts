/**
 * An NBD server in-process on 127.0.0.1 (port chosen by the OS) for tests, with backends made by
 * a factory — so the NBD tests switch from the file backend to LSVD by changing
 * `defaultBackendFactory` below, nothing else.
 */
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { BlockBackend } from '../../nbd/backend.js';
import { StaticCatalog } from '../../nbd/catalog.js';
import { FileBackend } from '../../nbd/file-backend.js';
import type { NbdLogger } from '../../nbd/log.js';
import { NbdServer, type NbdServerOptions } from '../../nbd/server.js';

export interface BackendSpec {
  /** Directory the backend may keep its files in (removed at close). */
  dir: string;
  name: string;
  sizeBytes: number;
  readOnly: boolean;
}

export type BackendFactory = (spec: BackendSpec) => Promise<BlockBackend>;

export const fileBackendFactory: BackendFactory = (spec) =>
  FileBackend.open(path.join(spec.dir, 'disk.img'), { sizeBytes: spec.sizeBytes, readOnly: false }).then(async (b) => {
    if (!spec.readOnly) return b;
    // A read-only export over a file we just created: reopen it read-only.
    await b.close();
    return FileBackend.open(path.join(spec.dir, 'disk.img'), { sizeBytes: spec.sizeBytes, readOnly: true });
  });

/** The backend the NBD tests run against. */
export const defaultBackendFactory: BackendFactory = fileBackendFactory;

export interface ExportSpec {
  name: string;
  sizeBytes?: number;
  readOnly?: boolean;
  description?: string;
  /** Serve this backend instead of making one with the factory. */
  backend?: BlockBackend;
  /** Wrap the factory's backend (timing and failure injection around real storage). */
  wrap?: (backend: BlockBackend) => BlockBackend;
}

export interface LogRecord {
  level: string;
  msg: string | undefined;
  obj: Record<string, unknown>;
}

export interface TestNbdServer {
  server: NbdServer;
  port: number;
  /** nbd://127.0.0.1:PORT — the default export. */
  uri: string;
  uriFor(exportName: string): string;
  backends: Map<string, BlockBackend>;
  logs: LogRecord[];
  dir: string;
  close(): Promise<void>;
}

export function recordingLogger(echo = process.env.FREEBS_TEST_LOG === '1'): { logger: NbdLogger; logs: LogRecord[] } {
  const logs: LogRecord[] = [];
  const at = (level: string) => (obj: object, msg?: string) => {
    logs.push({ level, msg, obj: obj as Record<string, unknown> });
    if (echo) console.error(level, msg, JSON.stringify(obj));
  };
  return { logs, logger: { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') } };
}

export async function startNbdServer(
  options: {
    exports?: ExportSpec[];
    /** Size of each export made by the factory. Default 64 MiB. */
    sizeBytes?: number;
    backendFactory?: BackendFactory;
    maxRequestBytes?: number;
    handshakeTimeoutMs?: number;
    tls?: NbdServerOptions['tls'];
  } = {},
): Promise<TestNbdServer> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'freebs-nbd-'));
  const factory = options.backendFactory ?? defaultBackendFactory;
  const specs = options.exports ?? [{ name: '' }];
  const backends = new Map<string, BlockBackend>();
  const made: BlockBackend[] = [];
  const entries = [];
  for (const [i, spec] of specs.entries()) {
    let backend = spec.backend;
    if (!backend) {
      const backendDir = path.join(dir, `export-${i}`);
      mkdirSync(backendDir, { recursive: true });
      backend = await factory({ dir: backendDir, name: spec.name, sizeBytes: spec.sizeBytes ?? options.sizeBytes ?? 64 * 1024 * 1024, readOnly: spec.readOnly ?? false });
      made.push(backend);
      if (spec.wrap) backend = spec.wrap(backend);
    }
    backends.set(spec.name, backend);
    entries.push({ name: spec.name, backend, description: spec.description });
  }
  const { logger, logs } = recordingLogger();
  const server = new NbdServer({
    catalog: new StaticCatalog(entries),
    logger,
    host: '127.0.0.1',
    port: 0,
    maxRequestBytes: options.maxRequestBytes,
    handshakeTimeoutMs: options.handshakeTimeoutMs,
    ...(options.tls ? { tls: options.tls } : {}),
  });
  const { port } = await server.listen();
  const uriFor = (name: string) => `nbd://127.0.0.1:${port}/${encodeURIComponent(name)}`;
  return {
    server,
    port,
    uri: `nbd://127.0.0.1:${port}`,
    uriFor,
    backends,
    logs,
    dir,
    async close() {
      await server.close();
      for (const b of made) await b.close?.();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

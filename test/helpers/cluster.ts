/**
 * Real clusters for tests: each replica and the driver is its own process, started with the
 * same `freebs` commands an operator uses, on 127.0.0.1 with ports the OS picks, and stopped
 * by PID at the end.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { hasExited, spawnMember, stopMember, waitForLine, type MemberProcess as Member } from '../../actors/member-process.js';

export interface TestReplica {
  id: string;
  dir: string;
  port: number;
  member: Member;
}

export interface TestCluster {
  dir: string;
  nbdUri: string;
  nbdPort: number;
  /** The driver's /status and /metrics. */
  driverHttpUrl: string;
  replicas: TestReplica[];
  driver: Member;
  /** Signal one replica's process (SIGKILL, SIGSTOP, SIGCONT…). */
  signal(id: string, signal: NodeJS.Signals): void;
  /** Start a stopped or killed replica again on its old port and directory. */
  restart(id: string): Promise<void>;
  /** Stop everything (by PID) and remove the data unless keepData. */
  stop(options?: { keepData?: boolean }): Promise<void>;
}

async function startReplica(id: string, dir: string, port: number, sizeBytes: number, logDir: string, extraArgs: string[] = []): Promise<TestReplica> {
  const member = spawnMember(id, ['replica', '--id', id, '--dir', dir, '--size', String(sizeBytes), '--port', String(port), ...extraArgs], logDir);
  const line = await waitForLine(member, /^replica \S+ listening on ws:\/\/[\d.]+:(\d+)/);
  return { id, dir, port: Number(/:(\d+) /.exec(line)![1]), member };
}

export async function startCluster(
  options: { replicas?: number; sizeBytes?: number; heartbeatMs?: number; secretFile?: string; replicaArgs?: (id: string) => string[] } = {},
): Promise<TestCluster> {
  const n = options.replicas ?? 3;
  const extraArgs = options.secretFile ? ['--secret-file', options.secretFile] : [];
  const argsOf = (id: string): string[] => [...extraArgs, ...(options.replicaArgs?.(id) ?? [])];
  const sizeBytes = options.sizeBytes ?? 256 * 1024 * 1024;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'freebs-cluster-'));
  const logDir = path.join(dir, 'logs');
  const replicas = await Promise.all(
    Array.from({ length: n }, (_, i) => startReplica(`r${i + 1}`, path.join(dir, `r${i + 1}`), 0, sizeBytes, logDir, argsOf(`r${i + 1}`))),
  );
  const chain = replicas.map((r) => `${r.id}=ws://127.0.0.1:${r.port}`).join(',');
  const driver = spawnMember('driver', ['driver', '--chain', chain, '--size', String(sizeBytes), '--nbd-port', '0', '--http-port', '0', '--heartbeat-ms', String(options.heartbeatMs ?? 200), ...extraArgs], logDir);
  const ready = await waitForLine(driver, /^driver ready: (nbd:\/\/\S+)/);
  const nbdUri = /(nbd:\/\/\S+)/.exec(ready)![1];
  const driverHttpUrl = /(http:\/\/[\d.]+:\d+)/.exec(ready)![1];
  const nbdPort = Number(/:(\d+)\//.exec(nbdUri)![1]);
  const byId = (id: string) => {
    const r = replicas.find((x) => x.id === id);
    if (!r) throw new Error(`no replica ${id}`);
    return r;
  };
  return {
    dir,
    nbdUri,
    nbdPort,
    driverHttpUrl,
    replicas,
    driver,
    signal(id, signal) {
      byId(id).member.child.kill(signal);
    },
    async restart(id) {
      const r = byId(id);
      if (!hasExited(r.member)) throw new Error(`${id} is still running`);
      const fresh = await startReplica(id, r.dir, r.port, sizeBytes, logDir, argsOf(id));
      r.member = fresh.member;
    },
    async stop({ keepData = false } = {}) {
      await stopMember(driver);
      await Promise.all(replicas.map((r) => stopMember(r.member)));
      if (!keepData) rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * Replacement replicas as local processes: `freebs replica` in a fresh directory next to the
 * others, on a port the OS picks, linked to this controller. Other environments (systemd,
 * Kubernetes) implement ReplicaSpawner with their own way of starting a member.
 */
import path from 'node:path';
import type { ChainMember, MemberId } from '../protocol/frames.js';
import type { ReplicaSpawner } from './controller.js';
import { spawnMember, stopMember, waitForLine, type MemberProcess } from './member-process.js';
import { replicaPidsOn, stopPid } from './pids.js';

export interface LocalSpawnerOptions {
  dataDir: string;
  logDir: string;
  host: string;
  sizeBytes: number;
  controllerUrl: () => string;
  clusterId: string;
  heartbeatMs: number;
  /** More `freebs replica` flags, e.g. the cluster secret and TLS files. */
  extraArgs?: string[];
}

export class LocalSpawner implements ReplicaSpawner {
  private readonly started = new Map<MemberId, MemberProcess>();

  constructor(private readonly options: LocalSpawnerOptions) {}

  async spawn(id: MemberId): Promise<ChainMember> {
    const o = this.options;
    const dir = path.join(o.dataDir, id);
    // A controller that restarted asks again for the replacements it was waiting on; one started
    // by the previous run may still be running on that directory. Two processes must never share
    // an LSVD: stop it, and start afresh on what it wrote (it resyncs from there).
    await stopLeftover(dir);
    const member = spawnMember(id, [
      'replica', '--id', id, '--dir', dir, '--size', String(o.sizeBytes),
      '--host', o.host, '--port', '0', '--controller', o.controllerUrl(), '--cluster', o.clusterId,
      '--heartbeat-ms', String(o.heartbeatMs), ...(o.extraArgs ?? []),
    ], o.logDir);
    this.started.set(id, member);
    const line = await waitForLine(member, /^replica \S+ listening on (wss?:\/\/\S+)/);
    return { id, url: /(wss?:\/\/\S+)/.exec(line)![1] };
  }

  cancel(id: MemberId): void {
    const member = this.started.get(id);
    if (member) void stopMember(member);
    else void stopLeftover(path.join(this.options.dataDir, id));
    this.started.delete(id);
  }

  /** The processes this spawner started, for a clean shutdown. */
  get processes(): MemberProcess[] {
    return [...this.started.values()];
  }
}

/**
 * Stop every replica of `dir` left running by an earlier controller (SIGTERM, then SIGKILL),
 * found by command line: one still starting has no replica.pid yet, but may hold the store's
 * lock, and the new one would then refuse to start.
 */
async function stopLeftover(dir: string, timeoutMs = 10_000): Promise<void> {
  await Promise.all(replicaPidsOn(dir).map((pid) => stopPid(pid, timeoutMs)));
}

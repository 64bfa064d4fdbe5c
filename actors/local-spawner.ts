/**
 * Replacement replicas as local processes: `freebs replica` in a fresh directory next to the
 * others, on a port the OS picks, linked to this controller. Other environments (systemd,
 * Kubernetes) implement ReplicaSpawner with their own way of starting a member.
 */
import path from 'node:path';
import type { ChainMember, MemberId } from '../protocol/frames.js';
import type { ReplicaSpawner } from './controller.js';
import { spawnMember, stopMember, waitForLine, type MemberProcess } from './member-process.js';

export interface LocalSpawnerOptions {
  dataDir: string;
  logDir: string;
  host: string;
  sizeBytes: number;
  controllerUrl: () => string;
  clusterId: string;
  heartbeatMs: number;
}

export class LocalSpawner implements ReplicaSpawner {
  private readonly started = new Map<MemberId, MemberProcess>();

  constructor(private readonly options: LocalSpawnerOptions) {}

  async spawn(id: MemberId): Promise<ChainMember> {
    const o = this.options;
    const member = spawnMember(id, [
      'replica', '--id', id, '--dir', path.join(o.dataDir, id), '--size', String(o.sizeBytes),
      '--host', o.host, '--port', '0', '--controller', o.controllerUrl(), '--cluster', o.clusterId,
      '--heartbeat-ms', String(o.heartbeatMs),
    ], o.logDir);
    this.started.set(id, member);
    const line = await waitForLine(member, /^replica \S+ listening on (ws:\/\/\S+)/);
    return { id, url: /(ws:\/\/\S+)/.exec(line)![1] };
  }

  cancel(id: MemberId): void {
    const member = this.started.get(id);
    if (member) void stopMember(member);
    this.started.delete(id);
  }

  /** The processes this spawner started, for a clean shutdown. */
  get processes(): MemberProcess[] {
    return [...this.started.values()];
  }
}

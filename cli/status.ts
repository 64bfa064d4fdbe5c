/**
 * `freebs status`: every member as the controller sees it — role, liveness, state, version,
 * lag, epoch and time since its last heartbeat — as a table for people or, with --json, the
 * controller's /status document as is (the visualizer reads the same).
 */
import type { ControllerStatus, MemberStatus } from '../actors/controller.js';

export interface StatusOptions {
  controller: string;
  json?: boolean;
  timeoutMs?: number;
}

/** The controller's status URL from what an operator types: http://…, ws://… (members' form) or host:port. */
export function statusUrl(controller: string): string {
  let text = controller.trim();
  if (!/^[a-z]+:\/\//i.test(text)) text = `http://${text}`;
  const url = new URL(text);
  if (url.protocol === 'ws:') url.protocol = 'http:';
  else if (url.protocol === 'wss:') url.protocol = 'https:';
  else if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error(`not a controller address: ${controller}`);
  url.pathname = '/status';
  url.search = '';
  return url.toString();
}

export class ControllerUnreachable extends Error {
  readonly code = 'ERR_CONTROLLER_UNREACHABLE';
}

export async function fetchStatus(controller: string, timeoutMs = 5000): Promise<ControllerStatus> {
  const url = statusUrl(controller);
  let res: Response;
  try {
    res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs), headers: { accept: 'application/json' } });
  } catch (err) {
    const e = err as Error & { cause?: { code?: string; message?: string } };
    const why = e.name === 'TimeoutError' ? `no answer within ${timeoutMs} ms` : (e.cause?.code ?? e.cause?.message ?? e.message);
    throw new ControllerUnreachable(`cannot reach the controller at ${url} (${why}); is it running? Give its address with --controller`);
  }
  if (!res.ok) throw new ControllerUnreachable(`the controller at ${url} answered ${res.status} ${res.statusText}`);
  const body = (await res.json().catch(() => null)) as ControllerStatus | null;
  if (!body || typeof body.epoch !== 'number' || !Array.isArray(body.chain) || typeof body.members !== 'object') {
    throw new ControllerUnreachable(`${url} did not answer with a controller status; is that the controller's port?`);
  }
  return body;
}

const roleOrder: Record<MemberStatus['role'], number> = { head: 0, middle: 1, tail: 2, driver: 3, retired: 4 };

function sizeText(bytes: number): string {
  for (const [unit, n] of [['TiB', 1024 ** 4], ['GiB', 1024 ** 3], ['MiB', 1024 ** 2], ['KiB', 1024]] as const) {
    if (bytes >= n && bytes % n === 0) return `${bytes / n} ${unit}`;
  }
  return `${bytes} B`;
}

/** The table `freebs status` prints. */
export function formatStatus(s: ControllerStatus): string {
  const ids = Object.keys(s.members).sort((a, b) => {
    const ma = s.members[a];
    const mb = s.members[b];
    if (ma.role !== mb.role) return roleOrder[ma.role] - roleOrder[mb.role];
    // Middles in chain order; the rest by id.
    const ia = s.chain.indexOf(a);
    const ib = s.chain.indexOf(b);
    return ia !== ib ? ia - ib : a.localeCompare(b);
  });
  const header = ['MEMBER', 'ROLE', 'LIVENESS', 'STATE', 'VERSION', 'DURABLE', 'LAG', 'EPOCH', 'HEARTBEAT'];
  const rows = ids.map((id) => {
    const m = s.members[id];
    const state = m.role === 'head' || m.role === 'middle' || m.role === 'tail' ? `${m.replicaState}${m.caughtUp ? '' : ' (not caught up)'}` : m.replicaState;
    return [
      id,
      m.role,
      m.liveness ?? '-',
      state,
      String(m.appliedVersion),
      String(m.durableVersion),
      m.lagVersions === null ? '-' : String(m.lagVersions),
      m.epoch < s.epoch ? `${m.epoch} (behind)` : String(m.epoch),
      m.msSinceHeartbeat === null ? 'never' : `${m.msSinceHeartbeat} ms ago`,
    ];
  });
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]))).join('  ');
  const out = [
    `cluster ${s.clusterId}, volume ${s.volume.name} (${sizeText(s.volume.sizeBytes)}), epoch ${s.epoch}`,
    `chain ${s.chain.length > 0 ? s.chain.join(' → ') : '(empty)'}: ${s.chain.length} of ${s.replicaCount} replicas, writes need ${s.quorum}`,
    `driver ${s.driverId}, lease ${s.lease.expiresInMs > 0 ? `${s.lease.expiresInMs} ms left` : 'expired'}`,
  ];
  if (s.pendingReplacements.length > 0) out.push(`replacements starting: ${s.pendingReplacements.join(', ')}`);
  out.push('', line(header), ...rows.map(line));
  return out.join('\n') + '\n';
}

/** Exit codes: 0 printed; 1 the controller could not be asked. */
export async function runStatus(options: StatusOptions): Promise<void> {
  let status: ControllerStatus;
  try {
    status = await fetchStatus(options.controller, options.timeoutMs);
  } catch (err) {
    console.error(`freebs status: ${(err as Error).message}`);
    process.exitCode = 1;
    return;
  }
  process.stdout.write(options.json ? JSON.stringify(status, null, 2) + '\n' : formatStatus(status));
}

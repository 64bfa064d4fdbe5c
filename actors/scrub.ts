/**
 * Scrub: compare the chain replicas' content range by range, like DRBD's online verify, and
 * repair a replica whose copy differs.
 *
 * Compare: the controller's GET /chain says who is in the chain and where; each replica's
 * GET /checksums streams a sha256 per chunk of one consistent image (actors/checksums.ts). The
 * lists are compared only when every replica scanned the same version — on a volume being
 * written that rarely happens, so the scan is retried until it does (quiesce writes for a
 * scrub: `freebs inject` pauses its workload). Per chunk the majority's hash is the reference;
 * a replica that differs from it has that range wrong. Without a majority (two replicas that
 * disagree) the range is ambiguous: reported, not repaired.
 *
 * Repair (local clusters: `freebs up`, `freebs inject`): a bad replica is stopped by PID (its
 * DIR/ID/replica.pid, checked against /proc) and its directory moved aside (DIR/ID.scrub-TIME,
 * kept for inspection). The controller then fails it after 4T, reconfigures without it and
 * starts a replacement at the tail, which SYNCs a full copy (log records or an image) from a
 * good predecessor. The simplest repair that is correct whatever the damage: nothing of the bad
 * copy is reused. It is refused unless the good replicas are a majority of the chain.
 */
import { renameSync } from 'node:fs';
import path from 'node:path';
import type { ChainMember } from '../protocol/frames.js';
import type { ControllerStatus } from '../machines/controller.js';
import type { ChecksumHeader, ChunkChecksum } from './checksums.js';
import { CHECKSUMS_PATH, defaultChunkBytes } from './checksums.js';
import { replicaPidIn, stopPid } from './pids.js';

export interface ScrubRange {
  offsetBytes: number;
  lengthBytes: number;
}

export interface ScrubReport {
  epoch: number;
  chain: string[];
  /** The version every replica was compared at; null when they never agreed on one. */
  version: number | null;
  chunkBytes: number;
  sizeBytes: number;
  /** Chunks holding data on at least one replica. */
  chunksCompared: number;
  /** Ranges where a replica differs from the majority, per replica (empty: it agrees everywhere). */
  differences: Record<string, ScrubRange[]>;
  /** Ranges with no majority. */
  ambiguous: ScrubRange[];
  /** Replicas with at least one differing range. */
  bad: string[];
  attempts: number;
  durationMs: number;
}

export interface ScrubProgress {
  replica: string;
  doneBytes: number;
  sizeBytes: number;
}

export interface ScrubOptions {
  /** The controller: http://host:port (ws:// and host:port are accepted). */
  controller: string;
  chunkBytes?: number;
  /** Give up when the replicas have not scanned one version within this long. */
  settleTimeoutMs?: number;
  onProgress?: (p: ScrubProgress) => void;
  log?: (line: string) => void;
}

export class ScrubError extends Error {
  readonly code = 'ERR_SCRUB';
}

/** http(s)://host:port of a controller address as an operator types it. */
export function controllerHttp(controller: string): string {
  let text = controller.trim();
  if (!/^[a-z]+:\/\//i.test(text)) text = `http://${text}`;
  const url = new URL(text);
  if (url.protocol === 'ws:') url.protocol = 'http:';
  else if (url.protocol === 'wss:') url.protocol = 'https:';
  return `${url.protocol}//${url.host}`;
}

async function getJson<T>(url: string, timeoutMs = 5000): Promise<T> {
  let res: Response;
  try {
    res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
  } catch (err) {
    const e = err as Error & { cause?: { code?: string } };
    throw new ScrubError(`cannot reach ${url}: ${e.cause?.code ?? e.message}`);
  }
  if (!res.ok) throw new ScrubError(`${url} answered ${res.status}`);
  return (await res.json()) as T;
}

export async function fetchChain(controller: string): Promise<{ epoch: number; chain: ChainMember[] }> {
  return getJson(`${controllerHttp(controller)}/chain`);
}

export async function fetchControllerStatus(controller: string): Promise<ControllerStatus> {
  return getJson(`${controllerHttp(controller)}/status`);
}

interface ReplicaScan {
  version: number;
  chunks: Map<number, string>;
}

/** Stream one replica's /checksums. */
async function scanReplica(member: ChainMember, chunkBytes: number, onChunk: (c: ChunkChecksum) => void): Promise<ReplicaScan> {
  const url = new URL(member.url);
  url.protocol = url.protocol === 'wss:' ? 'https:' : 'http:';
  url.pathname = CHECKSUMS_PATH;
  url.search = `chunk=${chunkBytes}`;
  for (let attempt = 0; ; attempt++) {
    let res: Response;
    try {
      res = await fetch(url, { signal: AbortSignal.timeout(600_000) });
    } catch (err) {
      const e = err as Error & { cause?: { code?: string } };
      throw new ScrubError(`cannot reach ${member.id} at ${url.host}: ${e.cause?.code ?? e.message}`);
    }
    if (res.status === 429 && attempt < 20) {
      await res.body?.cancel();
      await sleep(500);
      continue;
    }
    if (!res.ok || !res.body) throw new ScrubError(`${member.id}: ${url} answered ${res.status}${res.status === 404 ? ' (a replica without /checksums: upgrade it)' : ''}`);
    const chunks = new Map<number, string>();
    let header: ChecksumHeader | null = null;
    let done = false;
    let rest = '';
    const decoder = new TextDecoder();
    const take = (line: string) => {
      if (line.trim() === '') return;
      const msg = JSON.parse(line) as Partial<ChecksumHeader & ChunkChecksum & { done: boolean; error: string }>;
      if (msg.error !== undefined) throw new ScrubError(`${member.id} could not finish its checksums: ${msg.error}`);
      if (msg.done) done = true;
      else if (msg.sha256 !== undefined && msg.i !== undefined) {
        chunks.set(msg.i, msg.sha256);
        onChunk(msg as ChunkChecksum);
      } else header = msg as ChecksumHeader;
    };
    for await (const part of res.body as unknown as AsyncIterable<Uint8Array>) {
      rest += decoder.decode(part, { stream: true });
      const lines = rest.split('\n');
      rest = lines.pop()!;
      for (const line of lines) take(line);
    }
    take(rest);
    if (!header || !done) throw new ScrubError(`${member.id}: the checksum stream ended early`);
    return { version: (header as ChecksumHeader).version, chunks };
  }
}

function toRanges(indexes: number[], chunkBytes: number, sizeBytes: number): ScrubRange[] {
  const ranges: ScrubRange[] = [];
  for (const i of indexes.sort((a, b) => a - b)) {
    const offsetBytes = i * chunkBytes;
    const lengthBytes = Math.min(chunkBytes, sizeBytes - offsetBytes);
    const last = ranges[ranges.length - 1];
    if (last && last.offsetBytes + last.lengthBytes === offsetBytes) last.lengthBytes += lengthBytes;
    else ranges.push({ offsetBytes, lengthBytes });
  }
  return ranges;
}

/** Compare the chain's replicas once they scanned one version. */
export async function scrub(options: ScrubOptions): Promise<ScrubReport> {
  const started = Date.now();
  const chunkBytes = options.chunkBytes ?? defaultChunkBytes;
  const settleTimeoutMs = options.settleTimeoutMs ?? 60_000;
  const deadline = started + settleTimeoutMs;
  const log = options.log ?? (() => undefined);
  for (let attempt = 1; ; attempt++) {
    const { epoch, chain } = await fetchChain(options.controller);
    if (chain.length === 0) throw new ScrubError(`the chain of epoch ${epoch} is empty`);
    // Scanning is a full read: start only once the controller sees one version everywhere.
    const status = await fetchControllerStatus(options.controller);
    const sizeBytes = status.volume.sizeBytes;
    const versions = chain.map((m) => status.members[m.id]?.appliedVersion ?? -1);
    if (new Set(versions).size > 1 && Date.now() < deadline) {
      if (attempt === 1 || attempt % 20 === 0) log(`waiting for the replicas to reach one version (${chain.map((m, i) => `${m.id}@${versions[i]}`).join(', ')}); quiesce writes for a scrub`);
      await sleep(200);
      continue;
    }
    log(`comparing ${chain.map((m) => m.id).join(', ')} (epoch ${epoch}) in ${chunkBytes}-byte chunks`);
    const scans = await Promise.all(
      chain.map((m) =>
        scanReplica(m, chunkBytes, (c) => options.onProgress?.({ replica: m.id, doneBytes: Math.min(sizeBytes, (c.i + 1) * chunkBytes), sizeBytes })),
      ),
    );
    for (const m of chain) options.onProgress?.({ replica: m.id, doneBytes: sizeBytes, sizeBytes });
    const scanned = scans.map((s) => s.version);
    if (new Set(scanned).size > 1) {
      if (Date.now() >= deadline) {
        throw new ScrubError(
          `the replicas never scanned the same version within ${settleTimeoutMs} ms (last: ${chain.map((m, i) => `${m.id}@${scanned[i]}`).join(', ')}); stop writing to the volume during a scrub`,
        );
      }
      log(`versions moved during the scan (${chain.map((m, i) => `${m.id}@${scanned[i]}`).join(', ')}); again`);
      await sleep(200);
      continue;
    }
    const all = new Set<number>();
    for (const s of scans) for (const i of s.chunks.keys()) all.add(i);
    const wrong: Record<string, number[]> = Object.fromEntries(chain.map((m) => [m.id, []]));
    const ambiguous: number[] = [];
    const majority = Math.floor(chain.length / 2) + 1;
    for (const i of all) {
      const votes = new Map<string, number>();
      const hashes = scans.map((s) => s.chunks.get(i) ?? 'zero');
      for (const h of hashes) votes.set(h, (votes.get(h) ?? 0) + 1);
      if (votes.size === 1) continue;
      const [best, count] = [...votes.entries()].sort((a, b) => b[1] - a[1])[0];
      if (count < majority) {
        ambiguous.push(i);
        continue;
      }
      hashes.forEach((h, k) => {
        if (h !== best) wrong[chain[k].id].push(i);
      });
    }
    const differences = Object.fromEntries(chain.map((m) => [m.id, toRanges(wrong[m.id], chunkBytes, sizeBytes)]));
    return {
      epoch,
      chain: chain.map((m) => m.id),
      version: scanned[0],
      chunkBytes,
      sizeBytes,
      chunksCompared: all.size,
      differences,
      ambiguous: toRanges(ambiguous, chunkBytes, sizeBytes),
      bad: chain.map((m) => m.id).filter((id) => differences[id].length > 0),
      attempts: attempt,
      durationMs: Date.now() - started,
    };
  }
}

export interface RepairOptions {
  controller: string;
  /** The cluster's data directory (each replica in DIR/ID). */
  dir: string;
  report: ScrubReport;
  /** How long the chain may take to be whole again without the bad replicas. */
  healTimeoutMs?: number;
  log?: (line: string) => void;
  /** Told before a replica is stopped (a supervisor that watches its children). */
  onStop?: (id: string) => void;
}

export interface RepairResult {
  /** Replicas stopped, and where their data went. */
  replaced: Array<{ id: string; pid: number; movedTo: string }>;
  /** The chain once whole again. */
  chain: string[];
  epoch: number;
  durationMs: number;
}

/** Whether the chain is N replicas, all active, serving and caught up at the current epoch. */
export function chainWhole(s: ControllerStatus): boolean {
  if (s.chain.length !== s.replicaCount || s.pendingReplacements.length > 0) return false;
  return s.chain.every((id) => {
    const m = s.members[id];
    return m !== undefined && m.liveness === 'active' && m.replicaState === 'serving' && m.caughtUp && m.epoch === s.epoch;
  });
}

/** Replace the replicas a scrub found bad (see the file comment). */
export async function repairLocal(options: RepairOptions): Promise<RepairResult> {
  const started = Date.now();
  const { report } = options;
  const log = options.log ?? (() => undefined);
  const good = report.chain.filter((id) => !report.bad.includes(id));
  if (report.bad.length === 0) return { replaced: [], chain: report.chain, epoch: report.epoch, durationMs: 0 };
  if (report.ambiguous.length > 0) throw new ScrubError(`not repairing: ${report.ambiguous.length} range(s) have no majority, so there is no copy known to be good`);
  if (good.length < Math.floor(report.chain.length / 2) + 1) {
    throw new ScrubError(`not repairing: only ${good.length} of ${report.chain.length} replicas agree (${good.join(', ') || 'none'}); a majority must be good`);
  }
  const replaced: RepairResult['replaced'] = [];
  for (const id of report.bad) {
    const dir = path.join(path.resolve(options.dir), id);
    const pid = replicaPidIn(dir);
    if (pid === null) {
      throw new ScrubError(`cannot repair ${id} from here: no running replica in ${dir}; stop it on its host and move its data directory aside, and the controller will replace it`);
    }
    log(`repairing ${id}: stopping it (pid ${pid}) and moving ${dir} aside; the controller replaces it with a fresh replica that SYNCs from a good one`);
    options.onStop?.(id);
    await stopPid(pid);
    const movedTo = `${dir}.scrub-${new Date().toISOString().replace(/[:.]/g, '-')}`;
    renameSync(dir, movedTo);
    replaced.push({ id, pid, movedTo });
  }
  const deadline = Date.now() + (options.healTimeoutMs ?? 60_000);
  for (;;) {
    const s = await fetchControllerStatus(options.controller).catch(() => null);
    if (s && s.epoch > report.epoch && !s.chain.some((id) => report.bad.includes(id)) && chainWhole(s)) {
      log(`repaired: the chain is ${s.chain.join(' → ')} at epoch ${s.epoch}`);
      return { replaced, chain: s.chain, epoch: s.epoch, durationMs: Date.now() - started };
    }
    if (Date.now() > deadline) {
      throw new ScrubError(`the chain was not whole again without ${report.bad.join(', ')} within ${options.healTimeoutMs ?? 60_000} ms${s ? ` (now ${s.chain.join(' → ')} at epoch ${s.epoch})` : ''}`);
    }
    await sleep(200);
  }
}

/** A report for people. */
export function formatScrubReport(r: ScrubReport): string {
  const lines = [`scrub of ${r.chain.join(', ')} at version ${r.version} (epoch ${r.epoch}): ${r.chunksCompared} chunks of ${r.chunkBytes} bytes compared in ${r.durationMs} ms`];
  for (const id of r.chain) {
    const d = r.differences[id];
    lines.push(d.length === 0 ? `  ${id}: agrees` : `  ${id}: DIFFERS in ${d.length} range(s): ${d.slice(0, 8).map((x) => `[${x.offsetBytes}, +${x.lengthBytes})`).join(' ')}${d.length > 8 ? ' …' : ''}`);
  }
  if (r.ambiguous.length > 0) lines.push(`  no majority in ${r.ambiguous.length} range(s): ${r.ambiguous.slice(0, 8).map((x) => `[${x.offsetBytes}, +${x.lengthBytes})`).join(' ')}`);
  return lines.join('\n');
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * Saving the run on the page to a file and loading one back: a TraceFile as JSON, or NDJSON
 * (a header line with format, version and charts, then one record per line), the shape a
 * simulator or a fault-injection recorder can write as it goes. DOM-free (tests run it in Node);
 * the download itself is in download.ts.
 */
import { traceFormat, traceFormatVersion, type ChartGraph, type TraceFile, type TraceRecord } from '../protocol/trace.js';

export class TraceFileError extends Error {
  readonly code = 'ERR_TRACE_FILE';
}

export function toTraceFile(source: string, charts: ChartGraph[], records: TraceRecord[], nowMs: number): TraceFile {
  return { format: traceFormat, version: traceFormatVersion, savedAtMs: nowMs, source, charts, records };
}

export function fileNameFor(atMs: number): string {
  return `freebs-trace-${new Date(atMs).toISOString().replace(/[:.]/g, '-')}.json`;
}

function checkHeader(x: unknown): asserts x is { format: string; version: number; charts?: unknown; source?: unknown } {
  const h = x as { format?: unknown; version?: unknown } | null;
  if (typeof h !== 'object' || h === null || h.format !== traceFormat) throw new TraceFileError(`not a FreEBS trace (format should be "${traceFormat}")`);
  if (h.version !== traceFormatVersion) throw new TraceFileError(`trace version ${String(h.version)}; this page reads version ${traceFormatVersion}`);
}

function checkRecords(records: unknown[]): TraceRecord[] {
  let lastSeq = 0;
  return records.map((r, i) => {
    const rec = r as Partial<TraceRecord> | null;
    if (typeof rec !== 'object' || rec === null || (rec.kind !== 'status' && rec.kind !== 'state' && rec.kind !== 'event') || typeof rec.atMs !== 'number') {
      throw new TraceFileError(`record ${i + 1} is not a trace record`);
    }
    // Records without a seq (a hand-made or merged file) are numbered in file order.
    const seq = typeof rec.seq === 'number' && rec.seq > lastSeq ? rec.seq : lastSeq + 1;
    lastSeq = seq;
    return { ...rec, seq } as TraceRecord;
  });
}

/** What `freebs inject --out` writes (actors/fault-run.ts): a verdict with the run's trace in it. */
const faultRunFormat = 'freebs-fault-run';

interface FaultRunFile {
  format: typeof faultRunFormat;
  scenario?: { name?: string };
  startedAtMs?: number;
  durationMs?: number;
  verdict?: { pass?: boolean; failures?: string[]; lostAckedWrites?: number; worstStallMs?: number; healMs?: number | null; identical?: boolean };
  trace?: unknown;
}

/** A fault-injection verdict: its trace, with the verdict as the last event on the timeline. */
function traceOfFaultRun(run: FaultRunFile, name: string): TraceFile {
  if (typeof run.trace !== 'object' || run.trace === null) {
    throw new TraceFileError(`${name} is a fault-run verdict without a trace (the controller did not answer at the end of the run)`);
  }
  checkHeader(run.trace);
  const t = run.trace as Partial<TraceFile>;
  const records = checkRecords(Array.isArray(t.records) ? t.records : []);
  const v = run.verdict ?? {};
  const lastMs = records.length > 0 ? records[records.length - 1].atMs : 0;
  const endMs = typeof run.startedAtMs === 'number' && typeof run.durationMs === 'number' ? Math.max(lastMs, run.startedAtMs + run.durationMs) : lastMs;
  const summary =
    `verdict ${v.pass ? 'PASS' : 'FAIL'}: ${v.lostAckedWrites ?? '?'} acknowledged writes lost, worst stall ${v.worstStallMs ?? '?'} ms, ` +
    `heal ${v.healMs ?? '-'} ms, replicas ${v.identical ? 'identical' : 'NOT identical'}` +
    (v.failures && v.failures.length > 0 ? ` — ${v.failures.join('; ')}` : '');
  records.push({ kind: 'event', type: 'alert', node: null, atMs: endMs, seq: (records[records.length - 1]?.seq ?? 0) + 1, text: summary, data: { verdict: v.pass === true } });
  return {
    format: traceFormat,
    version: traceFormatVersion,
    savedAtMs: typeof t.savedAtMs === 'number' ? t.savedAtMs : endMs,
    source: `freebs inject ${run.scenario?.name ?? name}`,
    charts: Array.isArray(t.charts) ? t.charts : [],
    records,
  };
}

/** Parse a saved run (JSON or NDJSON), or a fault-injection verdict (`freebs inject --out`). */
export function parseTraceFile(text: string, name: string): TraceFile {
  const trimmed = text.trim();
  if (trimmed === '') throw new TraceFileError(`${name} is empty`);
  let file: TraceFile;
  try {
    const whole = JSON.parse(trimmed) as unknown;
    if ((whole as { format?: unknown } | null)?.format === faultRunFormat) return traceOfFaultRun(whole as FaultRunFile, name);
    checkHeader(whole);
    const f = whole as Partial<TraceFile>;
    file = { ...(f as TraceFile), records: checkRecords(Array.isArray(f.records) ? f.records : []) };
  } catch (err) {
    if (err instanceof TraceFileError) throw err;
    const lines = trimmed.split('\n').filter((l) => l.trim() !== '');
    let parsed: unknown[];
    try {
      parsed = lines.map((l) => JSON.parse(l) as unknown);
    } catch {
      throw new TraceFileError(`${name} is neither JSON nor NDJSON`);
    }
    const header = parsed.shift();
    checkHeader(header);
    file = {
      format: traceFormat,
      version: traceFormatVersion,
      savedAtMs: Date.now(),
      source: typeof header.source === 'string' ? header.source : name,
      charts: Array.isArray(header.charts) ? (header.charts as ChartGraph[]) : [],
      records: checkRecords(parsed),
    };
  }
  if (!Array.isArray(file.charts)) file.charts = [];
  return file;
}

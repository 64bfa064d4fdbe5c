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

/** Parse a saved run (JSON or NDJSON). */
export function parseTraceFile(text: string, name: string): TraceFile {
  const trimmed = text.trim();
  if (trimmed === '') throw new TraceFileError(`${name} is empty`);
  let file: TraceFile;
  try {
    const whole = JSON.parse(trimmed) as unknown;
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

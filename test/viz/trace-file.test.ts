/**
 * Loading a saved run into the page: the JSON the page and /viz/trace.json write, and NDJSON (a
 * header line, then a record per line) as a recorder or simulator can append as it goes.
 */
import { describe, expect, it } from 'vitest';
import type { TraceFile } from '../../protocol/trace.js';
import { parseTraceFile, toTraceFile } from '../../viz/trace-file.js';

const records: TraceFile['records'] = [
  { seq: 4, atMs: 10, kind: 'event', type: 'liveness', node: 'r2', text: 'r2 is inactive', data: { state: 'inactive' } },
  { seq: 9, atMs: 20, kind: 'state', node: 'r2', machine: 'liveness', value: 'failed', from: 'inactive.waiting', event: 'after failAfter' },
];

describe('trace files', () => {
  it('reads back what the page saves', () => {
    const file = toTraceFile('http://127.0.0.1:8080/', [], records, 99);
    const back = parseTraceFile(JSON.stringify(file), 'run.json');
    expect(back.records).toEqual(records);
    expect(back.source).toBe('http://127.0.0.1:8080/');
  });

  it('reads NDJSON and numbers records that carry no seq', () => {
    const text = [JSON.stringify({ format: 'freebs-trace', version: 1, source: 'sim seed 7' }), JSON.stringify({ ...records[0], seq: undefined }), JSON.stringify({ ...records[1], seq: undefined }), ''].join('\n');
    const back = parseTraceFile(text, 'sim.ndjson');
    expect(back.records.map((r) => r.seq)).toEqual([1, 2]);
    expect(back.source).toBe('sim seed 7');
    expect(back.charts).toEqual([]);
  });

  it('reads a fault-injection verdict (freebs inject --out): its trace, the verdict last on the timeline', () => {
    const run = {
      format: 'freebs-fault-run',
      version: 1,
      scenario: { name: 'head-kill' },
      startedAtMs: 5,
      durationMs: 100,
      verdict: { pass: false, failures: ['2 acknowledged writes lost'], lostAckedWrites: 2, worstStallMs: 950, healMs: 3000, identical: true },
      trace: toTraceFile('http://127.0.0.1:8080/', [], records, 99),
    };
    const back = parseTraceFile(JSON.stringify(run), 'run.json');
    expect(back.records.slice(0, 2)).toEqual(records);
    const last = back.records[2];
    expect(last).toMatchObject({ kind: 'event', type: 'alert', atMs: 105, seq: 10 });
    expect(last.kind === 'event' && last.text).toMatch(/^verdict FAIL: 2 acknowledged writes lost, worst stall 950 ms.*2 acknowledged writes lost$/);
    expect(back.source).toBe('freebs inject head-kill');
    expect(() => parseTraceFile(JSON.stringify({ ...run, trace: null }), 'run.json')).toThrow(/verdict without a trace/);
  });

  it.each([
    ['an empty file', '', /empty/],
    ['another format', JSON.stringify({ format: 'other', version: 1 }), /not a FreEBS trace/],
    ['a newer version', JSON.stringify({ format: 'freebs-trace', version: 2, records: [] }), /version 2/],
    ['garbage', 'not json at all', /neither JSON nor NDJSON/],
    ['a bad record', JSON.stringify({ format: 'freebs-trace', version: 1, charts: [], records: [{ kind: 'nope' }] }), /record 1/],
  ])('refuses %s with a reason', (_what, text, reason) => {
    expect(() => parseTraceFile(text, 'x.json')).toThrow(reason);
  });
});

/**
 * Every fault-injection scenario shipped in deploy/faults/, run for real (controller, replicas and
 * driver as processes started with the `freebs` commands, fault proxies in front of their ports,
 * the verifying workload through NBD) with the short profile: T = 250 ms, so every time written in
 * T is half the default. One scenario after another; each must pass its verdict — no acknowledged
 * write lost, every block verifies, no client error it does not allow, its stall bound, healed to
 * N replicas at one version, identical LSVDs. A verdict table is printed at the end;
 * FREEBS_KEEP_TEST_DATA=1 keeps every run's data and logs (a failed run keeps them anyway).
 *
 * The CLI's scenario validation is checked once through `freebs inject` itself.
 */
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { formatVerdict, runFaultScenario, type FaultRunResult } from '../../actors/fault-run.js';
import { loadScenario } from '../../actors/scenario.js';
import { parseTraceFile } from '../../viz/trace-file.js';
import { ProcessTracker } from '../helpers/processes.js';
import { itWith, requirements } from '../helpers/tools.js';

const heartbeatMs = 250;
const faultsDir = path.join(import.meta.dirname, '../../deploy/faults');
const files = readdirSync(faultsDir).filter((f) => f.endsWith('.yaml')).sort();
const results: FaultRunResult[] = [];
const procs = new ProcessTracker();

afterAll(async () => {
  await procs.stopAll();
  if (results.length === 0) return;
  const rows = results.map((r) => {
    const v = r.verdict;
    const errors = Object.values(v.clientErrors).reduce((a, b) => a + b, 0);
    return [
      r.scenario.name,
      v.pass ? 'pass' : 'FAIL',
      String(v.lostAckedWrites),
      String(errors),
      `${v.worstStallMs}`,
      v.healMs === null ? (v.healed ? '-' : 'no') : `${v.healMs}`,
      v.identical === null ? '-' : v.identical ? 'yes' : 'NO',
      `${v.writesAcked}`,
      `${(r.durationMs / 1000).toFixed(1)}`,
    ];
  });
  const head = ['scenario', 'verdict', 'lost', 'client errors', 'worst stall ms', 'heal ms', 'identical', 'writes acked', 'run s'];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i])).join('  ');
  console.log(`fault injection (T = ${heartbeatMs} ms)\n${line(head)}\n${rows.map(line).join('\n')}`);
});

describe('freebs inject: the scenarios in deploy/faults (short profile, T = 250 ms)', () => {
  it('ships at least ten scenarios, all valid', () => {
    expect(files.length).toBeGreaterThanOrEqual(10);
    for (const f of files) expect(() => loadScenario(path.join(faultsDir, f))).not.toThrow();
  });

  for (const file of files) {
    const scenario = loadScenario(path.join(faultsDir, file));
    // Disk-full scenarios put a replica on a tmpfs: root only.
    const needs = requirements({ root: scenario.tmpfs !== undefined, commands: scenario.tmpfs ? ['mount', 'umount'] : [] });
    itWith(
      needs,
      `${scenario.name}: ${scenario.description ?? ''}`,
      async () => {
        const result = await runFaultScenario({
          scenario,
          heartbeatMs,
          keep: process.env.FREEBS_KEEP_TEST_DATA === '1',
          onProgress: process.env.FREEBS_INJECT_PROGRESS === '1' ? (l) => console.log(l) : undefined,
        });
        results.push(result);
        const text = formatVerdict(result);
        if (!result.verdict.pass) console.log(text);
        expect(result.verdict.failures, text).toEqual([]);
        expect(result.verdict.pass).toBe(true);
        expect(result.verdict.lostAckedWrites).toBe(0);
        expect(result.verdict.identical).toBe(true);
        expect(result.snapshots.length).toBeGreaterThan(0);
        expect(result.timeline.filter((e) => e.kind === 'step').length).toBe(scenario.steps.length);
        // What the visualizer loads (`--out` writes the result as JSON): the controller's trace
        // with the steps and the verdict on it.
        const replay = parseTraceFile(JSON.stringify(result), 'run.json');
        expect(replay.records.filter((r) => r.kind === 'event' && r.data?.fault === true).length).toBe(scenario.steps.length);
        expect(replay.records.at(-1)).toMatchObject({ kind: 'event', type: 'alert', text: expect.stringMatching(/^verdict PASS: 0 acknowledged writes lost/) });
      },
      { timeout: 90_000 },
    );
  }

  it('freebs inject refuses an invalid scenario, naming the bad key, with exit status 2', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'freebs-inject-bad-'));
    try {
      const file = path.join(dir, 'bad.yaml');
      writeFileSync(file, 'duration: 10T\nsteps:\n  - { at: 2s, kill: hed }\n');
      const r = await procs.run(process.execPath, ['--import', 'tsx', 'cli/freebs.ts', 'inject', file], { timeoutMs: 30_000 });
      expect(r.code).toBe(2);
      expect(r.stderr).toContain('steps[0].kill');
      expect(r.stderr).toContain('head, middle, tail');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

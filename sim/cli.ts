/**
 * npm run sim -- --seeds 10000 [--start N] [--verbose] [--seed N] [--driver-crashes] [--fault-ms MS]
 *
 * Runs many seeds, prints a summary; for each failing seed, its seed, what broke, the cluster's
 * state and the trace of the events that led to it (the run replayed with tracing on: a seed
 * replays exactly). --verbose prints every trace line of a failing seed, not only the last ones,
 * and a line per seed.
 */
import { parseArgs } from 'node:util';
import { runSeed, type RunResult } from './run.js';
import { Trace } from './trace.js';

const { values } = parseArgs({
  options: {
    seeds: { type: 'string', default: '100' },
    start: { type: 'string', default: '1' },
    seed: { type: 'string' },
    verbose: { type: 'boolean', default: false },
    'driver-crashes': { type: 'boolean', default: false },
    'fault-ms': { type: 'string' },
    'trace-lines': { type: 'string', default: '400' },
    'max-failures': { type: 'string', default: '3' },
  },
});

const faultMs = values['fault-ms'] !== undefined ? Number(values['fault-ms']) : undefined;
const first = values.seed !== undefined ? Number(values.seed) : Number(values.start);
const count = values.seed !== undefined ? 1 : Number(values.seeds);
const traceLines = Number(values['trace-lines']);
const maxShown = Number(values['max-failures']);

/** The first words of a failure, for grouping: numbers and ids dropped. */
function kindOf(failure: string): string {
  return failure
    .replace(/\b(r|op |v|e|seed )\d+\b/g, '$1#')
    .replace(/\d+/g, '#')
    .slice(0, 110);
}

const started = performance.now();
const failures: RunResult[] = [];
const kinds = new Map<string, number[]>();
let steps = 0;
let simMs = 0;
let ops = 0;
let reads = 0;
for (let seed = first; seed < first + count; seed++) {
  const r = runSeed({ seed, driverCrashes: values['driver-crashes'], ...(faultMs !== undefined ? { faultMs } : {}) });
  steps += r.steps;
  simMs += r.simMs;
  ops += r.workload.issued;
  reads += r.readsChecked;
  if (values.verbose) console.log(`seed ${seed}: ${r.ok ? 'ok' : `FAIL ${r.failure}`} (${r.params}; v${r.lastVersion}, ${r.steps} steps)`);
  if (!r.ok) {
    failures.push(r);
    const k = kindOf(r.failure!);
    kinds.set(k, [...(kinds.get(k) ?? []), seed]);
  }
  if (!values.verbose && (seed - first + 1) % 100 === 0) process.stderr.write(`  ${seed - first + 1}/${count} seeds, ${failures.length} failed\n`);
}
const wallS = (performance.now() - started) / 1000;

for (const f of failures.slice(0, maxShown)) {
  // Replay with the trace on; it must fail the same way.
  const replay = runSeed({ seed: f.seed, driverCrashes: values['driver-crashes'], trace: true, ...(faultMs !== undefined ? { faultMs } : {}) });
  console.log(`\n=== seed ${f.seed} FAILED: ${f.failure}`);
  if (replay.failure !== f.failure) console.log(`!!! the replay failed differently: ${replay.failure} — the run is not deterministic`);
  console.log(`parameters: ${f.params}; faults: ${JSON.stringify(f.faults)}`);
  console.log(replay.state);
  const lines = values.verbose ? replay.trace : replay.trace.slice(-traceLines);
  console.log(`--- trace (${values.verbose ? 'all' : `last ${lines.length} of ${replay.trace.length}`} lines; --verbose for all)`);
  for (const line of lines) console.log(Trace.format(line));
}

console.log(`\n${count} seeds (${first}…${first + count - 1}): ${count - failures.length} passed, ${failures.length} failed in ${wallS.toFixed(1)} s`);
console.log(`  ${(simMs / 1000).toFixed(0)} simulated s, ${steps} steps, ${ops} client requests, ${reads} reads checked`);
for (const [k, seeds] of kinds) console.log(`  ${seeds.length}× ${k}  (seeds ${seeds.slice(0, 10).join(', ')}${seeds.length > 10 ? ', …' : ''})`);
if (failures.length > 0) {
  console.log(`replay one: npm run sim -- --seed ${failures[0].seed} --verbose`);
  process.exitCode = 1;
}

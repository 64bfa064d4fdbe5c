/**
 * `freebs inject SCENARIO.yaml`: a scripted fault-injection run against a cluster of its own
 * (actors/fault-run.ts), with progress lines while it runs, the verdict printed at the end and
 * written as JSON (--out: the verdict with the controller's visualizer trace in it, which the
 * visualizer's "Load run" opens). Exit status: 0 pass, 1 fail, 2 the scenario is invalid or
 * the cluster did not start.
 * Scenario format and verdict format: deploy/faults/README.md.
 */
import { writeFileSync } from 'node:fs';
import { formatVerdict, runFaultScenario, type FaultRunResult } from '../actors/fault-run.js';
import { loadScenario, ScenarioError, type Scenario } from '../actors/scenario.js';

export interface InjectOptions {
  out?: string;
  dir?: string;
  keep?: boolean;
  heartbeatMs?: number;
}

export async function runInject(file: string, options: InjectOptions): Promise<void> {
  let scenario: Scenario;
  try {
    scenario = loadScenario(file);
  } catch (err) {
    if (!(err instanceof ScenarioError)) throw err;
    console.error(`freebs inject: ${err.message}`);
    process.exit(2);
  }
  // The members run in process groups of their own (a terminal's Ctrl-C reaches only us): stop
  // them, by PID, before leaving. A second Ctrl-C leaves at once.
  const abort = new AbortController();
  let interrupts = 0;
  const onInterrupt = () => {
    if (++interrupts > 1) process.exit(130);
    console.error('\ninterrupted: stopping the cluster (Ctrl-C again to leave it running)…');
    abort.abort();
  };
  process.on('SIGINT', onInterrupt);
  process.on('SIGTERM', onInterrupt);
  let result: FaultRunResult;
  try {
    result = await runFaultScenario({
      scenario,
      signal: abort.signal,
      ...(options.dir !== undefined ? { dir: options.dir } : {}),
      ...(options.keep ? { keep: true } : {}),
      ...(options.heartbeatMs !== undefined ? { heartbeatMs: options.heartbeatMs } : {}),
      onProgress: (line) => console.log(line),
    });
  } catch (err) {
    // The cluster did not even start.
    console.error(`freebs inject: ${(err as Error).message}`);
    process.exit(2);
  }
  console.log(`\n${formatVerdict(result)}`);
  if (options.out) {
    // One file: the verdict, with the controller's trace in it; the visualizer's "Load run" opens it.
    writeFileSync(options.out, JSON.stringify(result) + '\n');
    console.log(`verdict written to ${options.out} (load it in the visualizer to replay the run)`);
  }
  process.exit(result.verdict.pass ? 0 : 1);
}

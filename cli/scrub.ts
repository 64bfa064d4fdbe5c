/**
 * `freebs scrub`: compare the chain replicas' content chunk by chunk (actors/scrub.ts) and,
 * with --repair --dir DIR on the host of a local cluster, replace a replica whose copy differs.
 * Progress bars on a terminal, a line every few seconds otherwise. Exit status: 0 all agree (or
 * repaired and agreeing), 1 differences found (and not repaired), 2 could not scrub.
 */
import cliProgress from 'cli-progress';
import { formatScrubReport, repairLocal, scrub, ScrubError, type ScrubProgress, type ScrubReport } from '../actors/scrub.js';

export interface ScrubCliOptions {
  controller: string;
  chunk: number;
  repair?: boolean;
  dir?: string;
  json?: boolean;
  timeoutMs: number;
}

/** Progress as bars on a terminal, or a line per replica every few seconds. */
function progressReporter(json: boolean): { update(p: ScrubProgress): void; stop(): void } {
  if (process.stderr.isTTY && !json) {
    const bars = new cliProgress.MultiBar(
      { format: '{replica} [{bar}] {percentage}% {doneMiB}/{sizeMiB} MiB', stream: process.stderr, hideCursor: true, clearOnComplete: false },
      cliProgress.Presets.shades_classic,
    );
    const byReplica = new Map<string, cliProgress.SingleBar>();
    const mib = (n: number) => (n / 1048576).toFixed(0);
    return {
      update(p) {
        let bar = byReplica.get(p.replica);
        if (!bar) byReplica.set(p.replica, (bar = bars.create(p.sizeBytes, 0, { replica: p.replica.padEnd(4), doneMiB: '0', sizeMiB: mib(p.sizeBytes) })));
        bar.update(p.doneBytes, { doneMiB: mib(p.doneBytes) });
      },
      stop: () => bars.stop(),
    };
  }
  const latest = new Map<string, ScrubProgress>();
  const timer = setInterval(() => {
    if (latest.size === 0) return;
    console.error(`scrub: ${[...latest.values()].map((p) => `${p.replica} ${Math.floor((100 * p.doneBytes) / p.sizeBytes)}%`).join(', ')}`);
  }, 3000);
  return { update: (p) => void latest.set(p.replica, p), stop: () => clearInterval(timer) };
}

export async function runScrub(options: ScrubCliOptions): Promise<void> {
  if (options.repair && !options.dir) {
    console.error('freebs scrub: --repair needs --dir, the cluster data directory (as given to freebs up), to stop and set aside a bad replica');
    process.exit(2);
  }
  const log = (line: string) => console.error(`scrub: ${line}`);
  const progress = progressReporter(options.json ?? false);
  let report: ScrubReport;
  let after: ScrubReport | null = null;
  try {
    try {
      report = await scrub({ controller: options.controller, chunkBytes: options.chunk, settleTimeoutMs: options.timeoutMs, onProgress: (p) => progress.update(p), log });
    } finally {
      progress.stop();
    }
    if (!options.json) console.log(formatScrubReport(report));
    if (options.repair && report.bad.length > 0) {
      const repaired = await repairLocal({ controller: options.controller, dir: options.dir!, report, healTimeoutMs: options.timeoutMs, log });
      for (const r of repaired.replaced) console.log(`replaced ${r.id} (its data is in ${r.movedTo}); chain now ${repaired.chain.join(' → ')} at epoch ${repaired.epoch}`);
      after = await scrub({ controller: options.controller, chunkBytes: options.chunk, settleTimeoutMs: options.timeoutMs, log });
      if (!options.json) console.log(`after the repair:\n${formatScrubReport(after)}`);
    }
  } catch (err) {
    if (!(err instanceof ScrubError)) throw err;
    console.error(`freebs scrub: ${err.message}`);
    process.exit(2);
  }
  if (options.json) console.log(JSON.stringify({ report, after }, null, 2));
  const final = after ?? report;
  process.exit(final.bad.length === 0 && final.ambiguous.length === 0 ? 0 : 1);
}

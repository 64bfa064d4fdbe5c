/**
 * Makes a running SYNC visible: a log line every few seconds (versions received, target,
 * rate) and, when the replica runs on a terminal, a progress bar; one line when it ends.
 */
import cliProgress from 'cli-progress';
import type { Logger } from 'pino';

const LOG_EVERY_MS = 2000;

export interface SyncView {
  mode: 'log' | 'image';
  fromVersion: number;
  targetVersion: number;
}

export class SyncProgress {
  private current: { view: SyncView; startedMs: number; lastLogMs: number; bar: cliProgress.SingleBar | null } | null = null;
  private timer: ReturnType<typeof setInterval> | null = null;

  constructor(
    private readonly log: Logger,
    private readonly appliedVersion: () => number,
    private readonly showBar = Boolean(process.stdout.isTTY),
  ) {}

  /** Call with the machine's sync context whenever it may have changed (null: not syncing). */
  update(view: SyncView | null): void {
    if (view && this.current && this.current.view.targetVersion === view.targetVersion && this.current.view.mode === view.mode) return;
    if (!view) {
      if (this.current) this.finish();
      return;
    }
    if (this.current) this.finish();
    const now = Date.now();
    let bar: cliProgress.SingleBar | null = null;
    if (this.showBar) {
      bar = new cliProgress.SingleBar(
        { format: 'sync ({mode}) [{bar}] {percentage}% | {value}/{total} versions | {eta_formatted} left', hideCursor: true },
        cliProgress.Presets.shades_classic,
      );
      bar.start(Math.max(1, view.targetVersion - view.fromVersion), 0, { mode: view.mode });
    }
    this.current = { view, startedMs: now, lastLogMs: now, bar };
    this.timer ??= setInterval(() => this.tick(), 250);
    this.timer.unref();
  }

  stop(): void {
    if (this.current) this.finish();
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  private tick(): void {
    const c = this.current;
    if (!c) return;
    const done = Math.max(0, this.appliedVersion() - c.view.fromVersion);
    c.bar?.update(Math.min(done, c.view.targetVersion - c.view.fromVersion));
    const now = Date.now();
    if (now - c.lastLogMs >= LOG_EVERY_MS) {
      c.lastLogMs = now;
      const seconds = (now - c.startedMs) / 1000;
      this.log.info(
        {
          mode: c.view.mode,
          appliedVersion: this.appliedVersion(),
          targetVersion: c.view.targetVersion,
          percent: Math.floor((100 * done) / Math.max(1, c.view.targetVersion - c.view.fromVersion)),
          versionsPerSecond: Math.round(done / Math.max(seconds, 0.001)),
        },
        'sync: progress',
      );
    }
  }

  private finish(): void {
    const c = this.current!;
    this.current = null;
    c.bar?.stop();
    const version = this.appliedVersion();
    const reached = version >= c.view.targetVersion;
    this.log.info(
      { mode: c.view.mode, fromVersion: c.view.fromVersion, appliedVersion: version, targetVersion: c.view.targetVersion, seconds: (Date.now() - c.startedMs) / 1000 },
      reached ? 'sync: caught up' : 'sync: interrupted',
    );
  }
}

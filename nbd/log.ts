/**
 * Logging for the NBD server: a pino-compatible interface and a per-connection rate limiter, so
 * a client spamming bad requests costs a few lines, not one per request.
 */
import { LOG_BURST_PER_WINDOW, LOG_WINDOW_MS } from './constants.js';

/** Anything pino-like: `logger.warn({ ...fields }, 'message')`. A pino instance fits as is. */
export interface NbdLogger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

export const silentLogger: NbdLogger = { debug() {}, info() {}, warn() {}, error() {} };

/**
 * Passes at most LOG_BURST_PER_WINDOW lines per LOG_WINDOW_MS; when a window had drops, the
 * first line of the next window says how many were suppressed.
 */
export class RateLimitedLog {
  private windowStartMs = 0;
  private inWindow = 0;
  private suppressed = 0;

  constructor(
    private readonly logger: NbdLogger,
    private readonly fields: object,
    private readonly level: 'warn' | 'error' = 'warn',
    private readonly now: () => number = Date.now,
  ) {}

  log(obj: object, msg: string): void {
    const nowMs = this.now();
    if (nowMs - this.windowStartMs >= LOG_WINDOW_MS) {
      this.windowStartMs = nowMs;
      this.inWindow = 0;
    }
    if (this.inWindow >= LOG_BURST_PER_WINDOW) {
      this.suppressed++;
      return;
    }
    this.inWindow++;
    const extra = this.suppressed > 0 ? { suppressedLines: this.suppressed } : {};
    this.suppressed = 0;
    this.logger[this.level]({ ...this.fields, ...obj, ...extra }, msg);
  }
}

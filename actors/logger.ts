import pino, { type Logger } from 'pino';

/**
 * One pino logger per process, tagged with the member it runs. JSON lines on stderr so
 * stdout stays free for what a command prints for people (URIs, tables).
 * FREEBS_LOG_LEVEL overrides the level (e.g. debug, warn).
 */
export function createLogger(member: string, level = process.env.FREEBS_LOG_LEVEL ?? 'info'): Logger {
  return pino({ name: 'freebs', level, base: { member } }, pino.destination({ fd: 2, sync: false }));
}

/** Anything pino-like: `logger.warn({ ...fields }, 'message')`. */
export interface Logger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

function line(level: string) {
  return (obj: object, msg?: string) => {
    // One JSON line on stderr, so an operator without a configured logger still sees trouble.
    process.stderr.write(`${JSON.stringify({ level, time: Date.now(), ...obj, msg })}\n`);
  };
}

/** Used when no logger is given: warnings and errors to stderr, debug/info dropped. */
export const stderrLogger: Logger = {
  debug: () => {},
  info: () => {},
  warn: line('warn'),
  error: line('error'),
};

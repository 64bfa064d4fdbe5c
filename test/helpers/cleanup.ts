/**
 * A LIFO stack of cleanup steps (unmount, detach, stop by PID…) for afterAll: every step runs
 * even if an earlier one throws, so a failed test never leaves mounts or devices behind.
 */
export class CleanupStack {
  private readonly steps: Array<{ what: string; fn: () => Promise<unknown> | unknown }> = [];

  /** Register a step; returns a function that runs it now (once) and removes it from the stack. */
  defer(what: string, fn: () => Promise<unknown> | unknown): () => Promise<void> {
    const step = { what, fn };
    this.steps.push(step);
    return async () => {
      const i = this.steps.indexOf(step);
      if (i < 0) return;
      this.steps.splice(i, 1);
      await fn();
    };
  }

  /** Run every step, newest first; collect failures and report them all at the end. */
  async runAll(): Promise<void> {
    const errors: string[] = [];
    while (this.steps.length > 0) {
      const step = this.steps.pop()!;
      try {
        await step.fn();
      } catch (err) {
        errors.push(`${step.what}: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
    if (errors.length > 0) throw new Error(`cleanup failed:\n${errors.join('\n')}`);
  }
}

/**
 * Simulated time: one queue of tasks ordered by (time, sequence), run one at a time. Timers of
 * every XState actor (through `clock()`), link deliveries, disk completions and faults all go
 * through it, so a run is a pure function of its seed.
 */

export interface Task {
  readonly at: number;
  readonly seq: number;
  fn: () => void;
  cancelled: boolean;
}

/** The shape XState wants for `createActor(machine, { clock })`. */
export interface XStateClock {
  setTimeout(fn: (...args: unknown[]) => void, timeout: number): unknown;
  clearTimeout(id: unknown): void;
}

export class Scheduler {
  /** Simulated milliseconds since the run began. */
  now = 0;
  /** Tasks run so far. */
  steps = 0;
  private readonly heap: Task[] = [];
  private seq = 0;
  private readonly deferred: Array<() => void> = [];

  at(time: number, fn: () => void): Task {
    const task: Task = { at: Math.max(time, this.now), seq: this.seq++, fn, cancelled: false };
    this.push(task);
    return task;
  }

  after(delayMs: number, fn: () => void): Task {
    return this.at(this.now + Math.max(0, delayMs), fn);
  }

  cancel(task: Task | null | undefined): void {
    if (task) task.cancelled = true;
  }

  /**
   * Run `fn` when the current task is done, before the next one: what one event-loop turn is to
   * the real processes (links batch every frame sent in a turn into one message).
   */
  defer(fn: () => void): void {
    this.deferred.push(fn);
  }

  /** Run the deferred work of the current step. */
  drain(): void {
    for (let i = 0; i < this.deferred.length; i++) this.deferred[i]();
    this.deferred.length = 0;
  }

  get pending(): number {
    return this.heap.length;
  }

  /** Run the next task; false when nothing is left. */
  step(): boolean {
    for (;;) {
      const task = this.pop();
      if (!task) return false;
      if (task.cancelled) continue;
      this.now = task.at;
      this.steps++;
      task.fn();
      this.drain();
      return true;
    }
  }

  /** Run every task due up to `time` (or until `stop` says so), then set the clock to `time`. */
  runUntil(time: number, stop?: () => boolean): void {
    while (this.heap.length > 0 && this.peekTime() <= time) {
      if (stop?.()) return;
      this.step();
    }
    if (!stop?.()) this.now = Math.max(this.now, time);
  }

  /** A clock for one actor: its timers are tasks here, and die with `owner` when it crashes. */
  clock(owner: { readonly alive: boolean }): XStateClock {
    return {
      setTimeout: (fn, timeout) =>
        this.after(timeout, () => {
          if (owner.alive) fn();
        }),
      clearTimeout: (id) => this.cancel(id as Task),
    };
  }

  private peekTime(): number {
    // Cancelled tasks still count here; step() skips them.
    return this.heap[0].at;
  }

  private less(x: Task, y: Task): boolean {
    return x.at < y.at || (x.at === y.at && x.seq < y.seq);
  }

  private push(task: Task): void {
    const h = this.heap;
    h.push(task);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.less(h[i], h[p])) break;
      [h[i], h[p]] = [h[p], h[i]];
      i = p;
    }
  }

  private pop(): Task | undefined {
    const h = this.heap;
    if (h.length === 0) return undefined;
    const top = h[0];
    const last = h.pop()!;
    if (h.length > 0) {
      h[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < h.length && this.less(h[l], h[m])) m = l;
        if (r < h.length && this.less(h[r], h[m])) m = r;
        if (m === i) break;
        [h[i], h[m]] = [h[m], h[i]];
        i = m;
      }
    }
    return top;
  }
}

/**
 * Lamport clock for causal order across merged traces. One per process, shared by all its links
 * (pass it to each Link/LinkServer/DialingLink), so a batch received on one link orders before
 * a batch later sent on another.
 */
export class LamportClock {
  #time = 0;

  /** The current value (last stamp given or observed). */
  get time(): number {
    return this.#time;
  }

  /** Advance for a local event (an outgoing batch) and return its stamp. */
  tick(): number {
    return ++this.#time;
  }

  /** Merge a received stamp: time = max(local, remote) + 1. */
  observe(remote: number): number {
    this.#time = (remote > this.#time ? remote : this.#time) + 1;
    return this.#time;
  }
}

/**
 * What happened in a run, for the one who has to find out why a seed failed. Off while many
 * seeds run (a failing seed is run again with it on: the run replays exactly); on, it keeps
 * every line, or only the last `keep` of them.
 */
import type { Frame } from '../protocol/frames.js';

export interface TraceLine {
  /** Simulated ms. */
  t: number;
  node: string;
  text: string;
}

export class Trace {
  private readonly lines: TraceLine[] = [];

  constructor(
    readonly enabled: boolean,
    private readonly now: () => number,
    private readonly keep = Infinity,
  ) {}

  log(node: string, text: string | (() => string)): void {
    if (!this.enabled) return;
    this.lines.push({ t: this.now(), node, text: typeof text === 'string' ? text : text() });
    if (this.lines.length > this.keep * 2) this.lines.splice(0, this.lines.length - this.keep);
  }

  all(): TraceLine[] {
    return this.lines.length > this.keep ? this.lines.slice(-this.keep) : [...this.lines];
  }

  static format(line: TraceLine): string {
    return `${(line.t / 1000).toFixed(4).padStart(9)}s ${line.node.padEnd(6)} ${line.text}`;
  }
}

/** One frame, short: no block data. */
export function describeFrame(f: Frame): string {
  switch (f.t) {
    case 'write':
      return `write v${f.v} e${f.epoch} ${f.kind}@${f.offsetBytes}+${f.lengthBytes}`;
    case 'flush':
      return `flush v${f.v} e${f.epoch}`;
    case 'ack':
      return `ack a${f.appliedVersion} d${f.durableVersion} e${f.epoch}`;
    case 'read':
      return `read r${f.r} @${f.offsetBytes}+${f.lengthBytes} min${f.minVersion} e${f.epoch}`;
    case 'read-reply':
      return `read-reply r${f.r} ${f.ok ? 'ok' : `${f.code}`} a${f.appliedVersion}`;
    case 'sync':
      return `sync from${f.fromVersion} e${f.epoch}`;
    case 'sync-start':
      return `sync-start ${f.mode} from${f.fromVersion} image${f.imageVersion} target${f.targetVersion} e${f.epoch}`;
    case 'image-chunk':
      return `image-chunk @${f.offsetBytes}+${f.data.length}`;
    case 'image-end':
      return `image-end v${f.imageVersion}`;
    case 'heartbeat':
      return `heartbeat ${f.state} e${f.epoch} a${f.appliedVersion} d${f.durableVersion}`;
    case 'config':
      return `config e${f.epoch} [${f.chain.map((m) => m.id).join(',')}]`;
    case 'error':
      return `error ${f.code}${f.epoch !== undefined ? ` e${f.epoch}` : ''}: ${f.message}`;
    case 'hello':
      return `hello ${f.role} e${f.epoch}`;
    case 'welcome':
      return `welcome ${f.role} e${f.epoch} a${f.appliedVersion}`;
  }
}

/** A batch, short: runs of writes folded into one range. */
export function describeFrames(frames: readonly Frame[]): string {
  const parts: string[] = [];
  for (let i = 0; i < frames.length; i++) {
    const f = frames[i];
    if (f.t === 'write') {
      let j = i;
      while (j + 1 < frames.length && frames[j + 1].t === 'write') j++;
      if (j > i) {
        const last = frames[j] as typeof f;
        parts.push(`writes v${f.v}..v${last.v} e${f.epoch}`);
        i = j;
        continue;
      }
    }
    parts.push(describeFrame(f));
  }
  return parts.join('; ');
}

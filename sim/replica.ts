/**
 * actors/replica.ts in the simulator: the real replica machine, its intentions carried out on a
 * simulated disk and links in the same order as the real process (append, then ack and
 * forward), with the forwarder (actors/forwarder.ts) and its recent-writes ring
 * (actors/recent-writes.ts) mirrored, awaits included where the real code waits on IO.
 *
 * Keep this file in step with actors/replica.ts and actors/forwarder.ts: the simulator finds the
 * bugs of the code it mirrors.
 */
import { createActor, type Actor } from 'xstate';
import { replicaMachine, type ReplicaEmitted, type ReplicaMachine } from '../machines/replica.js';
import { ErrorCodes, type ErrorFrame, type Frame, type HelloFrame, type MemberId, type ReadFrame, type SyncStartFrame, type WriteFrame } from '../protocol/frames.js';
import { controllerId, Sightings, SimControllerLink } from './controller-link.js';
import type { SimRecord, SimStore } from './disk.js';
import { between, idOf, type SimEnv } from './env.js';
import { SimDialer, type LinkEnd, type Listener } from './network.js';
import type { Task } from './scheduler.js';

/** How soon a replica asks its predecessor again after being refused. */
const SYNC_RETRY_MS = 200;

/** actors/recent-writes.ts: the last writes applied, by version, in a bounded ring. */
export class SimRecentWrites {
  private readonly frames = new Map<number, WriteFrame>();
  private firstVersion = 0;
  private count = 0;

  constructor(private readonly maxFrames = 16_384) {}

  push(frame: WriteFrame): void {
    if (this.count > 0 && frame.v !== this.firstVersion + this.count) this.clear();
    if (this.count === 0) this.firstVersion = frame.v;
    if (this.count === this.maxFrames) {
      this.frames.delete(this.firstVersion);
      this.firstVersion++;
      this.count--;
    }
    this.frames.set(frame.v, frame);
    this.count++;
  }

  get(v: number): WriteFrame | undefined {
    if (v < this.firstVersion || v >= this.firstVersion + this.count) return undefined;
    return this.frames.get(v);
  }

  clear(): void {
    this.frames.clear();
    this.count = 0;
  }
}

interface IncomingImage {
  start: SyncStartFrame;
  content: Uint8Array;
  chunks: number;
  after: Frame[];
}

/** actors/replica.ts's ImageCommit: an image committing, and the upstream batches held until it is in place. */
interface ImageCommit {
  held: Array<{ predecessorId: MemberId; frames: Frame[] }>;
  abandoned: boolean;
}

export class SimReplica implements Listener {
  alive = true;
  readonly actor: Actor<ReplicaMachine>;
  /** Inbound links by the peer's member id (driver, successor). */
  private readonly peers = new Map<MemberId, LinkEnd>();
  private upstream: SimDialer | null = null;
  private upstreamUrl: string | null = null;
  private syncRetry: Task | null = null;
  private forwarder: SimForwarder | null = null;
  private readonly recent = new SimRecentWrites();
  private image: IncomingImage | null = null;
  /** An image whose end arrived, being committed: upstream frames wait for it (seed 8750). */
  private committing: ImageCommit | null = null;
  /** Writes the machine accepted while an image commits, appended once it is in place. */
  private heldAppends: WriteFrame[] = [];
  private readonly sightings: Sightings;
  private controller: SimControllerLink | null = null;

  constructor(
    private readonly env: SimEnv,
    readonly id: MemberId,
    readonly store: SimStore,
  ) {
    this.sightings = new Sightings(() => env.sched.now);
    this.actor = createActor(replicaMachine, {
      clock: env.sched.clock(this),
      input: { id, appliedVersion: store.version, durableVersion: store.durableVersion },
    });
    this.actor.on('*', (e) => {
      if (this.alive) this.carryOut(e as ReplicaEmitted);
    });
    let lastValue: unknown = null;
    this.actor.subscribe({
      next: (s) => {
        if (s.value !== lastValue) {
          lastValue = s.value;
          env.trace.log(id, () => `state ${String(s.value)} e${s.context.epoch} a${s.context.appliedVersion} d${s.context.durableVersion}`);
        }
      },
      error: (err) => env.checker.fail(`replica ${id}'s machine threw: ${(err as Error)?.stack ?? String(err)}`),
    });
  }

  start(): void {
    this.actor.start();
    this.env.net.listen(this.id, this);
    this.controller = new SimControllerLink(this.env, {
      owner: this,
      role: 'replica',
      sightings: this.sightings,
      state: () => {
        const s = this.actor.getSnapshot();
        return { epoch: s.context.epoch, state: String(s.value), appliedVersion: s.context.appliedVersion, durableVersion: s.context.durableVersion };
      },
      onConfig: (config) => this.actor.send({ type: 'config', config }),
      machine: this.actor,
    });
  }

  get state(): string {
    return String(this.actor.getSnapshot().value);
  }

  /** kill -9 (and maybe power loss): the process is gone; its disk keeps what it kept. */
  crash(): void {
    if (!this.alive) return;
    this.alive = false;
    this.actor.stop();
    this.env.net.crash(this.id);
  }

  /** SIGTERM: ReplicaProcess.close(). */
  stop(): void {
    if (!this.alive) return;
    this.actor.send({ type: 'stop' });
    this.controller?.close();
    this.forwarder?.stop();
    this.env.sched.cancel(this.syncRetry);
    this.upstream?.close();
    for (const end of this.peers.values()) end.close('replica stopping');
    this.env.net.unlisten(this.id, this);
    this.store.completeFlush(this.store.version);
    this.alive = false;
    this.actor.stop();
  }

  accept(link: LinkEnd, hello: HelloFrame): void {
    const snapshot = this.actor.getSnapshot().context;
    link.send({ t: 'welcome', role: 'replica', id: this.id, epoch: snapshot.epoch, appliedVersion: this.store.version });
    const previous = this.peers.get(hello.id);
    if (previous && previous !== link) previous.close('replaced by a new link');
    this.peers.set(hello.id, link);
    link.onBatch = (frames) => {
      if (!this.alive) return;
      this.sightings.heard(hello.id);
      this.receiveFromPeer(hello, frames);
    };
    link.onClose = () => {
      if (!this.alive) return;
      const current = this.peers.get(hello.id) === link;
      if (current) this.peers.delete(hello.id);
      if (current) this.actor.send({ type: 'successor.down', id: hello.id });
    };
  }

  /** Frames from a peer that dialed us: driver or successor. */
  private receiveFromPeer(hello: HelloFrame, frames: Frame[]): void {
    // Runs of writes, and of reads, go to the machine as one event each (one step for a batch).
    let writes: WriteFrame[] | null = null;
    let reads: ReadFrame[] | null = null;
    for (const frame of frames) {
      if (frame.t === 'write') {
        if (reads) this.sendReads(hello.id, reads);
        reads = null;
        (writes ??= []).push(frame);
        continue;
      }
      if (writes) {
        this.actor.send({ type: 'writes', from: hello.id, frames: writes });
        writes = null;
      }
      if (frame.t === 'read') {
        (reads ??= []).push(frame);
        continue;
      }
      if (reads) this.sendReads(hello.id, reads);
      reads = null;
      switch (frame.t) {
        case 'flush':
          this.actor.send({ type: 'flush', from: hello.id, frame });
          break;
        case 'sync':
          this.actor.send({ type: 'sync.request', from: hello.id, frame });
          break;
        case 'config':
          // The simulated cluster always has a controller: a peer may pass on one we missed.
          this.actor.send({ type: 'config', config: frame });
          break;
        case 'error':
          break;
        default:
          this.refuse(hello.id, { t: 'error', code: 'ERR_BAD_FRAME', message: `a replica does not take ${frame.t} frames from a ${hello.role}` });
      }
    }
    if (writes) this.actor.send({ type: 'writes', from: hello.id, frames: writes });
    if (reads) this.sendReads(hello.id, reads);
  }

  private sendReads(from: MemberId, reads: ReadFrame[]): void {
    this.actor.send(reads.length === 1 ? { type: 'read', from, frame: reads[0] } : { type: 'reads', from, frames: reads });
  }

  /** Frames from our predecessor, on the link we dialed for SYNC. */
  private receiveFromUpstream(predecessorId: MemberId, frames: Frame[]): void {
    if (this.committing) {
      this.committing.held.push({ predecessorId, frames });
      return;
    }
    let writes: WriteFrame[] | null = null;
    const flushWrites = () => {
      if (writes) this.actor.send({ type: 'writes', from: predecessorId, frames: writes });
      writes = null;
    };
    for (let i = 0; i < frames.length; i++) {
      const frame = frames[i];
      if (!this.alive) return;
      if (this.image && frame.t === 'sync-start') this.image = null;
      if (this.image) {
        const image = this.image;
        if (frame.t === 'image-chunk') {
          image.content.set(frame.data, frame.offsetBytes);
          image.chunks++;
        } else if (frame.t === 'image-end') {
          this.installImage(predecessorId, image, frames.slice(i + 1));
          return;
        } else image.after.push(frame);
        continue;
      }
      if (frame.t === 'write') {
        (writes ??= []).push(frame);
        continue;
      }
      flushWrites();
      switch (frame.t) {
        case 'sync-start':
          if (frame.epoch !== this.actor.getSnapshot().context.epoch) {
            // The answer to a SYNC of another epoch (we asked again since): its stream, image
            // included, is stale; the current SYNC's answer is still to come (simulator, seed 3537).
            break;
          }
          if (frame.mode === 'image') {
            this.image = { start: frame, content: new Uint8Array(this.store.sizeBytes), chunks: 0, after: [] };
          } else this.actor.send({ type: 'sync.start', frame });
          break;
        case 'config':
          this.actor.send({ type: 'config', config: frame });
          break;
        case 'error':
          this.retrySyncSoon();
          break;
        default:
          break;
      }
    }
    flushWrites();
  }

  /** Swap the image in (atomically, after the disk took it); only then does the machine learn its version. */
  private installImage(predecessorId: MemberId, image: IncomingImage, rest: Frame[]): void {
    this.image = null;
    const commit: ImageCommit = { held: [{ predecessorId, frames: [...image.after, ...rest] }], abandoned: false };
    this.committing = commit;
    // Chunks are written as they come; the commit (flush, two checkpoints) takes a while.
    this.env.sched.after(between(this.env, this.env.params.imageCommitMs), () => {
      if (!this.alive) return;
      const { imageVersion } = image.start;
      const finish = (installed: boolean): void => {
        this.committing = null;
        if (installed) {
          this.recent.clear();
          this.actor.send({ type: 'store.image', imageVersion });
          if (!commit.abandoned) this.actor.send({ type: 'sync.start', frame: image.start });
          this.actor.send({ type: 'store.applied', appliedVersion: this.store.version });
        }
        this.applyHeld();
        for (const batch of commit.held) this.receiveFromUpstream(batch.predecessorId, batch.frames);
      };
      if (commit.abandoned) return finish(false); // the link went down meanwhile: aborted
      this.env.sched.after(between(this.env, this.env.params.imageCommitMs), () => {
        if (!this.alive) return;
        this.store.commitImage(imageVersion, image.content);
        this.env.checker.checkImage(this.id, imageVersion, image.content);
        this.env.trace.log(this.id, `image v${imageVersion} installed (${image.chunks} chunks)`);
        finish(true);
      });
    });
  }

  /** actors/replica.ts's applyHeld: writes wait while an image commits (the simulated store is never busy). */
  private applyHeld(): void {
    if (this.committing) return;
    const { store, env } = this;
    const frames = this.heldAppends;
    this.heldAppends = [];
    try {
      for (const frame of frames) {
        store.append(frame);
        this.recent.push(frame);
      }
    } catch (err) {
      const { code, message } = describe(err);
      env.trace.log(this.id, `store refused an append: ${code} ${message}`);
      this.actor.send({ type: 'store.failed', code, message });
    }
    this.actor.send({ type: 'store.applied', appliedVersion: store.version });
    this.forwarder?.notify();
  }

  /** The machine's intentions, carried out. */
  private carryOut(e: ReplicaEmitted): void {
    const { store, env } = this;
    switch (e.type) {
      case 'append':
        for (const frame of e.frames) this.heldAppends.push(frame);
        this.applyHeld();
        break;
      case 'storeFlush': {
        const upTo = store.version;
        env.sched.after(between(env, env.params.flushMs), () => {
          if (!this.alive) return;
          this.actor.send({ type: 'store.durable', durableVersion: store.completeFlush(upTo) });
        });
        break;
      }
      case 'ack':
        if (e.appliedVersion > store.version || e.durableVersion > store.durableVersion) {
          env.checker.fail(
            `${this.id} acks applied ${e.appliedVersion} / durable ${e.durableVersion}, but its store holds ${store.version} / durable ${store.durableVersion}`,
          );
        }
        this.peers.get(e.to)?.send({
          t: 'ack',
          epoch: this.actor.getSnapshot().context.epoch,
          id: this.id,
          appliedVersion: e.appliedVersion,
          durableVersion: e.durableVersion,
        });
        break;
      case 'serveRead': {
        const { frame, to } = e;
        let data: Uint8Array | null = null;
        let failure: { code: string; message: string } | null = null;
        try {
          data = store.read(frame.offsetBytes, frame.lengthBytes);
        } catch (err) {
          failure = describe(err);
        }
        env.sched.after(between(env, env.params.readMs), () => {
          if (!this.alive) return;
          if (data) this.peers.get(to)?.send({ t: 'read-reply', r: frame.r, ok: true, appliedVersion: store.version, data });
          else this.peers.get(to)?.send({ t: 'read-reply', r: frame.r, ok: false, appliedVersion: store.version, code: failure!.code, message: failure!.message });
        });
        break;
      }
      case 'refuse':
        if (e.readId !== undefined) {
          this.peers.get(e.to)?.send({ t: 'read-reply', r: e.readId, ok: false, appliedVersion: store.version, code: e.frame.code, message: e.frame.message });
        } else {
          this.refuse(e.to, e.frame);
        }
        if (e.frame.code === ErrorCodes.epochStale) this.passConfigOn(e.to);
        break;
      case 'forwardFrom':
        this.startForwarding(e.to, e.fromVersion);
        break;
      case 'forwardStop':
        this.forwarder?.stop();
        this.forwarder = null;
        break;
      case 'syncFrom':
        this.syncFrom(e.predecessor.id, e.predecessor.url);
        break;
      case 'syncStop':
        this.upstream?.close();
        this.upstream = null;
        this.upstreamUrl = null;
        break;
      case 'epochChanged':
        env.trace.log(this.id, `config e${e.epoch} [${e.chain.map((m) => m.id).join(',')}]`);
        break;
    }
  }

  private passConfigOn(to: MemberId): void {
    const c = this.actor.getSnapshot().context;
    if (c.chain.length === 0 || !c.driverId || !c.volume) return;
    this.peers.get(to)?.send({ t: 'config', epoch: c.epoch, chain: c.chain, driverId: c.driverId, volume: c.volume });
  }

  private refuse(to: MemberId, frame: ErrorFrame): void {
    this.peers.get(to)?.send(frame);
  }

  private startForwarding(to: MemberId, fromVersion: number): void {
    const link = this.peers.get(to);
    if (!link) return;
    this.forwarder?.stop();
    this.env.trace.log(this.id, `forwarding to ${to} from v${fromVersion}`);
    this.forwarder = new SimForwarder(this.env, this, this.store, this.recent, link, fromVersion, () => this.actor.getSnapshot().context.epoch);
    this.forwarder.start();
  }

  private syncFrom(predecessorId: MemberId, url: string): void {
    if (this.upstream && this.upstreamUrl === url) {
      if (this.upstream.isUp) this.requestSync();
      return;
    }
    this.upstream?.close();
    this.upstreamUrl = url;
    const p = this.env.params;
    const upstream = new SimDialer(
      this.env.net,
      this,
      url,
      idOf(url),
      () => ({ t: 'hello', role: 'replica', id: this.id, epoch: this.actor.getSnapshot().context.epoch, clusterId: p.clusterId }),
      this.env.rng,
      { reconnectMinMs: p.reconnectMinMs, reconnectMaxMs: p.reconnectMaxMs, stableLinkMs: p.stableLinkMs, helloTimeoutMs: p.helloTimeoutMs },
    );
    this.upstream = upstream;
    upstream.handlers.up = () => this.requestSync();
    upstream.handlers.batch = (frames) => {
      if (!this.alive) return;
      this.sightings.heard(predecessorId);
      this.receiveFromUpstream(predecessorId, frames);
    };
    upstream.handlers.down = (reason) => {
      if (!this.alive || this.upstream !== upstream) return;
      if (this.committing) {
        this.committing.abandoned = true;
        this.committing.held = [];
      }
      this.image = null;
      this.actor.send({ type: 'upstream.down', reason });
    };
  }

  private retrySyncSoon(): void {
    if (this.syncRetry || !this.alive) return;
    this.syncRetry = this.env.sched.after(SYNC_RETRY_MS, () => {
      this.syncRetry = null;
      if (this.alive && this.upstream?.isUp && !this.image && this.actor.getSnapshot().matches('syncing')) this.requestSync();
    });
  }

  private requestSync(): void {
    // actors/replica.ts: a new SYNC drops an image of an earlier one still coming in (seed 9217).
    this.image = null;
    const ctx = this.actor.getSnapshot().context;
    this.upstream?.send({ t: 'sync', epoch: ctx.epoch, id: this.id, fromVersion: ctx.acceptedVersion });
  }

  /** For the end-of-run report. */
  describe(): string {
    const s = this.actor.getSnapshot();
    const c = s.context;
    return `${this.id}${this.alive ? '' : ' (dead)'}: ${String(s.value)} e${c.epoch} accepted ${c.acceptedVersion} applied ${c.appliedVersion} durable ${c.durableVersion} store ${this.store.version}/${this.store.durableVersion} pred ${c.predecessor?.id ?? '-'} succ ${c.successor?.id ?? '-'} fwd ${c.forwardingTo ?? '-'} upstream ${this.upstream ? (this.upstream.isUp ? 'up' : 'down') : '-'}`;
  }

  get controllerLinked(): boolean {
    return this.controller?.isUp ?? false;
  }

  static controllerId = controllerId;
}

/**
 * actors/forwarder.ts: one cursor streams this replica's history to its successor, first what it
 * lacks (from memory, the log, or an image), then every new write. Its awaits on disk reads
 * are scheduled continuations here; between them new writes may arrive, as in the real one.
 */
export class SimForwarder {
  private sentVersion: number;
  private pumping = false;
  private again = false;
  private stopped = false;

  constructor(
    private readonly env: SimEnv,
    private readonly owner: { readonly alive: boolean; readonly id: MemberId },
    private readonly store: SimStore,
    private readonly recent: SimRecentWrites,
    private readonly sink: LinkEnd,
    fromVersion: number,
    private readonly epoch: () => number,
  ) {
    this.sentVersion = fromVersion;
  }

  start(): void {
    const fromVersion = this.sentVersion;
    if (fromVersion > this.store.version || !this.store.hasRecordsSince(fromVersion)) {
      this.sendImage(() => this.notify());
      return;
    }
    const targetVersion = this.store.version;
    this.put({ t: 'sync-start', epoch: this.epoch(), mode: 'log', fromVersion, imageVersion: 0, targetVersion });
    this.notify();
  }

  notify(): void {
    if (this.stopped) return;
    if (this.pumping) {
      this.again = true;
      return;
    }
    this.pumping = true;
    this.again = false;
    this.pump();
  }

  stop(): void {
    this.stopped = true;
  }

  /** The real pump's do { while … } while (again): returns early while a log read is in flight. */
  private pump(): void {
    if (!this.owner.alive) return;
    for (;;) {
      while (!this.stopped && this.sink.isOpen && this.sentVersion < this.store.version) {
        const next = this.recent.get(this.sentVersion + 1);
        if (next) {
          this.sendWrite(next);
          continue;
        }
        this.sendFromLog(() => this.pump());
        return;
      }
      if (!(this.again && !this.stopped)) break;
      this.again = false;
    }
    this.pumping = false;
  }

  /** Old versions: read back from the log, one record per disk read, until memory has the rest. */
  private sendFromLog(resume: () => void): void {
    let records: SimRecord[];
    try {
      records = this.store.recordsSince(this.sentVersion);
    } catch (err) {
      this.env.trace.log(this.owner.id, `forwarding failed: ${describe(err).message}`);
      this.stopped = true;
      this.pumping = false;
      this.sink.close('log truncated under the stream: SYNC again');
      return;
    }
    let i = 0;
    const nextRecord = (): void => {
      if (!this.owner.alive) return;
      if (i >= records.length) return resume();
      this.env.sched.after(between(this.env, this.env.params.recordReadMs), () => {
        if (!this.owner.alive) return;
        if (this.stopped || !this.sink.isOpen) return resume();
        const record = records[i++];
        if (record.v !== this.sentVersion + 1) {
          this.env.trace.log(this.owner.id, `forwarding failed: log stream out of order: expected v${this.sentVersion + 1}, got v${record.v}`);
          this.stopped = true;
          this.pumping = false;
          return;
        }
        this.sendWrite({ t: 'write', epoch: 0, v: record.v, kind: record.kind, offsetBytes: record.offsetBytes, lengthBytes: record.lengthBytes, ...(record.data ? { data: record.data } : {}) });
        if (this.recent.get(this.sentVersion + 1)) return resume();
        nextRecord();
      });
    };
    nextRecord();
  }

  private sendImage(done: () => void): void {
    const image = this.store.imageAt(this.env.params.imageChunkBytes);
    const targetVersion = this.store.version;
    this.put({ t: 'sync-start', epoch: this.epoch(), mode: 'image', fromVersion: this.sentVersion, imageVersion: image.version, targetVersion });
    let i = 0;
    const nextChunk = (): void => {
      if (!this.owner.alive) return;
      if (i >= image.chunks.length) {
        this.put({ t: 'image-end', epoch: this.epoch(), imageVersion: image.version });
        this.sentVersion = image.version;
        return done();
      }
      this.env.sched.after(between(this.env, this.env.params.imageChunkReadMs), () => {
        if (!this.owner.alive) return;
        if (this.stopped || !this.sink.isOpen) return done();
        const chunk = image.chunks[i++];
        this.put({ t: 'image-chunk', epoch: this.epoch(), offsetBytes: chunk.offsetBytes, data: chunk.data });
        nextChunk();
      });
    };
    nextChunk();
  }

  private sendWrite(frame: WriteFrame): void {
    this.put({ ...frame, epoch: this.epoch() });
    this.sentVersion = frame.v;
  }

  private put(frame: Frame): void {
    this.sink.send(frame);
  }
}

function describe(err: unknown): { code: string; message: string } {
  const e = err as { code?: unknown; message?: unknown };
  return { code: typeof e?.code === 'string' ? e.code : 'EIO', message: typeof e?.message === 'string' ? e.message : String(err) };
}

/**
 * The replica process (the paper's sdaemon): the replica machine wired to its LSVD and its
 * links. The machine decides; this file does, in the order safety needs: append to the store,
 * then ack the driver and forward to the successor.
 */
import type { Logger } from 'pino';
import { createActor, type Actor } from 'xstate';
import { replicaMachine, type ReplicaEmitted, type ReplicaMachine } from '../machines/replica.js';
import { ErrorCodes, type ErrorFrame, type Frame, type HelloFrame, type MemberId, type ReadFrame, type SyncStartFrame, type WriteFrame } from '../protocol/frames.js';
import type { LinkSecurity } from '../protocol/auth.js';
import { DialingLink } from '../protocol/dialer.js';
import { CloseCodes, type Link } from '../protocol/link.js';
import { LinkServer } from '../protocol/server.js';
import { LamportClock } from '../protocol/clock.js';
import { serveChecksums } from './checksums.js';
import { ControllerLink, PeerSightings } from './controller-link.js';
import { Forwarder, type FrameSink } from './forwarder.js';
import { MemberMetrics, replicaGauges } from './metrics.js';
import { RecentWrites } from './recent-writes.js';
import { SyncProgress } from './sync-progress.js';
import type { ImageSink, ReplicaStore } from './replica-store.js';

/** How soon a replica asks its predecessor again after being refused (it lacked the configuration). */
const SYNC_RETRY_MS = 200;

export interface ReplicaOptions {
  id: MemberId;
  store: ReplicaStore;
  host: string;
  port: number;
  clusterId: string;
  /** Cluster secret and TLS for every link (protocol/auth.ts); none: unauthenticated, dev only. */
  security?: LinkSecurity;
  /** ws:// address of the controller; without one, the driver hands out the (static) configuration. */
  controllerUrl?: string;
  heartbeatMs?: number;
  /**
   * Bytes of writes from the predecessor that may wait for the store (its write buffer full, or
   * an image being written) before this replica stops reading from the predecessor, until half
   * of them are in.
   */
  heldBoundBytes: number;
  log: Logger;
}

/** An image arriving from the predecessor, and the frames that came after it, held until it is in place. */
interface IncomingImage {
  start: SyncStartFrame;
  /** Chunks are written in arrival order on this chain. */
  written: Promise<ImageSink | null>;
  chunks: number;
  after: Frame[];
}

/** An image committing, and the upstream batches held until it is in place. */
interface ImageCommit {
  held: Array<{ predecessorId: MemberId; frames: Frame[] }>;
  /** The link it came on went down: abort it if the commit has not begun, drop what was held. */
  abandoned: boolean;
}

/** How often writes held for a full store write buffer retry. */
const HELD_APPEND_RETRY_MS = 2;

/** What a held frame costs in memory: its data, and a little for the frame itself. */
function heldCost(frame: Frame): number {
  const data = (frame as { data?: Uint8Array }).data;
  return 64 + (data ? data.length : 0);
}

export class ReplicaProcess {
  readonly actor: Actor<ReplicaMachine>;
  private readonly server: LinkServer;
  /** Inbound links by the peer's member id (driver, successor, controller). */
  private readonly peers = new Map<MemberId, Link>();
  private upstream: DialingLink | null = null;
  private syncRetry: ReturnType<typeof setTimeout> | null = null;
  private readonly metrics: MemberMetrics;
  private readonly syncProgress: SyncProgress;
  private upstreamUrl: string | null = null;
  private forwarder: Forwarder | null = null;
  private readonly recent = new RecentWrites();
  /**
   * Writes the machine accepted that the store has not taken yet: its write buffer was full
   * (ERR_BUSY, a disk slower than the writes coming in). Applied in order, first, on a short timer.
   */
  private heldAppends: WriteFrame[] = [];
  private heldRetry: ReturnType<typeof setTimeout> | null = null;
  private heldSinceMs: number | null = null;
  /** Bytes in heldAppends, and in image chunks still being written. */
  private heldBytes = 0;
  private imagePendingBytes = 0;
  /** Reading from the predecessor stopped: the store is that far behind (throttleUpstream). */
  private upstreamPaused = false;
  /** One Lamport clock for every link of this process, so its trace keeps causal order. */
  private readonly clock = new LamportClock();
  private image: IncomingImage | null = null;
  /**
   * An image whose end arrived, being committed: every upstream frame that comes meanwhile (a new
   * sync-start included) waits here, else it would go into the store the commit replaces, or a
   * newer image would commit first and this older one over it (simulator, seed 8750).
   */
  private committing: ImageCommit | null = null;
  private closed = false;
  private readonly sightings = new PeerSightings();
  private controller: ControllerLink | null = null;
  private readonly checksumScan = { scanning: false };

  private constructor(private readonly options: ReplicaOptions) {
    const { store, id } = options;
    this.metrics = new MemberMetrics('replica', id);
    this.actor = createActor(replicaMachine, {
      input: { id, appliedVersion: store.version, durableVersion: store.durableVersion },
    });
    this.actor.on('*', (e) => this.carryOut(e as ReplicaEmitted));
    replicaGauges(this.metrics, () => this.status);
    this.syncProgress = new SyncProgress(options.log, () => store.version);
    this.actor.subscribe((snapshot) => this.syncProgress.update(snapshot.context.sync));
    this.server = new LinkServer({
      localId: id,
      host: options.host,
      port: options.port,
      clusterId: options.clusterId,
      security: options.security,
      clock: this.clock,
      logger: options.log,
      onLink: (link, hello) => this.accept(link, hello),
      httpHandler: (req, res) => {
        if (this.metrics.serve(req, res)) return;
        // Per-chunk content hashes for `freebs scrub` (actors/checksums.ts).
        if (serveChecksums(id, store, req, res, this.checksumScan)) return;
        if (req.method === 'GET' && req.url === '/status') {
          res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
          res.end(JSON.stringify(this.status));
        } else {
          res.writeHead(404, { 'content-type': 'text/plain' });
          res.end('not found: try /status, /metrics or /checksums\n');
        }
      },
    });
  }

  static async start(options: ReplicaOptions): Promise<{ replica: ReplicaProcess; port: number }> {
    const replica = new ReplicaProcess(options);
    replica.actor.start();
    const { port } = await replica.server.listen();
    if (options.controllerUrl) replica.linkController(options.controllerUrl, options.heartbeatMs ?? 500);
    options.log.info({ port, version: options.store.version }, 'replica listening');
    return { replica, port };
  }

  get status() {
    const s = this.actor.getSnapshot();
    return {
      id: this.options.id,
      state: String(s.value),
      epoch: s.context.epoch,
      appliedVersion: s.context.appliedVersion,
      durableVersion: s.context.durableVersion,
      sync: s.context.sync,
    };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.actor.send({ type: 'stop' });
    this.syncProgress.stop();
    await this.controller?.close();
    this.forwarder?.stop();
    if (this.syncRetry) clearTimeout(this.syncRetry);
    if (this.heldRetry) clearTimeout(this.heldRetry);
    this.upstream?.close();
    await this.server.close();
    await this.options.store.flush().catch(() => undefined);
    await this.options.store.close();
  }

  private get log(): Logger {
    return this.options.log;
  }

  private linkController(url: string, heartbeatMs: number): void {
    this.controller = new ControllerLink({
      url,
      id: this.options.id,
      role: 'replica',
      clusterId: this.options.clusterId,
      security: this.options.security,
      heartbeatMs,
      clock: this.clock,
      log: this.log,
      sightings: this.sightings,
      state: () => {
        const s = this.actor.getSnapshot();
        return { epoch: s.context.epoch, state: String(s.value), appliedVersion: s.context.appliedVersion, durableVersion: s.context.durableVersion };
      },
      onConfig: (config) => this.actor.send({ type: 'config', config }),
      machine: this.actor,
    });
  }

  private accept(link: Link, hello: HelloFrame): void {
    const snapshot = this.actor.getSnapshot().context;
    link.send({ t: 'welcome', role: 'replica', id: this.options.id, epoch: snapshot.epoch, appliedVersion: this.options.store.version });
    const previous = this.peers.get(hello.id);
    if (previous && previous !== link) previous.close();
    this.peers.set(hello.id, link);
    this.log.info({ peer: hello.id, role: hello.role }, 'peer linked');
    link.on('batch', (batch) => {
      this.sightings.heard(hello.id);
      this.receiveFromPeer(hello, batch.frames);
    });
    link.on('close', () => {
      // Only the peer's current link counts: an old link's close noticed after the peer linked
      // again (found by the simulator, seed 14) would stop forwarding on the new one for good.
      if (this.peers.get(hello.id) !== link) return;
      this.peers.delete(hello.id);
      this.actor.send({ type: 'successor.down', id: hello.id });
    });
  }

  /** Frames from a peer that dialed us: driver, successor or controller. */
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
          // Without a controller the driver carries the static configuration. With one, only it
          // issues configurations, but a peer may pass one on (one we missed while the controller
          // was down); the machine adopts only a newer one.
          if (this.options.controllerUrl || hello.role === 'driver') this.actor.send({ type: 'config', config: frame });
          break;
        case 'error':
          this.log.warn({ peer: hello.id, code: frame.code, message: frame.message }, 'peer reported an error');
          // A successor still on an older epoch missed the controller's config: pass ours on.
          if (this.options.controllerUrl && frame.epoch !== undefined && frame.epoch < this.actor.getSnapshot().context.epoch) this.passConfigOn(hello.id);
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
      // The predecessor started over (a second SYNC answered): the image in progress will never
      // end, and the new one's chunks must not go into it (simulator, seed 339).
      if (this.image && frame.t === 'sync-start') this.abandonImage('the predecessor started the stream again');
      if (this.image) {
        // Everything after an image waits until the image is in place.
        const image = this.image;
        if (frame.t === 'image-chunk') {
          const cost = heldCost(frame);
          this.imagePendingBytes += cost;
          image.written = image.written
            .then(async (sink) => {
              await sink?.write(frame.offsetBytes, frame.data);
              image.chunks++;
              return sink;
            })
            .finally(() => {
              this.imagePendingBytes -= cost;
              this.throttleUpstream();
            });
        } else if (frame.t === 'image-end') {
          // The rest of this batch, and what comes until the image is in place, waits for it.
          void this.installImage(predecessorId, image, frames.slice(i + 1));
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
            this.log.info({ epoch: frame.epoch, mode: frame.mode }, 'sync: ignoring the answer to a SYNC of another epoch');
            break;
          }
          this.log.info({ mode: frame.mode, fromVersion: frame.fromVersion, targetVersion: frame.targetVersion }, 'sync: predecessor answered');
          if (frame.mode === 'image') {
            const written = this.options.store.beginImage(frame.imageVersion).catch((err: unknown) => {
              this.log.error({ err }, 'sync: could not start receiving an image');
              return null;
            });
            this.image = { start: frame, written, chunks: 0, after: [] };
          } else this.actor.send({ type: 'sync.start', frame });
          break;
        case 'config':
          // Passed on by the predecessor with a refusal: the controller's, newer than ours.
          if (this.options.controllerUrl) this.actor.send({ type: 'config', config: frame });
          break;
        case 'error':
          this.log.warn({ peer: predecessorId, code: frame.code, message: frame.message }, 'predecessor refused; asking again shortly');
          if (this.options.controllerUrl && frame.epoch !== undefined && frame.epoch < this.actor.getSnapshot().context.epoch) this.passConfigOn(predecessorId);
          // Typically it has not heard of the new configuration yet: it will, so ask again.
          this.retrySyncSoon();
          break;
        default:
          break;
      }
    }
    flushWrites();
  }

  /**
   * Swap the received image in atomically; only then does the machine learn its new version,
   * so a link lost mid-image resyncs from the old one. Upstream frames that arrive meanwhile
   * are held and handled once the image is in place.
   */
  private async installImage(predecessorId: MemberId, image: IncomingImage, rest: Frame[]): Promise<void> {
    const { imageVersion } = image.start;
    this.image = null;
    const commit: ImageCommit = { held: [{ predecessorId, frames: [...image.after, ...rest] }], abandoned: false };
    this.committing = commit;
    let installed = false;
    try {
      const sink = await image.written;
      if (!sink) throw new Error('no image area');
      if (commit.abandoned) await sink.abort();
      else {
        await sink.commit();
        installed = true;
      }
    } catch (err) {
      this.log.error({ err }, 'sync: installing the image failed');
      if (!commit.abandoned) {
        // What followed the image builds on it: drop it and SYNC again from what we hold.
        commit.held = [];
        this.committing = null;
        this.actor.send({ type: 'upstream.down', reason: 'image install failed' });
        this.applyHeld();
        return;
      }
    }
    this.committing = null;
    if (installed) {
      this.recent.clear();
      this.log.info({ imageVersion, chunks: image.chunks }, 'sync: image installed');
      // The store holds the image and nothing past it, whatever the machine's state or epoch now.
      this.actor.send({ type: 'store.image', imageVersion });
      // Its stream's progress only if that stream still runs (the link did not go down meanwhile).
      if (!commit.abandoned) this.actor.send({ type: 'sync.start', frame: image.start });
      this.actor.send({ type: 'store.applied', appliedVersion: this.options.store.version });
    } else this.log.info({ imageVersion, chunks: image.chunks }, 'sync: image abandoned before its commit');
    // Writes that came meanwhile (from the driver, if a config made us head), on the image.
    this.applyHeld();
    for (const batch of commit.held) this.receiveFromUpstream(batch.predecessorId, batch.frames);
  }

  /** Drop the image being received (its area is deleted); one already committing finishes. */
  private abandonImage(reason: string): void {
    const image = this.image;
    if (!image) return;
    this.image = null;
    this.log.info({ imageVersion: image.start.imageVersion, chunks: image.chunks, reason }, 'sync: image abandoned');
    void image.written
      .then((sink) => sink?.abort())
      .catch((err: unknown) => this.log.debug({ err }, 'sync: abandoned image was already committing'));
  }

  /**
   * Append the held writes in order while the store takes them. A full write buffer is not a
   * failure: the writes wait (and are not yet acknowledged as applied) until the log writer has
   * made room; any other refusal stops this replica taking writes.
   */
  private applyHeld(): void {
    // An image committing replaces the store's content: a write appended now would be lost under
    // it (a config can make this replica head, and the driver's writes come, mid-commit).
    if (this.heldRetry || this.committing) return this.throttleUpstream();
    const { store } = this.options;
    let taken = 0;
    try {
      for (; taken < this.heldAppends.length; taken++) {
        const frame = this.heldAppends[taken]!;
        store.append(frame); // false, changing nothing, if an image installed meanwhile covers it
        this.recent.push(frame);
        this.heldBytes -= heldCost(frame);
      }
      this.heldAppends = [];
      if (this.heldSinceMs !== null) {
        this.log.info({ waitedMs: Date.now() - this.heldSinceMs }, 'store took the writes that waited for room');
        this.heldSinceMs = null;
      }
    } catch (err) {
      const { code, message } = describe(err);
      if (code === 'ERR_BUSY' && !this.closed) {
        this.heldAppends.splice(0, taken);
        if (this.heldSinceMs === null) {
          this.heldSinceMs = Date.now();
          this.log.info({ held: this.heldAppends.length }, 'store write buffer full: writes wait for the disk');
        }
        this.heldRetry = setTimeout(() => {
          this.heldRetry = null;
          this.applyHeld();
        }, HELD_APPEND_RETRY_MS);
      } else {
        this.heldAppends = [];
        this.heldBytes = 0;
        this.log.error({ code, message }, 'store refused an append; replica stops taking writes');
        this.actor.send({ type: 'store.failed', code, message });
      }
    }
    this.actor.send({ type: 'store.applied', appliedVersion: store.version });
    this.forwarder?.notify();
    this.throttleUpstream();
  }

  /**
   * Stop reading from the predecessor while more than heldBoundBytes of its writes wait for the
   * store, and read again once half of them are in. The waiting frames are memory, and a SYNC
   * stream (the whole log) or a disk slower than the chain would otherwise grow them without
   * bound; paused, TCP pushes back and the predecessor's forwarder waits (it resends from its
   * log, so nothing is lost). The driver's link is never paused: its window bounds what it sends.
   */
  private throttleUpstream(): void {
    const bound = this.options.heldBoundBytes;
    const held = this.heldBytes + this.imagePendingBytes;
    if (!this.upstreamPaused && held >= bound && this.upstream) {
      this.upstreamPaused = true;
      this.upstream.pause();
      this.log.info({ heldBytes: held, boundBytes: bound }, 'store behind: reading from the predecessor paused');
    } else if (this.upstreamPaused && held < bound / 2) {
      this.upstreamPaused = false;
      this.upstream?.resume();
      this.log.info({ heldBytes: held, boundBytes: bound }, 'store caught up: reading from the predecessor again');
    }
  }

  /** The machine's intentions, carried out. */
  private carryOut(e: ReplicaEmitted): void {
    const { store } = this.options;
    switch (e.type) {
      case 'append':
        for (const frame of e.frames) {
          this.heldAppends.push(frame);
          this.heldBytes += heldCost(frame);
        }
        this.applyHeld();
        break;
      case 'storeFlush':
        store.flush().then(
          (durableVersion) => this.actor.send({ type: 'store.durable', durableVersion }),
          (err: unknown) => {
            const { code, message } = describe(err);
            this.log.error({ code, message }, 'flush failed; replica stops taking writes');
            this.actor.send({ type: 'store.failed', code, message });
          },
        );
        break;
      case 'ack':
        this.peers.get(e.to)?.send({
          t: 'ack',
          epoch: this.actor.getSnapshot().context.epoch,
          id: this.options.id,
          appliedVersion: e.appliedVersion,
          durableVersion: e.durableVersion,
        });
        break;
      case 'serveRead': {
        const { frame, to } = e;
        store.read(frame.offsetBytes, frame.lengthBytes).then(
          (data) => this.peers.get(to)?.send({ t: 'read-reply', r: frame.r, ok: true, appliedVersion: store.version, data }),
          (err: unknown) => {
            const { code, message } = describe(err);
            this.peers.get(to)?.send({ t: 'read-reply', r: frame.r, ok: false, appliedVersion: store.version, code, message });
          },
        );
        break;
      }
      case 'refuse':
        if (e.readId !== undefined) {
          this.peers.get(e.to)?.send({ t: 'read-reply', r: e.readId, ok: false, appliedVersion: store.version, code: e.frame.code, message: e.frame.message });
        } else {
          this.refuse(e.to, e.frame);
        }
        // A peer on an older epoch may have missed the controller's config (sent just before the
        // controller died, say): pass ours on, or it waits for the controller to come back.
        if (e.frame.code === ErrorCodes.epochStale && this.options.controllerUrl) this.passConfigOn(e.to);
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
        this.upstreamPaused = false;
        this.upstreamUrl = null;
        break;
      case 'epochChanged':
        this.log.info({ epoch: e.epoch, chain: e.chain.map((m) => m.id) }, 'new configuration');
        break;
    }
  }

  /** A peer's link: one it dialed (driver, successor), or ours to the predecessor. */
  private linkTo(id: MemberId): { send(frame: Frame): boolean } | undefined {
    const inbound = this.peers.get(id);
    if (inbound) return inbound;
    return this.upstream && this.actor.getSnapshot().context.predecessor?.id === id ? this.upstream : undefined;
  }

  private passConfigOn(to: MemberId): void {
    const c = this.actor.getSnapshot().context;
    if (c.chain.length === 0 || !c.driverId || !c.volume) return;
    this.linkTo(to)?.send({ t: 'config', epoch: c.epoch, chain: c.chain, driverId: c.driverId, volume: c.volume });
  }

  private refuse(to: MemberId, frame: ErrorFrame): void {
    this.log.warn({ peer: to, code: frame.code, message: frame.message }, 'refused a frame');
    // Refusals of what the predecessor forwards go back on our link to it: it learns our epoch.
    this.linkTo(to)?.send(frame);
  }

  private startForwarding(to: MemberId, fromVersion: number): void {
    const link = this.peers.get(to);
    if (!link) return;
    this.forwarder?.stop();
    const sink: FrameSink = {
      send: (frame) => link.send(frame),
      drained: () => drained(link),
      get open() {
        return link.isOpen;
      },
      close: (reason) => void link.close(CloseCodes.goingAway, reason),
    };
    this.forwarder = new Forwarder(this.options.store, this.recent, sink, fromVersion, () => this.actor.getSnapshot().context.epoch, this.log.child({ successor: to }));
    this.forwarder.start().catch((err: unknown) => this.log.error({ err }, 'could not start forwarding'));
  }

  private syncFrom(predecessorId: MemberId, url: string): void {
    if (this.upstream && this.upstreamUrl === url) {
      // Same predecessor: the dialer is already (re)connecting; it asks again on 'up'.
      if (this.upstream.isUp) this.requestSync();
      return;
    }
    this.upstream?.close();
    this.upstreamPaused = false;
    this.upstreamUrl = url;
    const ctx = this.actor.getSnapshot().context;
    const hello: HelloFrame = { t: 'hello', role: 'replica', id: this.options.id, epoch: ctx.epoch, clusterId: this.options.clusterId };
    const upstream = new DialingLink({
      url,
      hello: () => ({ ...hello, epoch: this.actor.getSnapshot().context.epoch }),
      clock: this.clock,
      logger: this.log.child({ predecessor: predecessorId }),
      security: this.options.security,
    });
    this.upstream = upstream;
    this.throttleUpstream();
    upstream.on('up', () => this.requestSync());
    upstream.on('batch', (batch) => {
      this.sightings.heard(predecessorId);
      this.receiveFromUpstream(predecessorId, batch.frames);
    });
    upstream.on('down', ({ reason }) => {
      if (this.upstream !== upstream) return;
      if (this.committing) {
        this.committing.abandoned = true;
        this.committing.held = [];
      }
      this.abandonImage(`link to the predecessor down: ${reason}`);
      this.actor.send({ type: 'upstream.down', reason });
    });
  }

  private retrySyncSoon(): void {
    if (this.syncRetry || this.closed) return;
    this.syncRetry = setTimeout(() => {
      this.syncRetry = null;
      // An image streaming in is the answer to a later SYNC: no need to ask again.
      if (!this.closed && this.upstream?.isUp && !this.image && this.actor.getSnapshot().matches('syncing')) this.requestSync();
    }, SYNC_RETRY_MS);
  }

  private requestSync(): void {
    // Its answer starts the stream over: an image of an earlier SYNC still coming in is dropped.
    // Left in place it would take that answer, a refusal included, as a frame after the image,
    // and if the predecessor stopped streaming it (its successor left and came back) the replica
    // waited for its end forever and never asked again (simulator, seed 9217).
    this.abandonImage('a new SYNC was sent');
    const ctx = this.actor.getSnapshot().context;
    this.upstream?.send({ t: 'sync', epoch: ctx.epoch, id: this.options.id, fromVersion: ctx.acceptedVersion });
  }
}

/** Resolves when the link can take more frames, or is gone. */
function drained(link: Link): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      link.off('drain', done);
      link.off('close', done);
      resolve();
    };
    link.on('drain', done);
    link.on('close', done);
  });
}

function describe(err: unknown): { code: string; message: string } {
  const e = err as { code?: unknown; message?: unknown };
  return { code: typeof e?.code === 'string' ? e.code : 'EIO', message: typeof e?.message === 'string' ? e.message : String(err) };
}

/**
 * The wire vocabulary between driver, replicas and controller.
 *
 * Frames travel in batches (one WebSocket message per event-loop turn, see link.ts); the batch
 * envelope carries the sender and a Lamport clock so merged traces keep causal order.
 *
 * Versions are the driver's gapless write numbers. Acks are cumulative: a replica's
 * `appliedVersion` says it holds every version up to it (chain links are FIFO, so each
 * replica's history is a prefix of its predecessor's), which lets one ack cover a whole batch.
 */

export type MemberId = string;
export type Role = 'driver' | 'replica' | 'controller';
export type RecordKind = 'write' | 'trim' | 'zero';

/** First frame on every link, from the side that dialed. */
export interface HelloFrame {
  t: 'hello';
  role: Role;
  id: MemberId;
  epoch: number;
  clusterId: string;
}

/** The accepting side's answer to hello: who it is and the epoch it holds. */
export interface WelcomeFrame {
  t: 'welcome';
  role: Role;
  id: MemberId;
  epoch: number;
  appliedVersion: number;
}

/** One replicated mutation. Driver → head, then predecessor → successor (live or SYNC catch-up). */
export interface WriteFrame {
  t: 'write';
  epoch: number;
  v: number;
  kind: RecordKind;
  offsetBytes: number;
  lengthBytes: number;
  /** Present for kind 'write' only; lengthBytes === data.length. */
  data?: Uint8Array;
}

/** Make everything up to v durable. Travels the chain behind the writes it covers. */
export interface FlushFrame {
  t: 'flush';
  epoch: number;
  v: number;
}

/** Replica → driver: cumulative progress. Sent when either number advances, coalesced per turn. */
export interface AckFrame {
  t: 'ack';
  epoch: number;
  id: MemberId;
  appliedVersion: number;
  durableVersion: number;
}

/** Driver → any replica. The replica answers only once its appliedVersion ≥ minVersion. */
export interface ReadFrame {
  t: 'read';
  epoch: number;
  r: number;
  offsetBytes: number;
  lengthBytes: number;
  minVersion: number;
}

export interface ReadReplyFrame {
  t: 'read-reply';
  r: number;
  ok: boolean;
  appliedVersion: number;
  data?: Uint8Array;
  code?: string;
  message?: string;
}

/** Successor → predecessor: send me everything after fromVersion, then keep forwarding live. */
export interface SyncFrame {
  t: 'sync';
  epoch: number;
  id: MemberId;
  fromVersion: number;
}

/**
 * Predecessor → successor, answering sync. mode 'log': write frames fromVersion+1… follow.
 * mode 'image': image-chunk frames for a consistent image at imageVersion follow, then
 * image-end, then write frames from imageVersion+1.
 */
export interface SyncStartFrame {
  t: 'sync-start';
  epoch: number;
  mode: 'log' | 'image';
  fromVersion: number;
  imageVersion: number;
  targetVersion: number;
}

export interface ImageChunkFrame {
  t: 'image-chunk';
  epoch: number;
  offsetBytes: number;
  data: Uint8Array;
}

export interface ImageEndFrame {
  t: 'image-end';
  epoch: number;
  imageVersion: number;
}

/** Liveness, plus this member's view of the others (ms since it last heard each), for gossip. */
export interface HeartbeatFrame {
  t: 'heartbeat';
  id: MemberId;
  role: Role;
  epoch: number;
  state: string;
  appliedVersion: number;
  durableVersion: number;
  view: Record<MemberId, number>;
  /** The driver's I/O for the visualizer; absent from replicas and from older drivers. */
  io?: IoStats;
}

/**
 * What the driver's NBD export did: counters since the driver started (rates survive a lost
 * heartbeat), and latency over the requests completed since the previous heartbeat.
 */
export interface IoStats {
  /** Requests completed: reads, writes, trims, zeroes, flushes. */
  ops: number;
  readBytes: number;
  writeBytes: number;
  /** Requests that failed. */
  errors: number;
  /** Requests completed since the previous heartbeat, and their latency percentiles (0 when none). */
  windowOps: number;
  latencyMsP50: number;
  latencyMsP99: number;
}

export interface ChainMember {
  id: MemberId;
  /** ws:// address where the member accepts links. */
  url: string;
}

/** Controller → members: the chain of an epoch, head first. */
export interface ConfigFrame {
  t: 'config';
  epoch: number;
  chain: ChainMember[];
  driverId: MemberId;
  volume: { name: string; sizeBytes: number };
}

export interface ErrorFrame {
  t: 'error';
  code: string;
  message: string;
  /** The sender's epoch, so a stale peer learns the newer one. */
  epoch?: number;
}

export type Frame =
  | HelloFrame
  | WelcomeFrame
  | WriteFrame
  | FlushFrame
  | AckFrame
  | ReadFrame
  | ReadReplyFrame
  | SyncFrame
  | SyncStartFrame
  | ImageChunkFrame
  | ImageEndFrame
  | HeartbeatFrame
  | ConfigFrame
  | ErrorFrame;

export type FrameType = Frame['t'];

/** One WebSocket message. */
export interface Batch {
  from: MemberId;
  /** Lamport clock of the sender when the batch left. */
  lc: number;
  frames: Frame[];
}

/** Stable error codes carried in ErrorFrame.code and in thrown ProtocolErrors. */
export const ErrorCodes = {
  badFrame: 'ERR_BAD_FRAME',
  frameTooLarge: 'ERR_FRAME_TOO_LARGE',
  epochStale: 'ERR_EPOCH_STALE',
  versionGap: 'ERR_VERSION_GAP',
  notServing: 'ERR_NOT_SERVING',
  wrongCluster: 'ERR_WRONG_CLUSTER',
  quorumLost: 'ERR_QUORUM_LOST',
  readFailed: 'ERR_READ_FAILED',
  linkDown: 'ERR_LINK_DOWN',
  /** The dialing side sent no hello (or something else first) within limits.helloTimeoutMs. */
  helloTimeout: 'ERR_HELLO_TIMEOUT',
  /** The peer offered no cluster credential; this member requires one (protocol/auth.ts). */
  authRequired: 'ERR_AUTH_REQUIRED',
  /** A credential that does not prove membership: wrong secret, stale or replayed challenge, mismatched hello. */
  authFailed: 'ERR_AUTH_FAILED',
  /** Too many links still in their handshake (from this address, or in all); try again later. */
  overloaded: 'ERR_OVERLOADED',
} as const;
export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes];

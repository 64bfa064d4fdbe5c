/** Every bound on the wire, named in one place. */
export const limits = {
  /** Largest single IO the driver forwards (matches the NBD server's max request). */
  maxIoBytes: 32 * 1024 * 1024,
  /** Largest WebSocket message accepted (a batch); ws refuses bigger ones before buffering them. */
  maxMessageBytes: 64 * 1024 * 1024,
  /** A batch is sent when it reaches this size even within one event-loop turn. */
  batchFlushBytes: 1024 * 1024,
  /** Frames per batch before it is sent within the same turn. */
  batchMaxFrames: 4096,
  /** A link reports backpressure (send() returns false) past this many bytes queued. */
  sendHighWaterBytes: 16 * 1024 * 1024,
  /** Dialing links retry with exponential backoff between these bounds. */
  reconnectMinMs: 50,
  reconnectMaxMs: 2000,
  /**
   * Every handshake step has this long: a dialed link with no welcome is dropped and redialed; an
   * accepted connection that has not completed its HTTP request, or its hello, is dropped (slow
   * loris); a challenge is valid this long.
   */
  helloTimeoutMs: 5000,
  /** Error frames answered per second per link; past it, bad frames are dropped and counted. */
  errorRepliesPerSecond: 20,
  /** Image chunk size for SYNC by image. */
  imageChunkBytes: 1024 * 1024,

  // Added with the link layer (protocol/link.ts, server.ts, dialer.ts, validate.ts).
  /** After send() returned false, 'drain' fires once queued + buffered bytes fall below this. */
  sendLowWaterBytes: 8 * 1024 * 1024,
  /** Member ids, cluster ids, error codes: longest accepted string. */
  maxIdChars: 256,
  /** Free text on the wire (error messages, state names, urls, volume names). */
  maxTextChars: 4096,
  /** Members in a config frame's chain. */
  maxChainMembers: 64,
  /** Entries in a heartbeat's gossip view. */
  maxViewEntries: 256,
  /** A closing link waits this long for the peer's close handshake, then drops the socket. */
  closeGraceMs: 1000,
  /** A dialed link that stayed up this long resets its reconnect backoff to reconnectMinMs. */
  stableLinkMs: 10_000,

  // Added with link security (protocol/auth.ts, server.ts): what a stranger or a stuck peer may cost.
  /**
   * Past this many bytes pending on one link (queued + in ws + in the socket), the peer is not
   * reading: the link is dropped rather than buffering without end. Callers that honour
   * backpressure stop at sendHighWaterBytes; this catches the frames sent regardless (acks,
   * read replies, heartbeats) to a peer that stopped reading.
   */
  sendMaxPendingBytes: 128 * 1024 * 1024,
  /** TCP connections on one link port still in their handshake (HTTP upgrade, auth, hello), per remote address. */
  maxPendingLinksPerAddress: 16,
  /** TCP connections on one link port, in any state. */
  maxConnections: 1024,
  /** Refused links logged per second per server and error code; the rest are counted in the next line. */
  refusalLogsPerSecond: 5,
  /** Spent challenges remembered (against replay) until they expire after helloTimeoutMs. */
  maxUsedChallenges: 4096,
} as const;

/** The shape of `limits`, with numbers widened so tests and callers can override some. */
export type Limits = { readonly [K in keyof typeof limits]: number };

/** `limits` with some bounds overridden (tests use short timeouts, small high-water marks). */
export function resolveLimits(overrides?: Partial<Limits>): Limits {
  return overrides ? { ...limits, ...overrides } : limits;
}

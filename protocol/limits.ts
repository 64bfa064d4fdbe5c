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
  /** A dialed link that sends no welcome within this time is dropped and redialed. */
  helloTimeoutMs: 5000,
  /** Error frames answered per second per link; past it, bad frames are dropped and counted. */
  errorRepliesPerSecond: 20,
  /** Image chunk size for SYNC by image. */
  imageChunkBytes: 1024 * 1024,
} as const;

/** The wire layer: frames, codec, validation, links. Imports nothing else of ours. */
export * from './frames.js';
export { limits, resolveLimits, type Limits } from './limits.js';
export { ProtocolError } from './errors.js';
export { stderrLogger, type Logger } from './logger.js';
export { LamportClock } from './clock.js';
export { encodeBatch, decodeMessage, decodeBatch } from './codec.js';
export { validateBatch, validateFrame } from './validate.js';
export { Link, CloseCodes, type LinkCloseInfo, type LinkEvents, type LinkOptions, type LinkStats } from './link.js';
export { LinkServer, type LinkServerOptions, type ListenAddress } from './server.js';
export { AuthHeaders, ChallengeAuthority, CHALLENGE_PATH, MIN_SECRET_BYTES, RateLimitedLog, type LinkSecurity, type LinkTls } from './auth.js';
export { DialingLink, type DialingLinkEvents, type DialingLinkOptions, type DialFailure } from './dialer.js';

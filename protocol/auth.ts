/**
 * Cluster membership on every link: a shared secret and a mutual HMAC challenge, settled in the
 * HTTP upgrade, before a WebSocket exists. A peer that cannot prove it holds the secret never gets
 * a WebSocket, so it cannot send a single frame.
 *
 *   dialer                                                 server
 *   GET /.freebs/challenge  ─────────────────────────────►  mint ns (stateless, MACed, timestamped)
 *                           ◄─────────────────────────────  200 ns
 *   GET / Upgrade: websocket                                verify ns (ours, fresh, unused),
 *     x-freebs-challenge: ns, x-freebs-nonce: nc              clusterId, and
 *     x-freebs-cluster/-id/-role                              proof = HMAC(secret, client ‖ ns ‖ nc ‖ cluster ‖ id ‖ role)
 *     x-freebs-proof ───────────────────────────────────►    (timingSafeEqual); else 401/403
 *                           ◄─────────────────────────────  101, x-freebs-id: sid,
 *   verify the server's proof; else hang up unheard            x-freebs-proof: HMAC(secret, server ‖ ns ‖ nc ‖ cluster ‖ sid)
 *   hello (must match the authenticated id/role/cluster) ─►  welcome
 *
 * Both nonces are in both proofs, with a different label per direction, so neither proof can be
 * replayed or reflected; a challenge is accepted once and for limits.helloTimeoutMs only.
 *
 * What this does not do: protect frames after the handshake. On a network where someone can read
 * or rewrite traffic, add TLS (wss://), which the links support; the HMAC then still decides
 * membership.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import { ErrorCodes, type ErrorCode, type MemberId, type Role } from './frames.js';

/** Shortest secret accepted: 128 bits. `openssl rand -hex 32` makes a good one. */
export const MIN_SECRET_BYTES = 16;

/** Path of the challenge endpoint on every member's link port. */
export const CHALLENGE_PATH = '/.freebs/challenge';

/** Header names (lower case, as node presents them). */
export const AuthHeaders = {
  challenge: 'x-freebs-challenge',
  nonce: 'x-freebs-nonce',
  cluster: 'x-freebs-cluster',
  id: 'x-freebs-id',
  role: 'x-freebs-role',
  proof: 'x-freebs-proof',
  /** On a refusal (401/403/503): the error code, e.g. ERR_AUTH_FAILED. */
  error: 'x-freebs-error',
} as const;

/** How a link authenticates and encrypts. Everything optional: an empty object is a dev-only open link. */
export interface LinkSecurity {
  /** The cluster secret (HMAC key). Without it, links are unauthenticated: single-host development only. */
  secret?: Uint8Array;
  /** TLS for links. A server with cert and key listens as wss://; a dialer trusts ca (PEM) for wss:// peers. */
  tls?: LinkTls;
}

export interface LinkTls {
  /** PEM certificate chain of this member (servers). */
  cert?: Buffer | string;
  /** PEM private key of this member (servers). */
  key?: Buffer | string;
  /** PEM CA bundle that peers' certificates must chain to (dialers); the system's CAs when absent. */
  ca?: Buffer | string;
}

/** What the dialer claims, bound into its proof. */
export interface Claim {
  clusterId: string;
  id: MemberId;
  role: Role;
}

const NONCE_BYTES = 32;
const CHALLENGE_VERSION = 1;
const CHALLENGE_RANDOM_BYTES = 16;
const CHALLENGE_TAG_BYTES = 16;
/** version(1) ‖ issuedAtMs(6) ‖ random(16) ‖ tag(16) */
const CHALLENGE_BYTES = 1 + 6 + CHALLENGE_RANDOM_BYTES + CHALLENGE_TAG_BYTES;

const b64 = (bytes: Uint8Array): string => Buffer.from(bytes).toString('base64url');

/** base64url → bytes of exactly `length`, or null (any other input, including bad characters). */
export function fromB64(text: string | string[] | undefined, length: number): Buffer | null {
  if (typeof text !== 'string' || text.length !== Math.ceil((length * 4) / 3) || !/^[A-Za-z0-9_-]+$/.test(text)) return null;
  const bytes = Buffer.from(text, 'base64url');
  return bytes.length === length ? bytes : null;
}

/** HMAC-SHA256 over length-prefixed fields, so no two field lists share an encoding. */
function mac(key: Uint8Array, label: string, fields: (Uint8Array | string)[]): Buffer {
  const h = createHmac('sha256', key);
  for (const field of [label, ...fields]) {
    const bytes = typeof field === 'string' ? Buffer.from(field, 'utf8') : field;
    const length = Buffer.alloc(4);
    length.writeUInt32BE(bytes.length);
    h.update(length);
    h.update(bytes);
  }
  return h.digest();
}

/** Constant-time equality of a received proof with the expected one (lengths are public). */
export function sameProof(received: Uint8Array | null, expected: Buffer): boolean {
  return received !== null && received.length === expected.length && timingSafeEqual(received, expected);
}

/** The dialer's proof: it holds the secret, for this challenge, as this member of this cluster. */
export function clientProof(secret: Uint8Array, challenge: Uint8Array, nonce: Uint8Array, claim: Claim): Buffer {
  return mac(secret, 'freebs/1 client', [challenge, nonce, claim.clusterId, claim.id, claim.role]);
}

/** The server's proof, answering the dialer's nonce: it holds the secret too. */
export function serverProof(secret: Uint8Array, challenge: Uint8Array, nonce: Uint8Array, clusterId: string, serverId: MemberId): Buffer {
  return mac(secret, 'freebs/1 server', [challenge, nonce, clusterId, serverId]);
}

/** Header values are ASCII; ids and cluster names may not be. */
const headerText = (text: string): string => encodeURIComponent(text);
function fromHeaderText(value: string | string[] | undefined): string | null {
  if (typeof value !== 'string') return null;
  try {
    return decodeURIComponent(value);
  } catch {
    return null;
  }
}

/** The headers a dialer sends with its upgrade request. */
export function upgradeHeaders(secret: Uint8Array, challenge: Uint8Array, claim: Claim): { headers: Record<string, string>; nonce: Buffer } {
  const nonce = randomBytes(NONCE_BYTES);
  return {
    nonce,
    headers: {
      [AuthHeaders.challenge]: b64(challenge),
      [AuthHeaders.nonce]: b64(nonce),
      [AuthHeaders.cluster]: headerText(claim.clusterId),
      [AuthHeaders.id]: headerText(claim.id),
      [AuthHeaders.role]: claim.role,
      [AuthHeaders.proof]: b64(clientProof(secret, challenge, nonce, claim)),
    },
  };
}

/** The challenge as the dialer received it (body of GET CHALLENGE_PATH), or null if malformed. */
export function parseChallenge(text: string): Buffer | null {
  return fromB64(text.trim(), CHALLENGE_BYTES);
}

/** The dialer's check of the 101's headers. */
export function verifyServer(
  secret: Uint8Array,
  challenge: Uint8Array,
  nonce: Uint8Array,
  clusterId: string,
  headers: IncomingHttpHeaders,
): { ok: true; serverId: MemberId } | { ok: false; reason: string } {
  const serverId = fromHeaderText(headers[AuthHeaders.id]);
  const proof = fromB64(headers[AuthHeaders.proof], 32);
  if (serverId === null || proof === null) {
    return { ok: false, reason: 'the peer sent no proof of membership (does it run without a cluster secret?)' };
  }
  if (!sameProof(proof, serverProof(secret, challenge, nonce, clusterId, serverId))) {
    return { ok: false, reason: `the peer (${serverId}) could not prove it holds the cluster secret of ${JSON.stringify(clusterId)}` };
  }
  return { ok: true, serverId };
}

export type AuthOutcome =
  | { ok: true; claim: Claim; challenge: Buffer; nonce: Buffer }
  | { ok: false; status: 401 | 403; code: ErrorCode; reason: string; claimedId: string | null };

/**
 * The server side: mints challenges without keeping state (they carry their own time and MAC
 * under a key of this process), and remembers the challenges that were used, until they expire,
 * so a recorded upgrade request cannot be replayed. Only authenticated peers add to that memory,
 * so a stranger cannot grow it.
 */
export class ChallengeAuthority {
  readonly #secret: Uint8Array;
  readonly #clusterId: string;
  readonly #ttlMs: number;
  readonly #maxUsed: number;
  /** Per process: challenges do not outlive a restart. */
  readonly #mintKey = randomBytes(32);
  /** challenge (base64url) → expiry (ms); insertion order is expiry order. */
  readonly #used = new Map<string, number>();
  readonly #now: () => number;

  constructor(options: { secret: Uint8Array; clusterId: string; ttlMs: number; maxUsed: number; now?: () => number }) {
    if (options.secret.length < MIN_SECRET_BYTES) throw new RangeError(`cluster secret too short: ${options.secret.length} bytes, need ${MIN_SECRET_BYTES}`);
    this.#secret = options.secret;
    this.#clusterId = options.clusterId;
    this.#ttlMs = options.ttlMs;
    this.#maxUsed = options.maxUsed;
    this.#now = options.now ?? Date.now;
  }

  /** A fresh challenge, base64url. */
  mint(): string {
    const body = Buffer.alloc(1 + 6 + CHALLENGE_RANDOM_BYTES);
    body.writeUInt8(CHALLENGE_VERSION, 0);
    body.writeUIntBE(this.#now(), 1, 6);
    randomBytes(CHALLENGE_RANDOM_BYTES).copy(body, 7);
    const tag = createHmac('sha256', this.#mintKey).update(body).digest().subarray(0, CHALLENGE_TAG_BYTES);
    return b64(Buffer.concat([body, tag]));
  }

  /** Check an upgrade request's headers; on success the challenge is spent. */
  verify(headers: IncomingHttpHeaders): AuthOutcome {
    const claimedId = fromHeaderText(headers[AuthHeaders.id]);
    const refuse = (status: 401 | 403, code: ErrorCode, reason: string): AuthOutcome => ({ ok: false, status, code, reason, claimedId });
    const challengeText = headers[AuthHeaders.challenge];
    if (challengeText === undefined && headers[AuthHeaders.proof] === undefined) {
      return refuse(401, ErrorCodes.authRequired, 'this cluster requires a credential: give the member the cluster secret (--secret-file)');
    }
    const clusterId = fromHeaderText(headers[AuthHeaders.cluster]);
    const role = headers[AuthHeaders.role];
    const challenge = fromB64(challengeText, CHALLENGE_BYTES);
    const nonce = fromB64(headers[AuthHeaders.nonce], NONCE_BYTES);
    const proof = fromB64(headers[AuthHeaders.proof], 32);
    if (clusterId === null || claimedId === null || claimedId.length === 0 || challenge === null || nonce === null || proof === null) {
      return refuse(401, ErrorCodes.authFailed, 'malformed credential headers');
    }
    if (role !== 'driver' && role !== 'replica' && role !== 'controller') return refuse(401, ErrorCodes.authFailed, `unknown role ${JSON.stringify(role)}`);
    if (clusterId !== this.#clusterId) {
      return refuse(403, ErrorCodes.wrongCluster, `wrong cluster: this member is in ${JSON.stringify(this.#clusterId)}, the peer says ${JSON.stringify(clusterId)}`);
    }
    const body = challenge.subarray(0, 1 + 6 + CHALLENGE_RANDOM_BYTES);
    const tag = createHmac('sha256', this.#mintKey).update(body).digest().subarray(0, CHALLENGE_TAG_BYTES);
    if (challenge[0] !== CHALLENGE_VERSION || !timingSafeEqual(tag, challenge.subarray(body.length))) {
      return refuse(401, ErrorCodes.authFailed, 'unknown challenge (not issued by this process)');
    }
    const nowMs = this.#now();
    const ageMs = nowMs - challenge.readUIntBE(1, 6);
    if (ageMs < 0 || ageMs > this.#ttlMs) return refuse(401, ErrorCodes.authFailed, `challenge expired (${ageMs} ms old, valid for ${this.#ttlMs} ms)`);
    const claim: Claim = { clusterId, id: claimedId, role };
    if (!sameProof(proof, clientProof(this.#secret, challenge, nonce, claim))) {
      return refuse(401, ErrorCodes.authFailed, 'wrong proof: the peer does not hold this cluster\'s secret');
    }
    const key = b64(challenge);
    this.#forgetExpired(nowMs);
    if (this.#used.has(key)) return refuse(401, ErrorCodes.authFailed, 'challenge already used (a replayed request)');
    if (this.#used.size >= this.#maxUsed) this.#used.delete(this.#used.keys().next().value!);
    this.#used.set(key, nowMs + this.#ttlMs);
    return { ok: true, claim, challenge, nonce };
  }

  /** The 101's headers answering a verified request. */
  proofHeaders(challenge: Uint8Array, nonce: Uint8Array, serverId: MemberId): string[] {
    return [`${AuthHeaders.id}: ${headerText(serverId)}`, `${AuthHeaders.proof}: ${b64(serverProof(this.#secret, challenge, nonce, this.#clusterId, serverId))}`];
  }

  #forgetExpired(nowMs: number): void {
    for (const [key, expiresMs] of this.#used) {
      if (expiresMs > nowMs) break;
      this.#used.delete(key);
    }
  }
}

/**
 * Warnings and refusals a stranger can trigger, at most `perSecond` lines a second per kind (an
 * error code: a flood of one kind does not hide another); the next line logged of that kind says
 * how many were left out in between. Kinds are few and fixed, so the map stays small.
 */
export class RateLimitedLog {
  readonly #windows = new Map<string, { startMs: number; count: number; suppressed: number }>();

  constructor(private readonly perSecond: number, private readonly now: () => number = Date.now) {}

  /** Calls `log` with the suppressed count when within the rate for `kind`; otherwise counts it. */
  emit(kind: string, log: (suppressed: number) => void): void {
    const nowMs = this.now();
    let w = this.#windows.get(kind);
    if (w === undefined) this.#windows.set(kind, (w = { startMs: nowMs, count: 0, suppressed: 0 }));
    if (nowMs - w.startMs >= 1000) {
      w.startMs = nowMs;
      w.count = 0;
    }
    if (w.count >= this.perSecond) {
      w.suppressed++;
      return;
    }
    w.count++;
    const suppressed = w.suppressed;
    w.suppressed = 0;
    log(suppressed);
  }
}

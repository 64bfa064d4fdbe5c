import { ProtocolError } from './errors.js';
import { ErrorCodes, type Batch, type Frame } from './frames.js';
import { limits } from './limits.js';

/*
 * Hand-written checks of a decoded message, run on every frame (~100k/s): plain property reads
 * with static names (monomorphic, no per-call closures), messages built only on failure.
 * Unknown extra fields are ignored (a newer peer may add some); every field a frame type
 * declares is checked for type and bounds. Numbers that count or address anything must be safe
 * non-negative integers. Optional fields may be absent or undefined, never null.
 */

type Obj = Record<string, unknown>;

function isPlainObject(x: unknown): x is Obj {
  if (typeof x !== 'object' || x === null) return false;
  const proto = Object.getPrototypeOf(x) as unknown;
  return proto === Object.prototype || proto === null;
}

function isUint(x: unknown): x is number {
  return typeof x === 'number' && Number.isSafeInteger(x) && x >= 0;
}

function isId(x: unknown): x is string {
  return typeof x === 'string' && x.length > 0 && x.length <= limits.maxIdChars;
}

function isText(x: unknown): x is string {
  return typeof x === 'string' && x.length <= limits.maxTextChars;
}

function isRole(x: unknown): boolean {
  return x === 'driver' || x === 'replica' || x === 'controller';
}

function isBytes(x: unknown): x is Uint8Array {
  return x instanceof Uint8Array;
}

function show(x: unknown): string {
  if (x === undefined) return 'nothing';
  if (x === null) return 'null';
  if (typeof x === 'number' || typeof x === 'boolean' || typeof x === 'bigint') return `${typeof x} ${String(x)}`;
  if (typeof x === 'string') return x.length > 40 ? `a string of ${x.length} chars` : `string ${JSON.stringify(x)}`;
  if (x instanceof Uint8Array) return `${x.length} bytes`;
  if (Array.isArray(x)) return `an array of ${x.length}`;
  if (typeof x === 'object') {
    const name = (Object.getPrototypeOf(x) as { constructor?: { name?: string } } | null)?.constructor?.name;
    return name && name !== 'Object' ? `a ${name}` : 'an object';
  }
  return typeof x;
}

const EXPECT_UINT = 'a safe non-negative integer';
const EXPECT_ID = `a non-empty string of at most ${limits.maxIdChars} chars`;
const EXPECT_TEXT = `a string of at most ${limits.maxTextChars} chars`;
const EXPECT_ROLE = "'driver' | 'replica' | 'controller'";

function bad(where: string, field: string, expected: string, got: unknown): never {
  throw new ProtocolError(ErrorCodes.badFrame, `${where}.${field}: expected ${expected}, got ${show(got)}`);
}

function at(index: number, t: string): string {
  return `frames[${index}] (${t})`;
}

/** Validate a decoded message as a Batch (same object, now typed) or throw ERR_BAD_FRAME. */
export function validateBatch(x: unknown): Batch {
  if (!isPlainObject(x)) {
    throw new ProtocolError(ErrorCodes.badFrame, `message is not a batch: expected a map {from, lc, frames}, got ${show(x)}`);
  }
  if (!isId(x.from)) bad('batch', 'from', EXPECT_ID, x.from);
  if (!isUint(x.lc)) bad('batch', 'lc', EXPECT_UINT, x.lc);
  const frames = x.frames;
  if (!Array.isArray(frames)) bad('batch', 'frames', 'an array', frames);
  if (frames.length > limits.batchMaxFrames) bad('batch', 'frames', `at most ${limits.batchMaxFrames} frames`, frames);
  for (let i = 0; i < frames.length; i++) validateFrame(frames[i], i);
  return x as unknown as Batch;
}

/** Validate one frame (same object, now typed) or throw ERR_BAD_FRAME naming the field. */
export function validateFrame(f: unknown, index = 0): Frame {
  if (!isPlainObject(f)) {
    throw new ProtocolError(ErrorCodes.badFrame, `frames[${index}]: expected a map with a 't' field, got ${show(f)}`);
  }
  const t = f.t;
  switch (t) {
    case 'write':
      checkWrite(f, index);
      break;
    case 'ack':
      checkAck(f, index);
      break;
    case 'flush':
      if (!isUint(f.epoch)) bad(at(index, t), 'epoch', EXPECT_UINT, f.epoch);
      if (!isUint(f.v)) bad(at(index, t), 'v', EXPECT_UINT, f.v);
      break;
    case 'read':
      checkRead(f, index);
      break;
    case 'read-reply':
      checkReadReply(f, index);
      break;
    case 'heartbeat':
      checkHeartbeat(f, index);
      break;
    case 'hello':
      if (!isRole(f.role)) bad(at(index, t), 'role', EXPECT_ROLE, f.role);
      if (!isId(f.id)) bad(at(index, t), 'id', EXPECT_ID, f.id);
      if (!isUint(f.epoch)) bad(at(index, t), 'epoch', EXPECT_UINT, f.epoch);
      if (!isId(f.clusterId)) bad(at(index, t), 'clusterId', EXPECT_ID, f.clusterId);
      break;
    case 'welcome':
      if (!isRole(f.role)) bad(at(index, t), 'role', EXPECT_ROLE, f.role);
      if (!isId(f.id)) bad(at(index, t), 'id', EXPECT_ID, f.id);
      if (!isUint(f.epoch)) bad(at(index, t), 'epoch', EXPECT_UINT, f.epoch);
      if (!isUint(f.appliedVersion)) bad(at(index, t), 'appliedVersion', EXPECT_UINT, f.appliedVersion);
      break;
    case 'sync':
      if (!isUint(f.epoch)) bad(at(index, t), 'epoch', EXPECT_UINT, f.epoch);
      if (!isId(f.id)) bad(at(index, t), 'id', EXPECT_ID, f.id);
      if (!isUint(f.fromVersion)) bad(at(index, t), 'fromVersion', EXPECT_UINT, f.fromVersion);
      break;
    case 'sync-start':
      if (!isUint(f.epoch)) bad(at(index, t), 'epoch', EXPECT_UINT, f.epoch);
      if (f.mode !== 'log' && f.mode !== 'image') bad(at(index, t), 'mode', "'log' | 'image'", f.mode);
      if (!isUint(f.fromVersion)) bad(at(index, t), 'fromVersion', EXPECT_UINT, f.fromVersion);
      if (!isUint(f.imageVersion)) bad(at(index, t), 'imageVersion', EXPECT_UINT, f.imageVersion);
      if (!isUint(f.targetVersion)) bad(at(index, t), 'targetVersion', EXPECT_UINT, f.targetVersion);
      break;
    case 'image-chunk':
      if (!isUint(f.epoch)) bad(at(index, t), 'epoch', EXPECT_UINT, f.epoch);
      if (!isUint(f.offsetBytes)) bad(at(index, t), 'offsetBytes', EXPECT_UINT, f.offsetBytes);
      if (!isBytes(f.data) || f.data.length > limits.imageChunkBytes) {
        bad(at(index, t), 'data', `binary of at most limits.imageChunkBytes (${limits.imageChunkBytes}) bytes`, f.data);
      }
      break;
    case 'image-end':
      if (!isUint(f.epoch)) bad(at(index, t), 'epoch', EXPECT_UINT, f.epoch);
      if (!isUint(f.imageVersion)) bad(at(index, t), 'imageVersion', EXPECT_UINT, f.imageVersion);
      break;
    case 'config':
      checkConfig(f, index);
      break;
    case 'error':
      if (!isId(f.code)) bad(at(index, t), 'code', EXPECT_ID, f.code);
      if (!isText(f.message)) bad(at(index, t), 'message', EXPECT_TEXT, f.message);
      if (f.epoch !== undefined && !isUint(f.epoch)) bad(at(index, t), 'epoch', `absent or ${EXPECT_UINT}`, f.epoch);
      break;
    default:
      throw new ProtocolError(
        ErrorCodes.badFrame,
        typeof t === 'string' && t.length <= 40
          ? `frames[${index}].t: unknown frame type ${JSON.stringify(t)}`
          : `frames[${index}].t: expected a frame type string, got ${show(t)}`,
      );
  }
  return f as unknown as Frame;
}

function checkWrite(f: Obj, index: number): void {
  if (!isUint(f.epoch)) bad(at(index, 'write'), 'epoch', EXPECT_UINT, f.epoch);
  if (!isUint(f.v)) bad(at(index, 'write'), 'v', EXPECT_UINT, f.v);
  const kind = f.kind;
  if (kind !== 'write' && kind !== 'trim' && kind !== 'zero') bad(at(index, 'write'), 'kind', "'write' | 'trim' | 'zero'", kind);
  if (!isUint(f.offsetBytes)) bad(at(index, 'write'), 'offsetBytes', EXPECT_UINT, f.offsetBytes);
  const lengthBytes = f.lengthBytes;
  // Only data is bounded by maxIoBytes: a trim or zero of a whole disk is one small frame.
  if (!isUint(lengthBytes) || (kind === 'write' && lengthBytes > limits.maxIoBytes)) {
    bad(at(index, 'write'), 'lengthBytes', kind === 'write' ? `${EXPECT_UINT} ≤ limits.maxIoBytes (${limits.maxIoBytes})` : EXPECT_UINT, lengthBytes);
  }
  const data = f.data;
  if (kind === 'write') {
    if (!isBytes(data)) bad(at(index, 'write'), 'data', "binary (required for kind 'write')", data);
    if (data.length !== lengthBytes) {
      bad(at(index, 'write'), 'data', `lengthBytes (${lengthBytes}) bytes`, data);
    }
  } else if (data !== undefined) {
    bad(at(index, 'write'), 'data', `nothing for kind '${kind}'`, data);
  }
}

function checkAck(f: Obj, index: number): void {
  if (!isUint(f.epoch)) bad(at(index, 'ack'), 'epoch', EXPECT_UINT, f.epoch);
  if (!isId(f.id)) bad(at(index, 'ack'), 'id', EXPECT_ID, f.id);
  if (!isUint(f.appliedVersion)) bad(at(index, 'ack'), 'appliedVersion', EXPECT_UINT, f.appliedVersion);
  if (!isUint(f.durableVersion)) bad(at(index, 'ack'), 'durableVersion', EXPECT_UINT, f.durableVersion);
}

function checkRead(f: Obj, index: number): void {
  if (!isUint(f.epoch)) bad(at(index, 'read'), 'epoch', EXPECT_UINT, f.epoch);
  if (!isUint(f.r)) bad(at(index, 'read'), 'r', EXPECT_UINT, f.r);
  if (!isUint(f.offsetBytes)) bad(at(index, 'read'), 'offsetBytes', EXPECT_UINT, f.offsetBytes);
  if (!isUint(f.lengthBytes) || f.lengthBytes > limits.maxIoBytes) {
    bad(at(index, 'read'), 'lengthBytes', `${EXPECT_UINT} ≤ limits.maxIoBytes (${limits.maxIoBytes})`, f.lengthBytes);
  }
  if (!isUint(f.minVersion)) bad(at(index, 'read'), 'minVersion', EXPECT_UINT, f.minVersion);
}

function checkReadReply(f: Obj, index: number): void {
  if (!isUint(f.r)) bad(at(index, 'read-reply'), 'r', EXPECT_UINT, f.r);
  if (typeof f.ok !== 'boolean') bad(at(index, 'read-reply'), 'ok', 'a boolean', f.ok);
  if (!isUint(f.appliedVersion)) bad(at(index, 'read-reply'), 'appliedVersion', EXPECT_UINT, f.appliedVersion);
  const data = f.data;
  if (data !== undefined && (!isBytes(data) || data.length > limits.maxIoBytes)) {
    bad(at(index, 'read-reply'), 'data', `absent or binary of at most limits.maxIoBytes (${limits.maxIoBytes}) bytes`, data);
  }
  if (f.code !== undefined && !isId(f.code)) bad(at(index, 'read-reply'), 'code', `absent or ${EXPECT_ID}`, f.code);
  if (f.message !== undefined && !isText(f.message)) bad(at(index, 'read-reply'), 'message', `absent or ${EXPECT_TEXT}`, f.message);
}

function checkHeartbeat(f: Obj, index: number): void {
  if (!isId(f.id)) bad(at(index, 'heartbeat'), 'id', EXPECT_ID, f.id);
  if (!isRole(f.role)) bad(at(index, 'heartbeat'), 'role', EXPECT_ROLE, f.role);
  if (!isUint(f.epoch)) bad(at(index, 'heartbeat'), 'epoch', EXPECT_UINT, f.epoch);
  if (!isText(f.state)) bad(at(index, 'heartbeat'), 'state', EXPECT_TEXT, f.state);
  if (!isUint(f.appliedVersion)) bad(at(index, 'heartbeat'), 'appliedVersion', EXPECT_UINT, f.appliedVersion);
  if (!isUint(f.durableVersion)) bad(at(index, 'heartbeat'), 'durableVersion', EXPECT_UINT, f.durableVersion);
  const view = f.view;
  if (!isPlainObject(view)) bad(at(index, 'heartbeat'), 'view', 'a map of member id → ms', view);
  let entries = 0;
  for (const key in view) {
    if (++entries > limits.maxViewEntries) {
      bad(at(index, 'heartbeat'), 'view', `at most limits.maxViewEntries (${limits.maxViewEntries}) entries`, view);
    }
    if (key.length === 0 || key.length > limits.maxIdChars) bad(at(index, 'heartbeat'), 'view', `keys that are ${EXPECT_ID}`, key);
    const ms = view[key];
    if (typeof ms !== 'number' || !(ms >= 0) || ms === Infinity) {
      bad(at(index, 'heartbeat'), `view[${JSON.stringify(key)}]`, 'a finite non-negative number of ms', ms);
    }
  }
  if (f.io !== undefined) checkIoStats(f.io, index);
}

function checkIoStats(io: unknown, index: number): void {
  if (!isPlainObject(io)) bad(at(index, 'heartbeat'), 'io', 'absent or an object of I/O counters', io);
  for (const key of ['ops', 'readBytes', 'writeBytes', 'errors', 'windowOps'] as const) {
    if (!isUint(io[key])) bad(at(index, 'heartbeat'), `io.${key}`, EXPECT_UINT, io[key]);
  }
  for (const key of ['latencyMsP50', 'latencyMsP99'] as const) {
    const ms = io[key];
    if (typeof ms !== 'number' || !(ms >= 0) || ms === Infinity) bad(at(index, 'heartbeat'), `io.${key}`, 'a finite non-negative number of ms', ms);
  }
}

function checkConfig(f: Obj, index: number): void {
  if (!isUint(f.epoch)) bad(at(index, 'config'), 'epoch', EXPECT_UINT, f.epoch);
  const chain = f.chain;
  if (!Array.isArray(chain) || chain.length > limits.maxChainMembers) {
    bad(at(index, 'config'), 'chain', `an array of at most limits.maxChainMembers (${limits.maxChainMembers})`, chain);
  }
  for (let j = 0; j < chain.length; j++) {
    const m = chain[j] as unknown;
    if (!isPlainObject(m)) bad(at(index, 'config'), `chain[${j}]`, 'a map {id, url}', m);
    if (!isId(m.id)) bad(at(index, 'config'), `chain[${j}].id`, EXPECT_ID, m.id);
    if (!isText(m.url)) bad(at(index, 'config'), `chain[${j}].url`, EXPECT_TEXT, m.url);
  }
  // Empty while no driver holds the volume.
  if (typeof f.driverId !== 'string' || f.driverId.length > limits.maxIdChars) {
    bad(at(index, 'config'), 'driverId', `a string of at most ${limits.maxIdChars} chars ('' = no driver)`, f.driverId);
  }
  const volume = f.volume;
  if (!isPlainObject(volume)) bad(at(index, 'config'), 'volume', 'a map {name, sizeBytes}', volume);
  if (!isText(volume.name)) bad(at(index, 'config'), 'volume.name', EXPECT_TEXT, volume.name);
  if (!isUint(volume.sizeBytes)) bad(at(index, 'config'), 'volume.sizeBytes', EXPECT_UINT, volume.sizeBytes);
}

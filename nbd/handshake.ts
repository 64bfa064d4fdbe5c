/**
 * Fixed newstyle handshake: the greeting, the client flags and option haggling, up to the moment
 * a client enters transmission with an export. Driven by bytes: `step()` consumes what the reader
 * holds and says whether it needs more, the connection should close, or transmission begins.
 * It never touches the socket; replies go through `send`.
 */
import type { BlockBackend, ExportCatalog } from './backend.js';
import {
  CLIENT_FLAGS_BYTES,
  EXPORT_NAME_PADDING_BYTES,
  KNOWN_CLIENT_FLAGS,
  MAX_OPTION_DATA_BYTES,
  MAX_OPTIONS_PER_CONNECTION,
  MAX_STRING_BYTES,
  NBD_FLAG_C_FIXED_NEWSTYLE,
  NBD_FLAG_C_NO_ZEROES,
  NBD_FLAG_CAN_MULTI_CONN,
  NBD_FLAG_FIXED_NEWSTYLE,
  NBD_FLAG_HAS_FLAGS,
  NBD_FLAG_NO_ZEROES,
  NBD_FLAG_READ_ONLY,
  NBD_FLAG_SEND_CACHE,
  NBD_FLAG_SEND_DF,
  NBD_FLAG_SEND_FLUSH,
  NBD_FLAG_SEND_FUA,
  NBD_FLAG_SEND_TRIM,
  NBD_FLAG_SEND_WRITE_ZEROES,
  NBD_INFO_BLOCK_SIZE,
  NBD_INFO_DESCRIPTION,
  NBD_INFO_EXPORT,
  NBD_INFO_NAME,
  NBD_INIT_MAGIC,
  NBD_OPT_ABORT,
  NBD_OPT_EXPORT_NAME,
  NBD_OPT_GO,
  NBD_OPT_INFO,
  NBD_OPT_LIST,
  NBD_OPT_STARTTLS,
  NBD_OPT_STRUCTURED_REPLY,
  NBD_OPTS_MAGIC,
  NBD_OPTS_MAGIC_HI,
  NBD_OPTS_MAGIC_LO,
  NBD_REP_ACK,
  NBD_REP_ERR_INVALID,
  NBD_REP_ERR_SHUTDOWN,
  NBD_REP_ERR_TLS_REQD,
  NBD_REP_ERR_UNKNOWN,
  NBD_REP_ERR_UNSUP,
  NBD_REP_INFO,
  NBD_REP_SERVER,
  OPTION_HEADER_BYTES,
} from './constants.js';
import type { ChunkReader } from './chunk-reader.js';
import { NbdError, type NbdErrorCode } from './errors.js';
import { optionError, optionReply } from './replies.js';

/** What a connection needs to know to serve an export after the handshake. */
export interface NegotiatedExport {
  name: string;
  backend: BlockBackend;
  structuredReplies: boolean;
  transmissionFlags: number;
  /** Alignment required of offsets and lengths (1 = none). */
  minimumBlockSizeBytes: number;
}

export type HandshakeStep =
  | { kind: 'more' }
  | { kind: 'transmission'; negotiated: NegotiatedExport }
  /** End the connection after flushing replies; `error` when the client misbehaved. */
  | { kind: 'close'; reason: string; error?: NbdError }
  /** Send `reply` in the clear, then run TLS on the socket and go on haggling through it. */
  | { kind: 'starttls'; reply: Buffer };

export interface HandshakeOptions {
  catalog: ExportCatalog;
  maxRequestBytes: number;
  send: (buffer: Buffer) => void;
  /** True once the server is closing: options are refused with NBD_REP_ERR_SHUTDOWN. */
  isShuttingDown: () => boolean;
  /**
   * TLS the server offers (NBD_OPT_STARTTLS): absent, STARTTLS is unsupported; `required`, every
   * option but STARTTLS and ABORT is refused with NBD_REP_ERR_TLS_REQD until TLS is up.
   */
  tls?: { required: boolean };
}

/** The server's first message: NBDMAGIC, IHAVEOPT, handshake flags. */
export function greeting(): Buffer {
  const out = Buffer.allocUnsafe(18);
  out.writeBigUInt64BE(NBD_INIT_MAGIC, 0);
  out.writeBigUInt64BE(NBD_OPTS_MAGIC, 8);
  out.writeUInt16BE(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES, 16);
  return out;
}

/** Transmission flags, truthful for this backend and this negotiation. */
export function transmissionFlagsFor(backend: BlockBackend, structuredReplies: boolean): number {
  let flags = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_CACHE;
  if (backend.readOnly) flags |= NBD_FLAG_READ_ONLY;
  else flags |= NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES;
  if (backend.canMultiConn) flags |= NBD_FLAG_CAN_MULTI_CONN;
  // Every read is answered with a single content chunk, so "don't fragment" costs nothing.
  if (structuredReplies) flags |= NBD_FLAG_SEND_DF;
  return flags;
}

/** Block size constraints advertised in NBD_INFO_BLOCK_SIZE: [minimum, preferred, maximum]. */
export function blockSizesFor(backend: BlockBackend, maxRequestBytes: number): [number, number, number] {
  const minimum = backend.minimumBlockSizeBytes ?? 1;
  const preferred = Math.max(backend.preferredBlockSizeBytes ?? 4096, minimum, 512);
  // The maximum must be a multiple of the minimum.
  const maximum = Math.floor(maxRequestBytes / minimum) * minimum;
  return [minimum, preferred, maximum];
}

type State = 'clientFlags' | 'optionHeader' | 'optionData' | 'done';

export class Handshake {
  private state: State = 'clientFlags';
  private fixedNewstyle = false;
  private noZeroes = false;
  private structuredReplies = false;
  private option = 0;
  private optionDataBytes = 0;
  private optionsSeen = 0;
  private tlsUp = false;

  constructor(private readonly options: HandshakeOptions) {}

  /** The connection runs TLS now: haggling starts over (what was agreed in the clear is void). */
  tlsStarted(): void {
    this.tlsUp = true;
    this.structuredReplies = false;
  }

  /** Consume what `reader` holds; stop at the first step that needs more bytes or ends haggling. */
  step(reader: ChunkReader): HandshakeStep {
    for (;;) {
      switch (this.state) {
        case 'clientFlags': {
          if (reader.length < CLIENT_FLAGS_BYTES) return { kind: 'more' };
          const flags = reader.take(CLIENT_FLAGS_BYTES).readUInt32BE(0);
          if ((flags & ~KNOWN_CLIENT_FLAGS) !== 0) {
            return this.close(`unknown client flags 0x${flags.toString(16)}`, 'ERR_NBD_HANDSHAKE');
          }
          this.fixedNewstyle = (flags & NBD_FLAG_C_FIXED_NEWSTYLE) !== 0;
          this.noZeroes = (flags & NBD_FLAG_C_NO_ZEROES) !== 0;
          this.state = 'optionHeader';
          break;
        }
        case 'optionHeader': {
          if (reader.length < OPTION_HEADER_BYTES) return { kind: 'more' };
          const header = reader.take(OPTION_HEADER_BYTES);
          if (header.readUInt32BE(0) !== NBD_OPTS_MAGIC_HI || header.readUInt32BE(4) !== NBD_OPTS_MAGIC_LO) {
            return this.close('bad option magic', 'ERR_NBD_BAD_MAGIC');
          }
          this.option = header.readUInt32BE(8);
          this.optionDataBytes = header.readUInt32BE(12);
          if (++this.optionsSeen > MAX_OPTIONS_PER_CONNECTION) return this.close('too many options', 'ERR_NBD_HANDSHAKE');
          if (this.optionDataBytes > MAX_OPTION_DATA_BYTES) {
            return this.close(`option ${this.option} data of ${this.optionDataBytes} bytes exceeds the limit`, 'ERR_NBD_TOO_LARGE');
          }
          this.state = 'optionData';
          break;
        }
        case 'optionData': {
          if (reader.length < this.optionDataBytes) return { kind: 'more' };
          const data = reader.take(this.optionDataBytes);
          this.state = 'optionHeader';
          const result = this.handleOption(this.option, data);
          // After STARTTLS haggling goes on (through TLS); anything else ends it.
          if (result?.kind === 'starttls') return result;
          if (result) {
            this.state = 'done';
            return result;
          }
          break;
        }
        case 'done':
          return { kind: 'more' };
      }
    }
  }

  /** End haggling; with a code when it is the client's fault. */
  private close(reason: string, code?: NbdErrorCode): HandshakeStep {
    this.state = 'done';
    return { kind: 'close', reason, error: code ? new NbdError(code, reason) : undefined };
  }

  /** Reply to one option; a step result when haggling ends, undefined to keep going. */
  private handleOption(option: number, data: Buffer): HandshakeStep | undefined {
    const { send, tls } = this.options;
    const tlsMissing = tls?.required === true && !this.tlsUp;
    // NBD_OPT_EXPORT_NAME cannot be refused with an error: without the required TLS, hang up.
    if (option === NBD_OPT_EXPORT_NAME && tlsMissing) return this.close('NBD_OPT_EXPORT_NAME before the required STARTTLS', 'ERR_NBD_TLS_REQUIRED');
    if (option === NBD_OPT_EXPORT_NAME) return this.exportName(data);
    // Without fixed newstyle a server has no way to answer other options: it must hang up.
    if (!this.fixedNewstyle) return this.close(`option ${option} without fixed newstyle`, 'ERR_NBD_HANDSHAKE');
    if (option === NBD_OPT_ABORT) {
      send(optionReply(option, NBD_REP_ACK));
      return this.close('client aborted the handshake');
    }
    if (this.options.isShuttingDown()) {
      send(optionError(option, NBD_REP_ERR_SHUTDOWN, 'server is shutting down'));
      return undefined;
    }
    if (option === NBD_OPT_STARTTLS && tls) return this.startTls(data);
    if (tlsMissing) {
      send(optionError(option, NBD_REP_ERR_TLS_REQD, 'this server requires TLS: send NBD_OPT_STARTTLS first'));
      return undefined;
    }
    switch (option) {
      case NBD_OPT_LIST:
        if (data.length !== 0) send(optionError(option, NBD_REP_ERR_INVALID, 'NBD_OPT_LIST takes no data'));
        else this.list();
        return undefined;
      case NBD_OPT_STRUCTURED_REPLY:
        if (data.length !== 0) {
          send(optionError(option, NBD_REP_ERR_INVALID, 'NBD_OPT_STRUCTURED_REPLY takes no data'));
        } else {
          this.structuredReplies = true;
          send(optionReply(option, NBD_REP_ACK));
        }
        return undefined;
      case NBD_OPT_INFO:
      case NBD_OPT_GO:
        return this.infoOrGo(option, data);
      default:
        // Meta contexts, extended headers, anything newer (and STARTTLS without certificates): not offered.
        send(optionError(option, NBD_REP_ERR_UNSUP, `option ${option} is not supported`));
        return undefined;
    }
  }

  private startTls(data: Buffer): HandshakeStep | undefined {
    const { send } = this.options;
    if (data.length !== 0) send(optionError(NBD_OPT_STARTTLS, NBD_REP_ERR_INVALID, 'NBD_OPT_STARTTLS takes no data'));
    else if (this.tlsUp) send(optionError(NBD_OPT_STARTTLS, NBD_REP_ERR_INVALID, 'TLS is already running'));
    else return { kind: 'starttls', reply: optionReply(NBD_OPT_STARTTLS, NBD_REP_ACK) };
    return undefined;
  }

  private list(): void {
    const { send, catalog } = this.options;
    for (const entry of catalog.list()) {
      const name = Buffer.from(entry.name, 'utf8');
      const description = Buffer.from(entry.description ?? '', 'utf8');
      const data = Buffer.allocUnsafe(4 + name.length + description.length);
      data.writeUInt32BE(name.length, 0);
      name.copy(data, 4);
      description.copy(data, 4 + name.length);
      send(optionReply(NBD_OPT_LIST, NBD_REP_SERVER, data));
    }
    send(optionReply(NBD_OPT_LIST, NBD_REP_ACK));
  }

  private exportName(data: Buffer): HandshakeStep {
    if (this.options.isShuttingDown()) return this.close('server is shutting down');
    const name = data.toString('utf8');
    const backend = data.length <= MAX_STRING_BYTES ? this.options.catalog.get(name) : undefined;
    // NBD_OPT_EXPORT_NAME cannot be answered with an error: the only refusal is hanging up.
    if (!backend) return this.close(`unknown export ${JSON.stringify(name.slice(0, 64))}`, 'ERR_NBD_UNKNOWN_EXPORT');
    const negotiated = this.negotiated(name, backend);
    const out = Buffer.alloc(10 + (this.noZeroes ? 0 : EXPORT_NAME_PADDING_BYTES));
    writeUInt64(out, backend.sizeBytes, 0);
    out.writeUInt16BE(negotiated.transmissionFlags, 8);
    this.options.send(out);
    return { kind: 'transmission', negotiated };
  }

  private infoOrGo(option: number, data: Buffer): HandshakeStep | undefined {
    const { send, catalog, maxRequestBytes } = this.options;
    const parsed = parseInfoRequest(data);
    if (typeof parsed === 'string') {
      send(optionError(option, NBD_REP_ERR_INVALID, parsed));
      return undefined;
    }
    const backend = catalog.get(parsed.name);
    if (!backend) {
      send(optionError(option, NBD_REP_ERR_UNKNOWN, `unknown export ${JSON.stringify(parsed.name.slice(0, 64))}`));
      return undefined;
    }
    const negotiated = this.negotiated(parsed.name, backend);

    const exportInfo = Buffer.allocUnsafe(12);
    exportInfo.writeUInt16BE(NBD_INFO_EXPORT, 0);
    writeUInt64(exportInfo, backend.sizeBytes, 2);
    exportInfo.writeUInt16BE(negotiated.transmissionFlags, 10);
    send(optionReply(option, NBD_REP_INFO, exportInfo));

    // Sent whether asked or not (the spec allows unrequested info): clients that ignore it lose nothing.
    const [minimum, preferred, maximum] = blockSizesFor(backend, maxRequestBytes);
    const blockInfo = Buffer.allocUnsafe(14);
    blockInfo.writeUInt16BE(NBD_INFO_BLOCK_SIZE, 0);
    blockInfo.writeUInt32BE(minimum, 2);
    blockInfo.writeUInt32BE(preferred, 6);
    blockInfo.writeUInt32BE(maximum, 10);
    send(optionReply(option, NBD_REP_INFO, blockInfo));

    if (parsed.infos.includes(NBD_INFO_NAME)) send(optionReply(option, NBD_REP_INFO, stringInfo(NBD_INFO_NAME, parsed.name)));
    if (parsed.infos.includes(NBD_INFO_DESCRIPTION)) {
      const description = catalog.list().find((e) => e.name === parsed.name)?.description;
      if (description) send(optionReply(option, NBD_REP_INFO, stringInfo(NBD_INFO_DESCRIPTION, description)));
    }
    send(optionReply(option, NBD_REP_ACK));
    return option === NBD_OPT_GO ? { kind: 'transmission', negotiated } : undefined;
  }

  private negotiated(name: string, backend: BlockBackend): NegotiatedExport {
    return {
      name,
      backend,
      structuredReplies: this.structuredReplies,
      transmissionFlags: transmissionFlagsFor(backend, this.structuredReplies),
      minimumBlockSizeBytes: backend.minimumBlockSizeBytes ?? 1,
    };
  }
}

/** NBD_OPT_INFO / NBD_OPT_GO data: u32 name length, name, u16 count, count × u16 info types. */
export function parseInfoRequest(data: Buffer): { name: string; infos: number[] } | string {
  if (data.length < 6) return 'option data too short';
  const nameBytes = data.readUInt32BE(0);
  if (nameBytes > MAX_STRING_BYTES) return 'export name too long';
  if (4 + nameBytes + 2 > data.length) return 'export name length exceeds option data';
  const count = data.readUInt16BE(4 + nameBytes);
  if (data.length !== 4 + nameBytes + 2 + 2 * count) return 'information request count does not match option length';
  const infos: number[] = [];
  for (let i = 0; i < count; i++) infos.push(data.readUInt16BE(4 + nameBytes + 2 + 2 * i));
  return { name: data.toString('utf8', 4, 4 + nameBytes), infos };
}

function stringInfo(type: number, text: string): Buffer {
  const bytes = Buffer.from(text.slice(0, MAX_STRING_BYTES), 'utf8').subarray(0, MAX_STRING_BYTES);
  const out = Buffer.allocUnsafe(2 + bytes.length);
  out.writeUInt16BE(type, 0);
  bytes.copy(out, 2);
  return out;
}

/** Sizes are JS numbers (exact to 2^53); written as u64 without BigInt. */
function writeUInt64(out: Buffer, value: number, at: number): void {
  out.writeUInt32BE(Math.floor(value / 0x1_0000_0000), at);
  out.writeUInt32BE(value >>> 0, at + 4);
}

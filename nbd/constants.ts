/**
 * NBD wire constants (doc/proto.md of NetworkBlockDevice/nbd) and this server's limits.
 * Every bound the server enforces is named here, so they can be read and tuned in one place.
 */

// ---- Magics -------------------------------------------------------------------------------
/** 'NBDMAGIC' */
export const NBD_INIT_MAGIC = 0x4e42444d41474943n;
/** 'IHAVEOPT': the newstyle server magic and the prefix of every client option. */
export const NBD_OPTS_MAGIC = 0x49484156454f5054n;
export const NBD_OPTS_MAGIC_HI = 0x49484156;
export const NBD_OPTS_MAGIC_LO = 0x454f5054;
export const NBD_REP_MAGIC = 0x0003e889045565a9n;
export const NBD_REQUEST_MAGIC = 0x25609513;
export const NBD_SIMPLE_REPLY_MAGIC = 0x67446698;
export const NBD_STRUCTURED_REPLY_MAGIC = 0x668e33ef;

// ---- Handshake flags (server, 16 bits) and client flags (32 bits) -------------------------
export const NBD_FLAG_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_NO_ZEROES = 1 << 1;
export const NBD_FLAG_C_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_C_NO_ZEROES = 1 << 1;
export const KNOWN_CLIENT_FLAGS = NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES;

// ---- Transmission flags (16 bits) ----------------------------------------------------------
export const NBD_FLAG_HAS_FLAGS = 1 << 0;
export const NBD_FLAG_READ_ONLY = 1 << 1;
export const NBD_FLAG_SEND_FLUSH = 1 << 2;
export const NBD_FLAG_SEND_FUA = 1 << 3;
export const NBD_FLAG_ROTATIONAL = 1 << 4;
export const NBD_FLAG_SEND_TRIM = 1 << 5;
export const NBD_FLAG_SEND_WRITE_ZEROES = 1 << 6;
export const NBD_FLAG_SEND_DF = 1 << 7;
export const NBD_FLAG_CAN_MULTI_CONN = 1 << 8;
export const NBD_FLAG_SEND_RESIZE = 1 << 9;
export const NBD_FLAG_SEND_CACHE = 1 << 10;
export const NBD_FLAG_SEND_FAST_ZERO = 1 << 11;

// ---- Options -----------------------------------------------------------------------------
export const NBD_OPT_EXPORT_NAME = 1;
export const NBD_OPT_ABORT = 2;
export const NBD_OPT_LIST = 3;
export const NBD_OPT_STARTTLS = 5;
export const NBD_OPT_INFO = 6;
export const NBD_OPT_GO = 7;
export const NBD_OPT_STRUCTURED_REPLY = 8;
export const NBD_OPT_LIST_META_CONTEXT = 9;
export const NBD_OPT_SET_META_CONTEXT = 10;
export const NBD_OPT_EXTENDED_HEADERS = 11;

// ---- Option replies ------------------------------------------------------------------------
export const NBD_REP_ACK = 1;
export const NBD_REP_SERVER = 2;
export const NBD_REP_INFO = 3;
export const NBD_REP_META_CONTEXT = 4;
const REP_ERR = 0x80000000;
export const NBD_REP_ERR_UNSUP = REP_ERR + 1;
export const NBD_REP_ERR_POLICY = REP_ERR + 2;
export const NBD_REP_ERR_INVALID = REP_ERR + 3;
export const NBD_REP_ERR_PLATFORM = REP_ERR + 4;
export const NBD_REP_ERR_TLS_REQD = REP_ERR + 5;
export const NBD_REP_ERR_UNKNOWN = REP_ERR + 6;
export const NBD_REP_ERR_SHUTDOWN = REP_ERR + 7;
export const NBD_REP_ERR_BLOCK_SIZE_REQD = REP_ERR + 8;
export const NBD_REP_ERR_TOO_BIG = REP_ERR + 9;

// ---- NBD_REP_INFO types --------------------------------------------------------------------
export const NBD_INFO_EXPORT = 0;
export const NBD_INFO_NAME = 1;
export const NBD_INFO_DESCRIPTION = 2;
export const NBD_INFO_BLOCK_SIZE = 3;

// ---- Commands and command flags ------------------------------------------------------------
export const NBD_CMD_READ = 0;
export const NBD_CMD_WRITE = 1;
export const NBD_CMD_DISC = 2;
export const NBD_CMD_FLUSH = 3;
export const NBD_CMD_TRIM = 4;
export const NBD_CMD_CACHE = 5;
export const NBD_CMD_WRITE_ZEROES = 6;
export const NBD_CMD_BLOCK_STATUS = 7;

export const NBD_CMD_FLAG_FUA = 1 << 0;
export const NBD_CMD_FLAG_NO_HOLE = 1 << 1;
export const NBD_CMD_FLAG_DF = 1 << 2;
export const NBD_CMD_FLAG_REQ_ONE = 1 << 3;
export const NBD_CMD_FLAG_FAST_ZERO = 1 << 4;

export const COMMAND_NAMES: Readonly<Record<number, string>> = {
  [NBD_CMD_READ]: 'read',
  [NBD_CMD_WRITE]: 'write',
  [NBD_CMD_DISC]: 'disc',
  [NBD_CMD_FLUSH]: 'flush',
  [NBD_CMD_TRIM]: 'trim',
  [NBD_CMD_CACHE]: 'cache',
  [NBD_CMD_WRITE_ZEROES]: 'write_zeroes',
  [NBD_CMD_BLOCK_STATUS]: 'block_status',
};

// ---- Structured replies --------------------------------------------------------------------
export const NBD_REPLY_FLAG_DONE = 1 << 0;
export const NBD_REPLY_TYPE_NONE = 0;
export const NBD_REPLY_TYPE_OFFSET_DATA = 1;
export const NBD_REPLY_TYPE_OFFSET_HOLE = 2;
export const NBD_REPLY_TYPE_BLOCK_STATUS = 5;
export const NBD_REPLY_TYPE_ERROR = (1 << 15) + 1;
export const NBD_REPLY_TYPE_ERROR_OFFSET = (1 << 15) + 2;

// ---- Errnos on the wire (fixed by the spec, not the host's errno values) -------------------
export const NBD_EPERM = 1;
export const NBD_EIO = 5;
export const NBD_ENOMEM = 12;
export const NBD_EINVAL = 22;
export const NBD_ENOSPC = 28;
export const NBD_EOVERFLOW = 75;
export const NBD_ENOTSUP = 95;
export const NBD_ESHUTDOWN = 108;

// ---- Sizes of fixed wire structures --------------------------------------------------------
export const REQUEST_HEADER_BYTES = 28;
export const SIMPLE_REPLY_HEADER_BYTES = 16;
export const STRUCTURED_REPLY_HEADER_BYTES = 20;
export const OPTION_HEADER_BYTES = 16;
export const OPTION_REPLY_HEADER_BYTES = 20;
/** Client flags, sent once after the server's greeting. */
export const CLIENT_FLAGS_BYTES = 4;
/** Zero padding after an NBD_OPT_EXPORT_NAME reply, unless NO_ZEROES was negotiated. */
export const EXPORT_NAME_PADDING_BYTES = 124;

// ---- Limits of this server -----------------------------------------------------------------
/**
 * Largest READ/WRITE/CACHE length accepted, and the maximum advertised in NBD_INFO_BLOCK_SIZE.
 * The spec asks servers not to treat anything under 2^25 as a denial of service.
 */
export const DEFAULT_MAX_REQUEST_BYTES = 32 * 1024 * 1024;
/** Requests of one connection handed to the backend and not yet replied to; beyond it, reading pauses. */
export const MAX_IN_FLIGHT_REQUESTS = 256;
/** Write payloads plus read lengths held by in-flight requests of one connection; beyond it, reading pauses. */
export const MAX_IN_FLIGHT_BYTES = 128 * 1024 * 1024;
/** Reply bytes queued on one connection (ours + the socket's); beyond it, reading pauses until drain. */
export const MAX_QUEUED_REPLY_BYTES = 64 * 1024 * 1024;
/**
 * Largest per-connection buffer reused for write payloads that straddle socket chunks (only
 * with a backend that copies write data); larger writes get a buffer of their own.
 */
export const MAX_WRITE_SCRATCH_BYTES = 8 * 1024 * 1024;
/** Reads up to this long get a buffer from the server's read pool (backends with readInto). */
export const MAX_POOLED_READ_BYTES = 4 * 1024 * 1024;
/** Free read buffers a server keeps for reuse, across all its connections. */
export const READ_POOL_FREE_BYTES = 32 * 1024 * 1024;
/** Option data larger than this is a hostile client: it is disconnected rather than skipped. */
export const MAX_OPTION_DATA_BYTES = 64 * 1024;
/** Strings on the wire (export names, descriptions): the spec's hard limit. */
export const MAX_STRING_BYTES = 4096;
/** Options accepted on one connection before it is judged abusive and dropped. */
export const MAX_OPTIONS_PER_CONNECTION = 1024;
/** Concurrent client connections per server; beyond it, new connections are refused (closed at accept). */
export const DEFAULT_MAX_CONNECTIONS = 1024;
/** A client must reach transmission within this time. */
export const HANDSHAKE_TIMEOUT_MS = 30_000;
/** close(): in-flight requests get this long to finish before their connections are destroyed. */
export const CLOSE_GRACE_MS = 5_000;
/** Per-connection log rate limit: at most this many warnings per window, then one summary line. */
export const LOG_BURST_PER_WINDOW = 10;
export const LOG_WINDOW_MS = 10_000;

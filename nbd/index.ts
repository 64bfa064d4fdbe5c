/** Public surface of the NBD server. */
export type { BlockBackend, ExportCatalog } from './backend.js';
export { StaticCatalog, singleExport, type ExportEntry } from './catalog.js';
export type { ConnectionInfo, DisconnectInfo } from './connection.js';
export * as nbdConstants from './constants.js';
export { describeError, errnoForError, NbdError, type NbdErrorCode } from './errors.js';
export { FileBackend, type FileBackendOptions } from './file-backend.js';
export { type NbdLogger, silentLogger } from './log.js';
export type { NbdMetrics } from './metrics.js';
export { NbdServer, type NbdServerEvents, type NbdServerOptions } from './server.js';

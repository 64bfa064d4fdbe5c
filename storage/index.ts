export { Lsvd } from './lsvd.js';
export type { LsvdOptions, ReadOptions, SnapshotInfo, LsvdStats, LsvdImage, ImageSink } from './lsvd.js';
export type { LsvdRecord, RecordKind } from './record.js';
export type { OpenReport } from './recovery.js';
export type { GcReport } from './gc.js';
export { ExtentMap } from './extent-map.js';
export * from './errors.js';
export { DiskFaults, type DiskDelays } from './disk-faults.js';

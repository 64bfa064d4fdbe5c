/**
 * Opening a store: newest valid checkpoint, then replay of the log after it.
 *
 * What recovery decides, and why:
 * - A corrupt checkpoint (bad crc, torn) is skipped with a warning; the previous one (or a
 *   full replay from L1) takes over, and the unusable file is deleted once the open
 *   succeeds. A valid checkpoint naming a missing segment is ERR_CORRUPT: data it maps is
 *   gone, and guessing would serve wrong bytes.
 * - A bad record at the end of the log (torn write, short read, bad crc, bad magic) is
 *   cut off (truncated) and reported: it was never acknowledged as durable.
 * - A bad record followed by valid records is damage in the middle of the log: open
 *   refuses with ERR_CORRUPT naming segment and position, unless `repairCorruptLog` is
 *   set, which truncates there and drops everything after (explicit data loss, reported).
 * - A bad segment header is a torn segment creation (deleted) only when neither that
 *   segment nor a later one holds a valid record; otherwise it is damage as above, and
 *   `repairCorruptLog` rewrites the header (it names only the segment) and keeps the records.
 * - Files are removed newest first, so a crash during recovery never leaves a numbering gap.
 * - Log segments after the checkpoint must be numbered without gaps (ERR_CORRUPT).
 * - GC output not referenced by the chosen checkpoint is an interrupted GC: deleted.
 * - A log segment may be a recycled file (storage/recycled-segments.ts) with records of its
 *   old life after the new ones. Those are all older than the segment's first record, so a
 *   valid record at or below the version replayed so far is where the log ends (cut like a
 *   torn tail), and only records newer than that count as "valid records after the damage".
 *   Pooled recycled files (R…) are deleted.
 */
import type { Logger } from 'pino';
import { readdir, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { listCheckpoints, readCheckpoint, checkpointFileName, type CheckpointData } from './checkpoint.js';
import { decodeHeader, parseRecord, readU64, RECORD_HEADER_BYTES, RECORD_MAGIC, type RecordHeader } from './record.js';
import { checkSegmentHeader, encodeSegmentHeader, isRecycledSegmentHeader, fsyncDir, parseSegmentFileName, SEGMENT_HEADER_BYTES, SegmentFile, segmentFileName } from './segment.js';
import { CorruptError, wrapFsError } from './errors.js';
import { isRecycledFileName } from './recycled-segments.js';

export interface OpenReport {
  /** True when this open created the volume. */
  created: boolean;
  /** Checkpoint file used, or null for a full replay. */
  checkpointUsed: string | null;
  checkpointVersion: number;
  recoveredVersion: number;
  replayedRecords: number;
  replayedBytes: number;
  /** Bytes cut from the log tail (torn or corrupt records). */
  truncatedBytes: number;
  /** Files deleted: torn tail segments, interrupted GC output, temp files. */
  removedFiles: string[];
  warnings: string[];
  durationMs: number;
}

export interface ReplaySink {
  loadCheckpoint(data: CheckpointData): void;
  apply(header: RecordHeader, segment: SegmentFile, dataPositionBytes: number): void;
}

export interface RecoveryOptions {
  repairCorruptLog: boolean;
  logger?: Logger;
}

export interface Recovered {
  segments: Map<number, SegmentFile>;
  active: SegmentFile;
  version: number;
  checkpoint: CheckpointData | undefined;
  report: OpenReport;
}

export async function recover(dir: string, options: RecoveryOptions, sink: ReplaySink, created: boolean): Promise<Recovered> {
  const opened: SegmentFile[] = [];
  try {
    return await recoverInner(dir, options, sink, created, opened);
  } catch (err) {
    // A refused open must not leak file handles.
    await Promise.all(opened.map((s) => s.close()));
    throw err;
  }
}

async function recoverInner(dir: string, options: RecoveryOptions, sink: ReplaySink, created: boolean, opened: SegmentFile[]): Promise<Recovered> {
  const startedMs = Date.now();
  const report: OpenReport = {
    created,
    checkpointUsed: null,
    checkpointVersion: 0,
    recoveredVersion: 0,
    replayedRecords: 0,
    replayedBytes: 0,
    truncatedBytes: 0,
    removedFiles: [],
    warnings: [],
    durationMs: 0,
  };
  const warn = (msg: string, extra: Record<string, unknown> = {}): void => {
    report.warnings.push(msg);
    options.logger?.warn({ dir, ...extra }, msg);
  };
  const remove = async (name: string): Promise<void> => {
    await unlink(join(dir, name)).catch((err: unknown) => {
      throw wrapFsError(err, `delete ${name}`);
    });
    report.removedFiles.push(name);
  };

  const names = await readdir(dir);
  for (const name of names) if (name.endsWith('.tmp') || isRecycledFileName(name)) await remove(name);
  const logNumbers: number[] = [];
  const gcNumbers = new Set<number>();
  for (const name of names) {
    const parsed = parseSegmentFileName(name);
    if (parsed?.kind === 'log') logNumbers.push(parsed.number);
    else if (parsed?.kind === 'gc') gcNumbers.add(parsed.number);
  }
  logNumbers.sort((a, b) => a - b);
  const logSet = new Set(logNumbers);

  // 1. The newest checkpoint that decodes and checks out.
  let checkpoint: CheckpointData | undefined;
  const sequences = await listCheckpoints(dir);
  const unusable: number[] = [];
  for (const seq of sequences) {
    try {
      checkpoint = await readCheckpoint(dir, seq);
      report.checkpointUsed = checkpointFileName(seq);
      break;
    } catch (err) {
      warn(`checkpoint ${checkpointFileName(seq)} is unusable (${err instanceof Error ? err.message : String(err)}); falling back`, { checkpoint: seq });
      unusable.push(seq);
    }
  }

  const segments = new Map<number, SegmentFile>();
  let replayStartNumber = 1;
  let replayStartPos = SEGMENT_HEADER_BYTES;
  if (checkpoint) {
    const meta = checkpoint.meta;
    for (const s of meta.segments) {
      const present = s.kind === 'log' ? logSet.has(s.number) : gcNumbers.has(s.number);
      if (!present) {
        throw new CorruptError(
          `segment ${segmentFileName(s.kind, s.number)} referenced by ${report.checkpointUsed} is missing from ${dir}; ` +
            `the data it holds is lost (restore the file or rebuild this replica from a peer)`,
        );
      }
    }
    replayStartNumber = meta.replayFrom.segmentNumber;
    replayStartPos = meta.replayFrom.positionBytes;
    report.checkpointVersion = meta.version;
    sink.loadCheckpoint(checkpoint);
    for (const s of meta.segments) {
      if (s.kind === 'log' && s.number >= replayStartNumber) continue; // opened by the replay below
      // The checkpoint's size, not the file's: a recycled file holds old bytes past its end.
      const fileSize = (await stat(join(dir, segmentFileName(s.kind, s.number)))).size;
      const seg = new SegmentFile(dir, s.kind, s.number, Math.min(s.sizeBytes, fileSize), 'readonly');
      seg.firstVersion = s.firstVersion;
      seg.lastVersion = s.lastVersion;
      segments.set(seg.id, seg);
    }
  } else if (sequences.length > 0 || (logNumbers.length > 0 && logNumbers[0] !== 1)) {
    if (logNumbers.length > 0 && logNumbers[0] !== 1) {
      throw new CorruptError(
        `no usable checkpoint in ${dir} and the log starts at ${segmentFileName('log', logNumbers[0])}: ` +
          `the records before it were compacted away, so a full replay cannot rebuild the disk`,
      );
    }
  }

  // 2. Interrupted GC output and leftovers of deletions: not referenced, so not needed.
  const referencedGc = new Set((checkpoint?.meta.segments ?? []).filter((s) => s.kind === 'gc').map((s) => s.number));
  for (const n of gcNumbers) {
    if (!referencedGc.has(n)) {
      warn(`removing ${segmentFileName('gc', n)}: not referenced by the checkpoint (interrupted GC or image install)`);
      await remove(segmentFileName('gc', n));
    }
  }
  const referencedLog = new Set((checkpoint?.meta.segments ?? []).filter((s) => s.kind === 'log').map((s) => s.number));
  for (const n of logNumbers) {
    if (n < replayStartNumber && !referencedLog.has(n)) {
      warn(`removing ${segmentFileName('log', n)}: before the checkpoint and not referenced (interrupted deletion)`);
      await remove(segmentFileName('log', n));
    }
  }

  // 3. Replay the log segments from the checkpoint on; they must be gapless.
  const toReplay = logNumbers.filter((n) => n >= replayStartNumber);
  if (checkpoint && !logSet.has(replayStartNumber)) {
    throw new CorruptError(`log segment ${segmentFileName('log', replayStartNumber)} (where ${report.checkpointUsed} resumes) is missing from ${dir}`);
  }
  for (let i = 1; i < toReplay.length; i += 1) {
    if (toReplay[i] !== toReplay[i - 1] + 1) {
      throw new CorruptError(
        `log segment ${segmentFileName('log', toReplay[i - 1] + 1)} is missing (gap between ${segmentFileName('log', toReplay[i - 1])} ` +
          `and ${segmentFileName('log', toReplay[i])}); the records in it are lost`,
      );
    }
  }

  let version = checkpoint?.meta.version ?? 0;
  let active: SegmentFile | undefined;
  let dirChanged = report.removedFiles.length > 0;
  for (let idx = 0; idx < toReplay.length; idx += 1) {
    const number = toReplay[idx];
    const seg = new SegmentFile(dir, 'log', number, 0, 'existing');
    opened.push(seg);
    const listed = checkpoint?.meta.segments.find((s) => s.kind === 'log' && s.number === number);
    if (listed) {
      // Records before the checkpoint position are not replayed: keep their version range.
      seg.firstVersion = listed.firstVersion;
      seg.lastVersion = listed.lastVersion;
    }
    const fh = await seg.handle();
    const size = (await fh.stat()).size;
    const buf = Buffer.allocUnsafeSlow(size);
    let got = 0;
    while (got < size) {
      const { bytesRead } = await fh.read(buf, got, size - got, got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    let data: Buffer = buf.subarray(0, got);
    const isLast = idx === toReplay.length - 1;
    const headerProblem = checkSegmentHeader(data, 'log', number);
    let pos = idx === 0 && checkpoint ? replayStartPos : SEGMENT_HEADER_BYTES;
    if (headerProblem) {
      // A torn header can only be the newest segment, created just before a crash: then
      // neither it nor any later segment holds a record. Anything else is damage.
      const ownRecords = findRecordNewerThan(data, SEGMENT_HEADER_BYTES, version) !== undefined;
      const laterValid = await laterSegmentsHaveRecordsNewerThan(dir, toReplay.slice(idx + 1), version);
      const resumesCheckpoint = idx === 0 && checkpoint !== undefined;
      if (!ownRecords && !laterValid && !resumesCheckpoint) {
        warn(`removing ${seg.name}: ${headerProblem} (torn segment creation at the log tail)`);
        await seg.close();
        // Newest first: a crash half-way leaves a shorter log, never a numbering gap.
        for (const n of toReplay.slice(idx).reverse()) await remove(segmentFileName('log', n));
        dirChanged = true;
        break;
      }
      const why = ownRecords ? 'it holds valid records' : laterValid ? 'later segments hold valid records' : `${report.checkpointUsed} resumes replay in it`;
      if (!options.repairCorruptLog) {
        throw new CorruptError(
          `log segment ${seg.name} in ${dir}: ${headerProblem}, but ${why}; refusing to drop acknowledged records silently ` +
            `(open with repairCorruptLog to rewrite the header and keep every record that passes its crc)`,
        );
      }
      // The header says only "log segment N", which the file name tells: rewrite it; the
      // records are then checked one by one as usual.
      warn(`repairCorruptLog: rewrote the header of ${seg.name} (${headerProblem}); its records are verified by crc as usual`, { segment: seg.name });
      const header = encodeSegmentHeader('log', number);
      try {
        await fh.write(header, 0, header.length, 0);
        await fh.datasync();
      } catch (err) {
        throw wrapFsError(err, `rewrite header of ${seg.name}`);
      }
      if (data.length < SEGMENT_HEADER_BYTES) data = header;
      else header.copy(data, 0);
    }
    if (pos > data.length) {
      throw new CorruptError(`log segment ${seg.name} is ${data.length} bytes, but ${report.checkpointUsed} says it held ${pos}; the log lost acknowledged data`);
    }
    const recycled = headerProblem === undefined && isRecycledSegmentHeader(data);
    let cutAt: number | undefined;
    let endsAt: number | undefined;
    /** The cut drops only a recycled file's old bytes, nothing of this log. */
    let cutIsOldLife = false;
    while (pos < data.length) {
      const parsed = parseRecord(data, pos);
      // A valid record no newer than the log so far: the old life of a recycled file.
      const stale = parsed.ok && parsed.header.version <= version;
      if (!parsed.ok || stale) {
        // In a recycled file, bytes that do not start the next record are its previous content.
        const oldLife = stale || (recycled && !startsRecord(data, pos, version + 1));
        const what = !parsed.ok
          ? `${parsed.reason === 'short' ? 'torn (short) record' : parsed.reason === 'bad-crc' ? 'crc mismatch' : 'bad record header'} at ${seg.name}:${pos}`
          : `an older record (version ${parsed.header.version}, left from the file's previous use) at ${seg.name}:${pos}`;
        const laterInThis = findRecordNewerThan(data, pos + 1, version);
        // A full recycled segment: the rest of the file is its old life, and the log goes on
        // in the next segment with the very next version.
        if (!isLast && laterInThis === undefined && (await firstRecordVersion(dir, toReplay[idx + 1])) === version + 1) {
          endsAt = pos;
          break;
        }
        const laterSegs = isLast ? false : await laterSegmentsHaveRecordsNewerThan(dir, toReplay.slice(idx + 1), version);
        if (laterInThis === undefined && !laterSegs) {
          cutIsOldLife = oldLife;
          if (oldLife) options.logger?.debug({ dir, segment: seg.name, positionBytes: pos }, `log ends before ${what}`);
          else warn(`log tail cut: ${what}; ${data.length - pos} bytes removed (never acknowledged as durable)`, { segment: seg.name, positionBytes: pos });
        } else if (options.repairCorruptLog) {
          warn(`repairCorruptLog: ${what} in the middle of the log; cutting here and dropping every later record`, { segment: seg.name, positionBytes: pos });
        } else {
          const next = laterInThis !== undefined ? `${seg.name}:${laterInThis}` : 'a later segment';
          throw new CorruptError(
            `log corrupt in the middle of ${dir}: ${what} (version ${version + 1} expected), followed by a valid record at ${next}; ` +
              `refusing to drop acknowledged records silently (open with repairCorruptLog to cut the log here, losing everything after)`,
          );
        }
        cutAt = pos;
        break;
      }
      const h = parsed.header;
      if (h.version !== version + 1) {
        throw new CorruptError(`log out of order at ${seg.name}:${pos}: expected version ${version + 1} got ${h.version}`);
      }
      sink.apply(h, seg, pos + RECORD_HEADER_BYTES);
      if (seg.firstVersion === 0) seg.firstVersion = h.version;
      seg.lastVersion = h.version;
      version = h.version;
      report.replayedRecords += 1;
      report.replayedBytes += parsed.totalBytes;
      pos += parsed.totalBytes;
    }
    if (cutAt !== undefined) {
      if (!cutIsOldLife) report.truncatedBytes += data.length - cutAt;
      try {
        await fh.truncate(cutAt);
        await fh.datasync();
      } catch (err) {
        throw wrapFsError(err, `truncate ${seg.name}`);
      }
      seg.sizeBytes = cutAt;
      segments.set(seg.id, seg);
      active = seg;
      // Newest first: a crash half-way leaves a shorter log, never a numbering gap.
      for (const n of toReplay.slice(idx + 1).reverse()) {
        report.truncatedBytes += (await stat(join(dir, segmentFileName('log', n)))).size;
        await remove(segmentFileName('log', n));
        dirChanged = true;
      }
      break;
    }
    seg.sizeBytes = endsAt ?? data.length;
    segments.set(seg.id, seg);
    active = seg;
  }

  if (!active) {
    // Empty volume (or a torn first segment): start the log.
    const number = toReplay.length > 0 ? toReplay[0] : Math.max(0, ...logNumbers) + 1;
    active = new SegmentFile(dir, 'log', number, 0, 'create');
    opened.push(active);
    await active.writeAt([encodeSegmentHeader('log', number)], 0);
    await active.datasync();
    active.sizeBytes = SEGMENT_HEADER_BYTES;
    segments.set(active.id, active);
    dirChanged = true;
  }
  if (dirChanged) await fsyncDir(dir);

  if (checkpoint) {
    // Every extent must point into a known segment and inside it: a checkpoint is input, not trust.
    const check = (segs: Uint32Array, poss: Uint32Array, lens: Uint32Array, what: string): void => {
      for (let i = 0; i < segs.length; i += 1) {
        const seg = segments.get(segs[i]);
        if (!seg) throw new CorruptError(`${report.checkpointUsed}: ${what} entry ${i} points into segment id ${segs[i]}, which does not exist`);
        if (poss[i] + lens[i] > seg.sizeBytes) throw new CorruptError(`${report.checkpointUsed}: ${what} entry ${i} points past the end of ${seg.name}`);
      }
    };
    check(checkpoint.map.segments, checkpoint.map.positions, checkpoint.map.lengths, 'map');
    checkpoint.snapshotMaps.forEach((m, i) => check(m.segments, m.positions, m.lengths, `snapshot ${checkpoint!.meta.snapshots[i].name}`));
    check(checkpoint.history.segments, checkpoint.history.positions, checkpoint.history.lengths, 'history');
  }
  // Only now that the open succeeds (a refused open leaves every file for inspection): an
  // unusable checkpoint must not linger as the fallback of the next one.
  for (const seq of unusable) await remove(checkpointFileName(seq));
  if (unusable.length > 0) await fsyncDir(dir);

  report.recoveredVersion = version;
  report.durationMs = Date.now() - startedMs;
  return { segments, active, version, checkpoint, report };
}

/** Whether the bytes at `at` begin the header of record `version` (torn or whole). */
function startsRecord(data: Buffer, at: number, version: number): boolean {
  return at + 16 <= data.length && data.readUInt32LE(at) === RECORD_MAGIC && readU64(data, at + 8) === version;
}

/**
 * Position of the next record with a valid crc and a version above `version` after `from`, if
 * any (is the damage at the tail?). Older valid records are a recycled file's previous life.
 */
function findRecordNewerThan(data: Buffer, from: number, version: number): number | undefined {
  const magic = Buffer.alloc(4);
  magic.writeUInt32LE(RECORD_MAGIC, 0);
  let at = data.indexOf(magic, from);
  while (at >= 0) {
    const parsed = parseRecord(data, at);
    if (parsed.ok && parsed.header.version > version) return at;
    at = data.indexOf(magic, at + 1);
  }
  return undefined;
}

/** Version of the first record of log segment `number`, if its header and that record are valid. */
async function firstRecordVersion(dir: string, number: number): Promise<number | undefined> {
  const seg = new SegmentFile(dir, 'log', number, 0, 'readonly');
  try {
    const size = (await stat(seg.path)).size;
    if (size < SEGMENT_HEADER_BYTES + RECORD_HEADER_BYTES) return undefined;
    const head = Buffer.alloc(SEGMENT_HEADER_BYTES + RECORD_HEADER_BYTES);
    await seg.readAt(head, 0, head.length, 0);
    if (checkSegmentHeader(head, 'log', number) !== undefined) return undefined;
    const header = decodeHeader(head, SEGMENT_HEADER_BYTES);
    if (!header) return undefined;
    const total = SEGMENT_HEADER_BYTES + RECORD_HEADER_BYTES + header.dataLengthBytes;
    if (total > size) return undefined;
    const buf = Buffer.alloc(total);
    await seg.readAt(buf, 0, total, 0);
    return parseRecord(buf, SEGMENT_HEADER_BYTES).ok ? header.version : undefined;
  } finally {
    await seg.close();
  }
}

async function laterSegmentsHaveRecordsNewerThan(dir: string, numbers: number[], version: number): Promise<boolean> {
  for (const n of numbers) {
    const seg = new SegmentFile(dir, 'log', n, 0, 'readonly');
    try {
      const size = (await stat(seg.path)).size;
      const buf = Buffer.alloc(Math.min(size, 64 * 1024 * 1024 + 4096));
      if (buf.length > 0) await seg.readAt(buf, 0, buf.length, 0);
      if (findRecordNewerThan(buf, SEGMENT_HEADER_BYTES, version) !== undefined) return true;
    } finally {
      await seg.close();
    }
  }
  return false;
}


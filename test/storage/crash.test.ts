/**
 * Crash tests: a real writer process (crash-writer.ts) is killed with SIGKILL at random
 * moments — also in the middle of a GC or a checkpoint — and the store must reopen with
 * every version it reported durable, holding exactly the content of a prefix of what was
 * appended (a model replay of the recovered version), never an exception. Then the tail
 * of a closed log is torn or flipped at random places: recovery cuts exactly there and
 * says so in openReport, or refuses damage that valid records follow.
 *
 * Seeds are random per run and printed; CRASH_SEED=<n> replays a run's seeds (kill
 * timing stays random: it is a real process).
 */
import { afterAll, describe, expect, it } from 'vitest';
import { cp, open, readFile, stat, truncate } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Lsvd, type LsvdOptions, type LsvdRecord, type StorageError } from '../../storage/index.js';
import { ProcessTracker } from '../helpers/processes.js';
import { applyToModel, crashRecord, seededRandom, tempDir } from './helpers.js';

const WRITER = fileURLToPath(new URL('./crash-writer.ts', import.meta.url));
const REPO = fileURLToPath(new URL('../../', import.meta.url));
const SIZE_BYTES = 1024 * 1024;
const SEGMENT_BYTES = 64 * 1024;
/** Small segments, frequent checkpoints, a short sync window: rollover, checkpoints and GC all the time. */
const STORE_OPTIONS = { sizeBytes: SIZE_BYTES, segmentSizeBytes: SEGMENT_BYTES, checkpointEveryRecords: 100, syncWindowVersions: 64 };
const WRITER_ARGS = [
  ['--size', STORE_OPTIONS.sizeBytes],
  ['--segment-bytes', STORE_OPTIONS.segmentSizeBytes],
  ['--checkpoint-every-records', STORE_OPTIONS.checkpointEveryRecords],
  ['--sync-window', STORE_OPTIONS.syncWindowVersions],
].flatMap(([name, value]) => [String(name), String(value)]);

const BASE_SEED = process.env.CRASH_SEED ? Number(process.env.CRASH_SEED) : Math.floor(Math.random() * 2 ** 31);
console.log(`crash.test: CRASH_SEED=${BASE_SEED}`);

const tracker = new ProcessTracker();
const cleanups: Array<() => Promise<void>> = [];
afterAll(async () => {
  await tracker.stopAll();
  for (const c of cleanups) await c();
});

/**
 * time: kill delayMs after the child is spawned, or (from 'open') after it has opened the store,
 * so a slow start on a loaded machine does not turn every round into a kill during startup.
 */
type KillPolicy = { at: 'time'; delayMs: number; from: 'spawn' | 'open' } | { at: 'gc-start' | 'checkpoint-start'; nth: number; delayMs: number };

interface ChildRun {
  lines: string[];
  /** Killed between a *-start and its *-done line (as far as the parent had read them). */
  killedMidMaintenance: boolean;
}

/** Start the writer and SIGKILL it by PID as the policy says; resolves with its stdout lines. */
function runAndKill(dir: string, seed: number, policy: KillPolicy): Promise<ChildRun> {
  const bg = tracker.start(process.execPath, ['--import', 'tsx', WRITER, '--dir', dir, '--seed', String(seed), ...WRITER_ARGS], { cwd: REPO });
  const child = bg.child;
  const lines: string[] = [];
  let partial = '';
  let seen = 0;
  let running = 0;
  let killedMid = false;
  let killed = false;
  const kill = (): void => {
    if (killed) return;
    killed = true;
    killedMid = running > 0;
    try {
      process.kill(bg.pid!, 'SIGKILL');
    } catch {
      // Already gone: the exit check below says why.
    }
  };
  child.stdout!.on('data', (chunk: Buffer) => {
    const text = partial + chunk.toString();
    const parts = text.split('\n');
    partial = parts.pop()!;
    for (const line of parts) {
      lines.push(line);
      if (policy.at === 'time' && policy.from === 'open' && line.startsWith('open ')) {
        clearTimeout(timer);
        timer = setTimeout(kill, policy.delayMs);
      } else if (policy.at !== 'time' && line === policy.at) {
        running += 1;
        seen += 1;
        if (seen === policy.nth) setTimeout(kill, policy.delayMs);
      } else if (policy.at === 'gc-start' && line.startsWith('gc-done')) running -= 1;
      else if (policy.at === 'checkpoint-start' && line.startsWith('checkpoint-done')) running -= 1;
    }
  });
  // Time policy, and the fallback when the event never comes.
  let timer = setTimeout(kill, policy.at === 'time' ? (policy.from === 'spawn' ? policy.delayMs : 60_000) : 5000);
  return new Promise((resolve, reject) => {
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      if (signal !== 'SIGKILL') {
        reject(new Error(`writer exited by itself (${signal ?? code}):\n${bg.output()}`));
        return;
      }
      if (partial) lines.push(partial); // a line cut by the kill: kept, the parser ignores junk
      resolve({ lines, killedMidMaintenance: killedMid });
    });
  });
}

/**
 * What the parent knows about a volume across rounds: which seed generated which versions,
 * the highest version any writer reported durable, and a model of the disk at `modelVersion`.
 */
class CrashModel {
  readonly model = Buffer.alloc(SIZE_BYTES);
  modelVersion = 0;
  maxDurable = 0;
  /** [firstVersion, seed], ascending: versions from firstVersion on come from seed. */
  private seeds: Array<[number, number]> = [];

  /** Take in one writer's output. */
  absorb(seed: number, run: ChildRun, context: string): void {
    for (const line of run.lines) {
      const [event, arg] = line.split(' ');
      const n = Number(arg);
      if (event === 'open' && Number.isSafeInteger(n)) {
        // The writer's own recovery kept everything reported durable before it.
        expect(n, `${context}: writer opened at ${n}, below durable ${this.maxDurable}`).toBeGreaterThanOrEqual(this.maxDurable);
        expect(n).toBeGreaterThanOrEqual(this.modelVersion);
        this.seeds = this.seeds.filter(([from]) => from <= n);
        this.seeds.push([n + 1, seed]);
      } else if (event === 'durable' && Number.isSafeInteger(n)) {
        this.maxDurable = Math.max(this.maxDurable, n);
      }
    }
  }

  private seedFor(version: number): number {
    for (let i = this.seeds.length - 1; i >= 0; i -= 1) if (this.seeds[i][0] <= version) return this.seeds[i][1];
    throw new Error(`no writer generated version ${version}`);
  }

  record(version: number): LsvdRecord {
    return crashRecord(this.seedFor(version), version, SIZE_BYTES);
  }

  /** Reopen in this process and check it against the model; leaves the store closed. */
  async verify(dir: string, context: string, checkpointOnClose: boolean): Promise<number> {
    const store = await Lsvd.open({ dir, ...STORE_OPTIONS });
    try {
      const recovered = store.version;
      expect(store.openReport.recoveredVersion).toBe(recovered);
      expect(recovered, `${context}: recovered ${recovered} < durable ${this.maxDurable} (${JSON.stringify(store.openReport)})`).toBeGreaterThanOrEqual(this.maxDurable);
      expect(recovered).toBeGreaterThanOrEqual(this.modelVersion);
      for (let v = this.modelVersion + 1; v <= recovered; v += 1) applyToModel(this.model, this.record(v));
      this.modelVersion = recovered;
      const disk = await store.read(0, SIZE_BYTES);
      if (!disk.equals(this.model)) {
        let at = 0;
        while (disk[at] === this.model[at]) at += 1;
        throw new Error(`${context}: content at version ${recovered} differs from the model from byte ${at} (report ${JSON.stringify(store.openReport)})`);
      }
      // Whatever is appended next builds on exactly this state.
      this.seeds = this.seeds.filter(([from]) => from <= recovered);
      this.maxDurable = recovered;
      return recovered;
    } finally {
      await store.close({ checkpoint: checkpointOnClose });
    }
  }
}

describe('crash: the writer process is killed with SIGKILL', () => {
  it('at random moments: every durable version survives, content is exactly a recovered prefix', async () => {
    const dir = await tempDir('lsvd-crash-');
    cleanups.push(dir.remove);
    const rnd = seededRandom(BASE_SEED);
    const m = new CrashModel();
    const rounds = 12;
    for (let round = 0; round < rounds; round += 1) {
      const seed = BASE_SEED + round * 7919;
      // Every fourth round kills early, counted from the spawn: in startup and in the writer's
      // own recovery of the last crash. The others count from the store being open.
      const delayMs = round % 4 === 3 ? 150 + Math.floor(rnd() * 200) : 50 + Math.floor(rnd() * 400);
      const context = `seed ${BASE_SEED} round ${round} (kill after ${delayMs} ms)`;
      const run = await runAndKill(dir.path, seed, { at: 'time', delayMs, from: round % 4 === 3 ? 'spawn' : 'open' });
      m.absorb(seed, run, context);
      // Every third round the next writer recovers the crashed directory itself.
      if (round % 3 !== 1 || round === rounds - 1) await m.verify(dir.path, context, round % 2 === 0);
    }
    expect(m.modelVersion).toBeGreaterThan(0);
  });

  it('in the middle of GC and of checkpoints', async () => {
    const dir = await tempDir('lsvd-crash-gc-');
    cleanups.push(dir.remove);
    const rnd = seededRandom(BASE_SEED + 1);
    const m = new CrashModel();
    const rounds = 14;
    let midway = 0;
    for (let round = 0; round < rounds; round += 1) {
      const seed = BASE_SEED + 1_000_003 + round * 7919;
      const at = round % 2 === 0 ? ('gc-start' as const) : ('checkpoint-start' as const);
      // A GC here takes some 10-30 ms (flush, copy, fdatasync, two checkpoints), a checkpoint a few.
      const policy: KillPolicy = { at, nth: 1 + Math.floor(rnd() * 4), delayMs: Math.floor(rnd() * (at === 'gc-start' ? 25 : 6)) };
      const context = `seed ${BASE_SEED} round ${round} (kill ${policy.delayMs} ms after ${at} #${policy.nth})`;
      const run = await runAndKill(dir.path, seed, policy);
      if (run.killedMidMaintenance) midway += 1;
      m.absorb(seed, run, context);
      await m.verify(dir.path, context, false);
    }
    console.log(`crash.test: ${midway}/${rounds} kills landed inside a GC or checkpoint`);
    expect(midway).toBeGreaterThan(0);
  });
});

// ---- torn and flipped tails ------------------------------------------------------------

interface RecordSpan {
  positionBytes: number;
  totalBytes: number;
  version: number;
}

/** Walk a log segment's records (header: version u64 at 8, data length u32 at 32). */
async function recordSpans(path: string): Promise<RecordSpan[]> {
  const buf = await readFile(path);
  const spans: RecordSpan[] = [];
  for (let pos = 32; pos + 40 <= buf.length; ) {
    const totalBytes = 40 + buf.readUInt32LE(pos + 32);
    spans.push({ positionBytes: pos, totalBytes, version: buf.readUInt32LE(pos + 8) });
    pos += totalBytes;
  }
  return spans;
}

function modelAt(seed: number, version: number, sizeBytes: number): Buffer {
  const model = Buffer.alloc(sizeBytes);
  for (let v = 1; v <= version; v += 1) applyToModel(model, crashRecord(seed, v, sizeBytes));
  return model;
}

async function openError(options: LsvdOptions): Promise<StorageError> {
  try {
    const s = await Lsvd.open(options);
    await s.close();
  } catch (err) {
    return err as StorageError;
  }
  throw new Error('open succeeded');
}

describe('crash: damaged tail of a closed log', () => {
  const sizeBytes = 256 * 1024;
  const seed = BASE_SEED + 17;

  /** A closed store (no final checkpoint) of 100+ records over several segments; returns the pristine dir. */
  async function pristine(): Promise<{ dir: string; lastSegment: string; spans: RecordSpan[]; total: number }> {
    const dir = await tempDir('lsvd-tail-');
    cleanups.push(dir.remove);
    const store = await Lsvd.open({ dir: dir.path, sizeBytes, segmentSizeBytes: 128 * 1024 });
    // At least 100 records, and on until the last segment holds 10 of them.
    let total = 0;
    let lastName = '';
    let inLast = 0;
    while (total < 100 || inLast < 10) {
      total += 1;
      store.append(crashRecord(seed, total, sizeBytes));
      const logs = store.segmentNames().filter((n) => n.startsWith('L'));
      if (logs[logs.length - 1] !== lastName) [lastName, inLast] = [logs[logs.length - 1], 0];
      inLast += 1;
    }
    await store.flush();
    const names = store.segmentNames().filter((n) => n.startsWith('L'));
    await store.close({ checkpoint: false });
    expect(names.length).toBeGreaterThan(1);
    const lastSegment = names[names.length - 1];
    return { dir: dir.path, lastSegment, spans: await recordSpans(join(dir.path, lastSegment)), total };
  }

  async function copyOf(dir: string, tag: string): Promise<string> {
    const target = await tempDir(`lsvd-tail-${tag}-`);
    cleanups.push(target.remove);
    await cp(dir, target.path, { recursive: true });
    return target.path;
  }

  async function expectContent(store: Lsvd, version: number): Promise<void> {
    expect(store.version).toBe(version);
    expect((await store.read(0, sizeBytes)).equals(modelAt(seed, version, sizeBytes))).toBe(true);
  }

  it('truncated at random byte offsets: cut at the last whole record, reported in openReport', async () => {
    const base = await pristine();
    const segPath = (d: string): string => join(d, base.lastSegment);
    const sizeBytesOnDisk = (await stat(segPath(base.dir))).size;
    const firstInLast = base.spans[0].version;
    const rnd = seededRandom(seed);
    // Random cuts, plus the edges: inside the segment header, on a record boundary, one byte short.
    const cuts = [10, 32, base.spans[1].positionBytes, sizeBytesOnDisk - 1];
    for (let i = 0; i < 12; i += 1) cuts.push(Math.floor(rnd() * sizeBytesOnDisk));
    for (const cut of cuts) {
      const dir = await copyOf(base.dir, `cut${cut}`);
      await truncate(segPath(dir), cut);
      const whole = base.spans.filter((s) => s.positionBytes + s.totalBytes <= cut);
      const expectVersion = whole.length > 0 ? whole[whole.length - 1].version : firstInLast - 1;
      const boundary = whole.length > 0 ? whole[whole.length - 1].positionBytes + whole[whole.length - 1].totalBytes : 32;
      const store = await Lsvd.open({ dir });
      const report = store.openReport;
      await expectContent(store, expectVersion);
      expect(report.recoveredVersion).toBe(expectVersion);
      if (cut < 32) {
        // A torn segment creation: the file goes, nothing else.
        expect(report.removedFiles).toContain(base.lastSegment);
        expect(report.warnings.join('\n')).toMatch(/torn segment creation/);
      } else if (cut === boundary) {
        expect(report.truncatedBytes).toBe(0);
        expect(report.warnings).toEqual([]);
      } else {
        expect(report.truncatedBytes).toBe(cut - boundary);
        expect(report.warnings.join('\n')).toContain(`log tail cut: torn (short) record at ${base.lastSegment}:${boundary}`);
      }
      // The store goes on from there, and the next open sees no damage.
      store.append(crashRecord(seed + 1, expectVersion + 1, sizeBytes));
      await store.close();
      const again = await Lsvd.open({ dir });
      expect(again.version).toBe(expectVersion + 1);
      expect(again.openReport.truncatedBytes).toBe(0);
      await again.close();
    }
  });

  it('a flipped byte: in the last record it is cut; before it, open refuses naming segment:position', async () => {
    const base = await pristine();
    const rnd = seededRandom(seed + 1);
    const last = base.spans[base.spans.length - 1];
    for (let i = 0; i < 12; i += 1) {
      // Half the flips in the last record, half in one of the four before it.
      const span = i % 2 === 0 ? last : base.spans[base.spans.length - 2 - Math.floor(rnd() * 4)];
      const at = span.positionBytes + Math.floor(rnd() * span.totalBytes);
      const dir = await copyOf(base.dir, `flip${i}`);
      const fh = await open(join(dir, base.lastSegment), 'r+');
      const byte = Buffer.alloc(1);
      await fh.read(byte, 0, 1, at);
      byte[0] ^= 1 << Math.floor(rnd() * 8);
      await fh.write(byte, 0, 1, at);
      await fh.close();
      const where = `${base.lastSegment}:${span.positionBytes}`;
      if (span === last) {
        const store = await Lsvd.open({ dir });
        await expectContent(store, base.total - 1);
        expect(store.openReport.truncatedBytes).toBe(last.totalBytes);
        expect(store.openReport.warnings.join('\n')).toMatch(new RegExp(`log tail cut: .* at ${where};`));
        await store.close();
      } else {
        const err = await openError({ dir });
        expect(err.code).toBe('ERR_CORRUPT');
        expect(err.message).toContain(where);
        const store = await Lsvd.open({ dir, repairCorruptLog: true });
        await expectContent(store, span.version - 1);
        expect(store.openReport.warnings.join('\n')).toContain(`repairCorruptLog: `);
        expect(store.openReport.warnings.join('\n')).toContain(where);
        await store.close();
      }
    }
  });

  it('a flipped byte in the header of a segment holding records is refused, never dropped as torn', async () => {
    const base = await pristine();
    const dir = await copyOf(base.dir, 'hdr');
    const fh = await open(join(dir, base.lastSegment), 'r+');
    await fh.write(Buffer.from([0x77]), 0, 1, 2);
    await fh.close();
    const err = await openError({ dir });
    expect(err.code).toBe('ERR_CORRUPT');
    expect(err.message).toContain(base.lastSegment);
    expect(err.message).toMatch(/holds valid records/);
    const store = await Lsvd.open({ dir, repairCorruptLog: true });
    await expectContent(store, base.total);
    expect(store.openReport.warnings.join('\n')).toMatch(/rewrote the header/);
    await store.close();
    const again = await Lsvd.open({ dir });
    await expectContent(again, base.total);
    await again.close();
  });
});

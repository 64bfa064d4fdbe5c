/**
 * Child process of crash.test.ts: opens (or creates) a store and appends crashRecord(seed, v)
 * for v = version+1, version+2, … forever, flushing every few records, with GC and explicit
 * checkpoints mixed in, until the parent kills it with SIGKILL.
 *
 *   node --import tsx test/storage/crash-writer.ts --dir D --seed S [--size B] [--segment-bytes B]
 *        [--checkpoint-every-records N] [--flush-every N] [--gc-every N] [--checkpoint-every N]
 *
 * stdout, one event per line (stdout on a pipe is synchronous on Linux, so a line the parent
 * reads was written before the kill):
 *   open <version> seed <s>   recovered; versions above this are crashRecord(s, v)
 *   durable <version>         a flush resolved: everything up to here must survive
 *   gc-start / gc-done <n>    a GC (rewriting n segments) began / finished
 *   checkpoint-start / checkpoint-done <version>
 * Any error is printed to stderr and exits 1: the parent fails on it.
 */
import { parseArgs } from 'node:util';
import { Lsvd } from '../../storage/index.js';
import { crashRecord, seededRandom } from './helpers.js';

const { values } = parseArgs({
  options: {
    dir: { type: 'string' },
    seed: { type: 'string' },
    size: { type: 'string', default: String(1024 * 1024) },
    'segment-bytes': { type: 'string', default: String(64 * 1024) },
    'checkpoint-every-records': { type: 'string', default: '100' },
    'sync-window': { type: 'string', default: '64' },
    'flush-every': { type: 'string', default: '8' },
    'gc-every': { type: 'string', default: '5' },
    'checkpoint-every': { type: 'string', default: '7' },
    /** Safety net: stop on our own if the parent never kills us. */
    'max-ms': { type: 'string', default: '20000' },
  },
});
if (!values.dir || !values.seed) throw new Error('--dir and --seed are required');
const seed = Number(values.seed);
const sizeBytes = Number(values.size);
const flushEvery = Number(values['flush-every']);
const gcEvery = Number(values['gc-every']);
const checkpointEvery = Number(values['checkpoint-every']);
const deadlineMs = Date.now() + Number(values['max-ms']);

function say(line: string): void {
  process.stdout.write(`${line}\n`);
}

function die(err: unknown): never {
  const e = err as { code?: string; message?: string; stack?: string };
  process.stderr.write(`error ${e.code ?? '-'} ${e.stack ?? e.message ?? String(err)}\n`);
  process.exit(1);
}

async function main(): Promise<void> {
  const store = await Lsvd.open({
    dir: values.dir!,
    sizeBytes,
    segmentSizeBytes: Number(values['segment-bytes']),
    batchBytes: 16 * 1024,
    checkpointEveryRecords: Number(values['checkpoint-every-records']),
    syncWindowVersions: Number(values['sync-window']),
  });
  say(`open ${store.version} seed ${seed}`);
  const rnd = seededRandom(seed ^ 0x5bd1e995);
  const flushes: Array<Promise<void>> = [];
  let flushCount = 0;
  let gcRunning = false;
  let checkpointRunning = false;
  while (Date.now() < deadlineMs) {
    const count = 1 + Math.floor(rnd() * flushEvery * 2);
    for (let i = 0; i < count; i += 1) store.append(crashRecord(seed, store.version + 1, sizeBytes));
    flushes.push(store.flush().then((d) => say(`durable ${d}`), die));
    flushCount += 1;
    if (gcEvery > 0 && flushCount % gcEvery === 0 && !gcRunning) {
      gcRunning = true;
      say('gc-start');
      store.gc({ liveShareThreshold: 0.6 }).then((r) => {
        gcRunning = false;
        say(`gc-done ${r.segmentsRewritten} ${r.durationMs}`);
      }, die);
    }
    if (checkpointEvery > 0 && flushCount % checkpointEvery === 0 && !checkpointRunning) {
      checkpointRunning = true;
      say('checkpoint-start');
      store.checkpoint().then((v) => {
        checkpointRunning = false;
        say(`checkpoint-done ${v}`);
      }, die);
    }
    // Keep up to two flushes in flight, so appends overlap a running fdatasync.
    if (flushes.length >= 2) await flushes.shift();
    await new Promise((resolve) => setImmediate(resolve));
  }
  await store.close();
}

main().catch(die);

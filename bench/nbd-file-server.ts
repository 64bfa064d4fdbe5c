/**
 * Serves one sparse file as the default NBD export, for benchmarks in a separate process.
 *
 *   node --import tsx bench/nbd-file-server.ts --file /tmp/disk.img --size 1073741824 [--port 0] [--host 127.0.0.1]
 *
 * Prints `nbd-file-server listening on nbd://HOST:PORT` once ready; SIGTERM/SIGINT close it.
 * (The lead will swap this for `freebs serve`; bench/nbd.ts only needs that ready line.)
 */
import { parseArgs } from 'node:util';
import pino from 'pino';
import { singleExport } from '../nbd/catalog.js';
import { FileBackend } from '../nbd/file-backend.js';
import { NbdServer } from '../nbd/server.js';

const { values } = parseArgs({
  options: {
    file: { type: 'string' },
    size: { type: 'string' },
    port: { type: 'string', default: '0' },
    host: { type: 'string', default: '127.0.0.1' },
  },
});
if (!values.file) {
  console.error('usage: nbd-file-server.ts --file PATH [--size BYTES] [--port N] [--host ADDR]');
  process.exit(2);
}

const logger = pino({ level: process.env.LOG_LEVEL ?? 'warn' }, pino.destination(2));
const backend = await FileBackend.open(values.file, { sizeBytes: values.size ? Number(values.size) : undefined });
const server = new NbdServer({ catalog: singleExport(backend), logger, host: values.host, port: Number(values.port) });
const { host, port } = await server.listen();
console.log(`nbd-file-server listening on nbd://${host}:${port}`);

let stopping = false;
const stop = async () => {
  if (stopping) return;
  stopping = true;
  await server.close();
  await backend.close();
  process.exit(0);
};
process.on('SIGTERM', () => void stop());
process.on('SIGINT', () => void stop());

/**
 * FreEBS's NBD front end over one plain file (nbd/file-backend.ts): the work `nbdkit file` does,
 * in place, with no log, no checksum and no replication.
 *
 *   npx tsx bench/file-server.ts FILE PORT
 *
 * bench/nbd.ts --front-end runs it next to `freebs serve` and nbdkit: the same front end and
 * runtime with the simplest store, so a gap to nbdkit splits into the front end's and the store's.
 */
import { pino } from 'pino';
import { singleExport } from '../nbd/catalog.js';
import { FileBackend } from '../nbd/file-backend.js';
import { NbdServer } from '../nbd/server.js';

const [file, portText] = process.argv.slice(2);
const port = Number(portText);
if (!file || !Number.isInteger(port)) {
  process.stderr.write('usage: file-server.ts FILE PORT\n');
  process.exit(2);
}

const backend = await FileBackend.open(file);
const server = new NbdServer({ catalog: singleExport(backend, `file ${file}`), logger: pino({ level: 'warn' }), host: '127.0.0.1', port });
await server.listen();
process.stdout.write(`serving nbd://127.0.0.1:${port}/ (file ${file})\n`);
const stop = (): void => void server.close().then(() => backend.close()).then(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);

/**
 * The volume's metadata file (volume.json): size and format, written once at creation
 * (atomically) and checked on every open, so a directory is never misread as another
 * volume or another format.
 */
import { open, readFile, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { FORMAT_VERSION } from './record.js';
import { fsyncDir } from './segment.js';
import { CorruptError, StorageError, wrapFsError } from './errors.js';

export const SUPERBLOCK_FILE = 'volume.json';
const SUPERBLOCK_MAGIC = 'freebs-lsvd';

export interface Superblock {
  magic: string;
  formatVersion: number;
  sizeBytes: number;
  createdAt: string;
}

export async function readSuperblock(dir: string): Promise<Superblock | undefined> {
  let text: string;
  try {
    text = await readFile(join(dir, SUPERBLOCK_FILE), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw wrapFsError(err, `read ${SUPERBLOCK_FILE}`);
  }
  let sb: Superblock;
  try {
    sb = JSON.parse(text) as Superblock;
  } catch (err) {
    throw new CorruptError(`${join(dir, SUPERBLOCK_FILE)} is not valid JSON`, { cause: err });
  }
  if (sb.magic !== SUPERBLOCK_MAGIC) throw new CorruptError(`${join(dir, SUPERBLOCK_FILE)} is not an LSVD volume file`);
  if (sb.formatVersion !== FORMAT_VERSION) {
    throw new StorageError('ERR_INVALID', `${dir} has LSVD format ${sb.formatVersion}; this build reads format ${FORMAT_VERSION}`);
  }
  if (!Number.isSafeInteger(sb.sizeBytes) || sb.sizeBytes <= 0) throw new CorruptError(`${join(dir, SUPERBLOCK_FILE)} has a bad sizeBytes`);
  return sb;
}

export async function writeSuperblock(dir: string, sizeBytes: number): Promise<Superblock> {
  const sb: Superblock = { magic: SUPERBLOCK_MAGIC, formatVersion: FORMAT_VERSION, sizeBytes, createdAt: new Date().toISOString() };
  const tmp = join(dir, `${SUPERBLOCK_FILE}.tmp`);
  try {
    const fh = await open(tmp, 'w');
    try {
      await fh.writeFile(JSON.stringify(sb, null, 2) + '\n');
      await fh.datasync();
    } finally {
      await fh.close();
    }
    await rename(tmp, join(dir, SUPERBLOCK_FILE));
    await fsyncDir(dir);
  } catch (err) {
    throw wrapFsError(err, `write ${SUPERBLOCK_FILE}`);
  }
  return sb;
}

/**
 * The controller's persisted configuration: written atomically (temp file, fsync, rename,
 * fsync of the directory) and synchronously, because nothing the controller emits after a
 * `persist` may happen before that state is durable.
 */
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import path from 'node:path';
import type { ControllerPersistedState } from '../machines/controller.js';

const fileName = 'controller.json';

export function loadControllerState(dir: string): ControllerPersistedState | null {
  const file = path.join(dir, fileName);
  if (!existsSync(file)) return null;
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new Error(`controller state ${file} is not valid JSON (${(err as Error).message}); restore it from a backup or remove it to start over at epoch 1`);
  }
  const s = parsed as Partial<ControllerPersistedState>;
  if (!Number.isSafeInteger(s.epoch) || !Array.isArray(s.chain) || typeof s.driverId !== 'string') {
    throw new Error(`controller state ${file} lacks epoch, chain or driverId`);
  }
  return s as ControllerPersistedState;
}

export function saveControllerState(dir: string, state: ControllerPersistedState): void {
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, fileName);
  const temp = `${file}.tmp`;
  const fd = openSync(temp, 'w');
  try {
    writeSync(fd, JSON.stringify(state, null, 2) + '\n');
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(temp, file);
  const dirFd = openSync(dir, 'r');
  try {
    fsyncSync(dirFd);
  } finally {
    closeSync(dirFd);
  }
}

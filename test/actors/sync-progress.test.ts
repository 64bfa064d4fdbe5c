import pino from 'pino';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { SyncProgress } from '../../actors/sync-progress.js';

function recordingLog() {
  const lines: Array<Record<string, unknown>> = [];
  const log = pino({ level: 'info' }, { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) });
  return { log, lines };
}

afterEach(() => {
  vi.useRealTimers();
});

describe('SyncProgress', () => {
  it('logs progress while a sync runs and one line when it catches up', () => {
    vi.useFakeTimers();
    const { log, lines } = recordingLog();
    let applied = 100;
    const p = new SyncProgress(log, () => applied, false);
    p.update({ mode: 'log', fromVersion: 100, targetVersion: 1100 });
    applied = 600;
    vi.advanceTimersByTime(2100);
    const progress = lines.filter((l) => l.msg === 'sync: progress');
    expect(progress).toHaveLength(1);
    expect(progress[0]).toMatchObject({ appliedVersion: 600, targetVersion: 1100, percent: 50 });
    applied = 1100;
    p.update(null);
    expect(lines.at(-1)).toMatchObject({ msg: 'sync: caught up', fromVersion: 100, appliedVersion: 1100 });
    p.stop();
  });

  it('says so when a sync ends before reaching its target', () => {
    const { log, lines } = recordingLog();
    const p = new SyncProgress(log, () => 5, false);
    p.update({ mode: 'image', fromVersion: 0, targetVersion: 50 });
    p.update(null);
    expect(lines.at(-1)).toMatchObject({ msg: 'sync: interrupted', mode: 'image', appliedVersion: 5 });
    p.stop();
  });
});

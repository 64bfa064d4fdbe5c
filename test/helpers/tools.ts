/**
 * Tests that need outside tools (binaries, root, /dev/fuse, loop devices): skip with the reason
 * printed when something is missing — or fail, when FREEBS_REQUIRE_TOOLS=1 (CI hosts that are
 * supposed to have everything).
 *
 *   const needs = requirements({ commands: ['nbdinfo'], root: true, devices: ['/dev/fuse'] });
 *   itWith(needs, 'lists exports', async () => { ... });
 */
import { execFileSync } from 'node:child_process';
import { accessSync, constants, existsSync } from 'node:fs';
import { it, type TestOptions } from 'vitest';

export interface Requirements {
  /** Executables that must be on PATH. */
  commands?: string[];
  /** Must run as root (mount, losetup). */
  root?: boolean;
  /** Device nodes that must exist and be read/writable (e.g. /dev/fuse, /dev/loop-control). */
  devices?: string[];
}

export interface RequirementCheck {
  /** Undefined when everything is there; otherwise what is missing, for a human. */
  missing: string | undefined;
}

export const requireTools = (): boolean => process.env.FREEBS_REQUIRE_TOOLS === '1';

const commandCache = new Map<string, boolean>();

export function hasCommand(command: string): boolean {
  let found = commandCache.get(command);
  if (found === undefined) {
    try {
      execFileSync('sh', ['-c', `command -v "$0"`, command], { stdio: 'ignore' });
      found = true;
    } catch {
      found = false;
    }
    commandCache.set(command, found);
  }
  return found;
}

export function requirements(req: Requirements): RequirementCheck {
  const missing: string[] = [];
  for (const c of req.commands ?? []) if (!hasCommand(c)) missing.push(`command ${c}`);
  if (req.root && process.getuid?.() !== 0) missing.push('root');
  for (const d of req.devices ?? []) {
    try {
      if (!existsSync(d)) throw new Error();
      accessSync(d, constants.R_OK | constants.W_OK);
    } catch {
      missing.push(`device ${d}`);
    }
  }
  return { missing: missing.length > 0 ? missing.join(', ') : undefined };
}

/**
 * `it` that honours requirements: runs when met; when not, skips with the reason printed, or —
 * under FREEBS_REQUIRE_TOOLS=1 — fails with it.
 */
export function itWith(check: RequirementCheck, name: string, fn: () => Promise<void> | void, options?: TestOptions): void {
  if (check.missing === undefined) {
    it(name, options ?? {}, fn);
  } else if (requireTools()) {
    it(name, () => {
      throw new Error(`missing ${check.missing} (FREEBS_REQUIRE_TOOLS=1)`);
    });
  } else {
    console.warn(`skipping "${name}": missing ${check.missing}`);
    it.skip(`${name} [skipped: missing ${check.missing}]`, fn);
  }
}

/**
 * Child processes for tests: run a command to completion with a deadline, or keep one running
 * in the background; every child is tracked by PID and stopped by PID (SIGTERM, then SIGKILL)
 * by `stopAll()` — call it in afterAll so nothing outlives the test file.
 */
import { type ChildProcess, spawn } from 'node:child_process';

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  durationMs: number;
}

export interface RunOptions {
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  input?: string | Buffer;
}

export class ProcessTracker {
  private readonly children = new Set<ChildProcess>();

  /** Run to completion; reject on timeout (after killing it). Never rejects for a non-zero exit. */
  run(command: string, args: string[], options: RunOptions = {}): Promise<RunResult> {
    const started = Date.now();
    const child = spawn(command, args, {
      env: options.env ?? process.env,
      cwd: options.cwd,
      stdio: [options.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    });
    this.children.add(child);
    if (options.input !== undefined) child.stdin!.end(options.input);
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    child.stdout!.on('data', (c: Buffer) => stdout.push(c));
    child.stderr!.on('data', (c: Buffer) => stderr.push(c));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.kill(child);
        reject(new Error(`${command} ${args.join(' ')} timed out after ${options.timeoutMs} ms\n${Buffer.concat(stderr).toString()}`));
      }, options.timeoutMs ?? 60_000);
      child.once('error', (err) => {
        clearTimeout(timer);
        this.children.delete(child);
        reject(err);
      });
      child.once('close', (code, signal) => {
        clearTimeout(timer);
        this.children.delete(child);
        resolve({
          code,
          signal,
          stdout: Buffer.concat(stdout).toString(),
          stderr: Buffer.concat(stderr).toString(),
          durationMs: Date.now() - started,
        });
      });
    });
  }

  /** Like run(), but throws with the output when the exit is not 0. */
  async runOk(command: string, args: string[], options: RunOptions = {}): Promise<RunResult> {
    const r = await this.run(command, args, options);
    if (r.code !== 0) {
      throw new Error(`${command} ${args.join(' ')} exited ${r.signal ?? r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
    }
    return r;
  }

  /** Start a long-running child (output collected in `output()`); stopped by stop()/stopAll(). */
  start(command: string, args: string[], options: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): BackgroundProcess {
    const child = spawn(command, args, { env: options.env ?? process.env, cwd: options.cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    this.children.add(child);
    let output = '';
    const keep = (c: Buffer) => {
      // Keep the tail only: enough for a failure message.
      output = (output + c.toString()).slice(-16_384);
    };
    child.stdout!.on('data', keep);
    child.stderr!.on('data', keep);
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.once('exit', () => this.children.delete(child));
    child.once('error', () => this.children.delete(child));
    return {
      child,
      pid: child.pid,
      output: () => output,
      exited,
      stop: (timeoutMs?: number) => this.stop(child, timeoutMs),
    };
  }

  /** SIGTERM by PID, SIGKILL after timeoutMs; resolves once it exited. */
  stop(child: ChildProcess, timeoutMs = 5000): Promise<void> {
    if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(() => this.kill(child), timeoutMs);
      child.once('exit', () => {
        clearTimeout(timer);
        resolve();
      });
      try {
        process.kill(child.pid!, 'SIGTERM');
      } catch {
        clearTimeout(timer);
        resolve();
      }
    });
  }

  async stopAll(): Promise<void> {
    await Promise.all([...this.children].map((c) => this.stop(c)));
  }

  private kill(child: ChildProcess): void {
    if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
    try {
      process.kill(child.pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
  }
}

export interface BackgroundProcess {
  child: ChildProcess;
  pid: number | undefined;
  output(): string;
  exited: Promise<void>;
  stop(timeoutMs?: number): Promise<void>;
}

/** Poll until check() is true (or returns a value), or throw after timeoutMs. */
export async function waitUntil<T>(check: () => T | Promise<T>, what: string, timeoutMs = 10_000, intervalMs = 20): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value as NonNullable<T>;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

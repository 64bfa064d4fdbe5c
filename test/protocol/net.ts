import WebSocket from 'ws';
import { decodeBatch, encodeBatch } from '../../protocol/codec.js';
import { DialingLink, type DialingLinkOptions } from '../../protocol/dialer.js';
import type { Batch, HelloFrame, WelcomeFrame } from '../../protocol/frames.js';
import type { Link } from '../../protocol/link.js';
import type { Logger } from '../../protocol/logger.js';
import { LinkServer, type LinkServerOptions } from '../../protocol/server.js';

export interface LogLine {
  level: string;
  obj: object;
  msg: string | undefined;
}

export function captureLogger(): { logger: Logger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const at = (level: string) => (obj: object, msg?: string) => void lines.push({ level, obj, msg });
  return { lines, logger: { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') } };
}

export async function waitFor(check: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

export const nextTurn = (): Promise<void> => new Promise((r) => setImmediate(r));

export const hello = (overrides: Partial<HelloFrame> = {}): HelloFrame => ({
  t: 'hello', role: 'driver', id: 'drv', epoch: 1, clusterId: 'c1', ...overrides,
});

export interface TestServer {
  server: LinkServer;
  url: string;
  port: number;
  /** Links accepted after hello, in order. */
  accepted: Link[];
  /** Every batch received on accepted links (after the hello). */
  batches: Batch[];
  lines: LogLine[];
}

/** A LinkServer on 127.0.0.1:port (0 = any) whose owner welcomes every hello and records batches. */
export async function startServer(options: Partial<LinkServerOptions> = {}, port = 0): Promise<TestServer> {
  const { logger, lines } = captureLogger();
  const accepted: Link[] = [];
  const batches: Batch[] = [];
  const server = new LinkServer({
    localId: 'srv',
    clusterId: 'c1',
    logger,
    port,
    onLink: (link, h) => {
      accepted.push(link);
      link.on('batch', (b) => batches.push(b));
      link.send({ t: 'welcome', role: 'replica', id: 'srv', epoch: h.epoch, appliedVersion: 0 });
    },
    ...options,
  });
  const address = await server.listen();
  return { server, url: address.url, port: address.port, accepted, batches, lines };
}

export function dial(url: string, options: Partial<DialingLinkOptions> = {}): { dialer: DialingLink; lines: LogLine[] } {
  const { logger, lines } = captureLogger();
  const dialer = new DialingLink({ url, hello: hello(), logger, ...options });
  return { dialer, lines };
}

export function upOnce(dialer: DialingLink): Promise<[WelcomeFrame, Link]> {
  return new Promise((resolve) => dialer.once('up', (w, l) => resolve([w, l])));
}

/** A plain ws client that speaks raw bytes, for feeding a server what a Link never would. */
export class RawClient {
  readonly messages: Buffer[] = [];
  readonly closed: Promise<{ code: number; reason: string }>;
  private constructor(readonly ws: WebSocket) {
    ws.on('message', (data) => this.messages.push(data as Buffer));
    ws.on('error', () => {});
    this.closed = new Promise((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() })));
  }

  static async open(url: string): Promise<RawClient> {
    const ws = new WebSocket(url, { perMessageDeflate: false });
    const client = new RawClient(ws);
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    return client;
  }

  sendBatch(batch: Batch): void {
    this.ws.send(encodeBatch(batch));
  }

  async nextBatch(): Promise<Batch> {
    await waitFor(() => this.messages.length > 0, 'a message from the server');
    return decodeBatch(this.messages.shift()!);
  }

  close(): void {
    this.ws.terminate();
  }
}

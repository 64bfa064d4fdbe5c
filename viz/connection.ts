/**
 * The live trace from the controller that served this page: a WebSocket to /viz/events that
 * redials (with backoff, at most every few seconds) when the controller restarts. Each (re)connect
 * begins with a hello carrying the charts and the controller's history.
 */
import type { ChartGraph, TraceRecord, VizMessage } from '../protocol/trace.js';

export type ConnectionState = 'connecting' | 'open' | 'closed';

export interface ConnectionHandlers {
  hello(source: string, charts: ChartGraph[], history: TraceRecord[]): void;
  records(records: TraceRecord[]): void;
  state(state: ConnectionState, detail: string): void;
}

const retryMinMs = 250;
const retryMaxMs = 4000;

export class LiveConnection {
  private ws: WebSocket | null = null;
  private retryMs = retryMinMs;
  private timer: number | null = null;
  private stopped = false;

  constructor(
    private readonly url: string,
    private readonly handlers: ConnectionHandlers,
  ) {}

  start(): void {
    this.stopped = false;
    this.dial();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer !== null) clearTimeout(this.timer);
    this.ws?.close();
    this.ws = null;
  }

  private dial(): void {
    this.handlers.state('connecting', this.url);
    const ws = new WebSocket(this.url);
    this.ws = ws;
    ws.onopen = () => {
      this.retryMs = retryMinMs;
      this.handlers.state('open', this.url);
    };
    ws.onmessage = (e: MessageEvent) => {
      if (typeof e.data !== 'string') return;
      let msg: VizMessage;
      try {
        msg = JSON.parse(e.data) as VizMessage;
      } catch {
        return;
      }
      if (msg.t === 'hello') this.handlers.hello(msg.source, msg.charts, msg.history);
      else if (msg.t === 'records') this.handlers.records(msg.records);
    };
    ws.onclose = (e: CloseEvent) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.handlers.state('closed', e.reason || `closed (${e.code})`);
      if (this.stopped) return;
      this.timer = window.setTimeout(() => this.dial(), this.retryMs);
      this.retryMs = Math.min(retryMaxMs, this.retryMs * 2);
    };
  }
}

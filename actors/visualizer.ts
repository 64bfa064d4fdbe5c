/**
 * The machine visualizer, served by the controller on its own port: the page at `/`, its live
 * trace over a WebSocket at `/viz/events`, the history so far at `/viz/trace.json`.
 *
 * The controller feeds it what it sees (inspection events of its actor, its emitted intentions,
 * heartbeats, error frames, links coming and going); a recorder turns that into trace records
 * and a stream keeps and sends them. Read-only: the page cannot change anything, so it needs no
 * credential, like /status — but a WebSocket from another site's page is refused (Origin check),
 * so a browser cannot be used to read the cluster's state from elsewhere.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { WebSocketServer } from 'ws';
import type { InspectionEvent } from 'xstate';
import type { ControllerEmitted, ControllerStatus } from '../machines/controller.js';
import type { ErrorFrame, HeartbeatFrame, MemberId } from '../protocol/frames.js';
import { statechartGraphs } from './statecharts.js';
import { servePage } from './viz-page.js';
import { ClusterRecorder } from './viz-recorder.js';
import { TraceStream } from './viz-stream.js';

export const vizEventsPath = '/viz/events';
export const vizTracePath = '/viz/trace.json';

export interface VisualizerOptions {
  heartbeatMs: number;
  status: () => ControllerStatus;
  linked: () => ReadonlySet<MemberId>;
  /** The page's address once known, for saved runs. */
  source: () => string;
  log: Logger;
}

export class Visualizer {
  readonly recorder: ClusterRecorder;
  readonly stream: TraceStream;
  private readonly wss = new WebSocketServer({ noServer: true, maxPayload: 4096, perMessageDeflate: false, clientTracking: false });
  private timer: NodeJS.Timeout | null = null;
  private checkTimer: NodeJS.Timeout | null = null;

  constructor(private readonly options: VisualizerOptions) {
    this.stream = new TraceStream({ charts: statechartGraphs, source: options.source, log: options.log });
    this.recorder = new ClusterRecorder({
      heartbeatMs: options.heartbeatMs,
      status: options.status,
      linked: options.linked,
      record: (r) => this.stream.push(r),
    });
    this.wss.on('error', (err) => options.log.warn({ err: err.message }, 'visualizer socket error'));
  }

  /** The picture every T; missed heartbeats looked for four times per T. */
  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => this.recorder.tick(), this.options.heartbeatMs);
    this.timer.unref();
    this.checkTimer = setInterval(() => this.recorder.checkHeartbeats(), Math.max(10, this.options.heartbeatMs / 4));
    this.checkTimer.unref();
  }

  close(): void {
    if (this.timer) clearInterval(this.timer);
    if (this.checkTimer) clearInterval(this.checkTimer);
    this.timer = null;
    this.checkTimer = null;
    this.stream.close();
    this.wss.close();
  }

  // What the controller feeds in.
  readonly inspect = (ev: InspectionEvent): void => this.recorder.inspect(ev);
  emitted(e: ControllerEmitted): void {
    this.recorder.emitted(e);
  }
  heartbeat(frame: HeartbeatFrame): void {
    this.recorder.heartbeat(frame);
  }
  memberError(id: MemberId, frame: ErrorFrame): void {
    this.recorder.memberError(id, frame);
  }
  linkChanged(id: MemberId, up: boolean): void {
    this.recorder.linkChanged(id, up);
  }

  /** The page, its files and the trace download; false for any other request. */
  http(req: IncomingMessage, res: ServerResponse): boolean {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method === 'GET' && path === vizTracePath) {
      const file = this.stream.file();
      res.writeHead(200, {
        'content-type': 'application/json',
        'cache-control': 'no-store',
        'content-disposition': `attachment; filename="freebs-trace-${new Date(file.savedAtMs).toISOString().replace(/[:.]/g, '-')}.json"`,
      });
      res.end(JSON.stringify(file));
      return true;
    }
    return servePage(req, res);
  }

  /** A WebSocket upgrade on the controller's port: ours when it asks for /viz/events. */
  upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): boolean {
    if ((req.url ?? '').split('?')[0] !== vizEventsPath) return false;
    const origin = req.headers.origin;
    if (origin !== undefined && !sameOrigin(origin, req.headers.host)) {
      socket.end('HTTP/1.1 403 Forbidden\r\nconnection: close\r\ncontent-type: text/plain\r\n\r\nthe visualizer stream is for pages served by this controller\n');
      return true;
    }
    this.wss.handleUpgrade(req, socket, head, (ws) => this.stream.attach(ws));
    return true;
  }
}

function sameOrigin(origin: string, host: string | undefined): boolean {
  try {
    return host !== undefined && new URL(origin).host === host;
  } catch {
    return false;
  }
}

/**
 * The visualizer's vocabulary: what the controller streams to the page (WebSocket at
 * `/viz/events`), and what a recorded run saved from the page (or fetched from
 * `/viz/trace.json`) holds. One format for the live page and for replay, so a run saved during a
 * fault injection opens in the same page as a live cluster.
 *
 * JSON only (the page reads it with JSON.parse); never block data. Types and one pure helper:
 * the browser code in viz/ imports this file too.
 */
import type { MemberId } from './frames.js';

export const traceFormat = 'freebs-trace';
export const traceFormatVersion = 1;

/** The machines of machines/, by their XState ids. */
export type MachineName = 'controller' | 'liveness' | 'replica' | 'driver';
export type Liveness = 'active' | 'inactive' | 'failed';

// ---------------------------------------------------------------------------------------------
// Statecharts. The controller turns each machine's definition into a graph (states with their
// sizes, transitions with their labels) in ELK's JSON shape; the page lays it out with elkjs in a
// web worker (never on the controller's event loop, whose heartbeat timing matters) and draws it.

/** A node of ELK's JSON graph: a state, or a pseudo-state marker. */
export interface ChartGraphNode {
  id: string;
  width?: number;
  height?: number;
  layoutOptions?: Record<string, string>;
  children?: ChartGraphNode[];
}

export interface ChartGraphEdge {
  id: string;
  sources: string[];
  targets: string[];
  labels?: Array<{ text: string; width: number; height: number }>;
}

/** One machine's chart before layout: ELK's input plus what the drawing needs about each state. */
export interface ChartGraph {
  machine: MachineName;
  elk: ChartGraphNode & { edges: ChartGraphEdge[] };
  states: Record<string, { label: string; parent: string | null; kind: ChartState['kind']; internal: string[] }>;
}

// What the page draws, after layout.

export interface ChartState {
  /** The XState node id: `replica.serving`, `liveness.active.waiting`. */
  id: string;
  label: string;
  /** Enclosing state's id; null for the machine's top-level states. */
  parent: string | null;
  kind: 'atomic' | 'compound' | 'final';
  /** Absolute position in the chart. */
  x: number;
  y: number;
  width: number;
  height: number;
  /** Events handled here without leaving the state (actions only), listed inside the box. */
  internal: string[];
}

/** Pseudo-states drawn as small shapes: the initial dot of a region, and "any state" for machine-wide events. */
export interface ChartMarker {
  id: string;
  kind: 'initial' | 'any';
  x: number;
  y: number;
  width: number;
  height: number;
}

export interface ChartEdge {
  id: string;
  source: string;
  target: string;
  /** Event type, `after <delay>`, `always`; with `[guard]` when guarded. */
  label: string;
  /** Polyline, absolute coordinates. */
  points: Array<[number, number]>;
  labelBox: { x: number; y: number; width: number; height: number } | null;
}

export interface ChartLayout {
  machine: MachineName;
  width: number;
  height: number;
  states: ChartState[];
  markers: ChartMarker[];
  edges: ChartEdge[];
}

// ---------------------------------------------------------------------------------------------
// The cluster as the controller sees it, once per heartbeat period.

export interface NodeView {
  id: MemberId;
  kind: 'driver' | 'replica';
  /** Place in the chain; `pending` for a replacement that was started but has not reported in. */
  role: 'head' | 'middle' | 'tail' | 'driver' | 'retired' | 'pending';
  liveness: Liveness | null;
  /** The member's own machine state from its heartbeats (joining/syncing/serving, attached…). */
  state: string;
  caughtUp: boolean;
  appliedVersion: number;
  durableVersion: number;
  /** Versions behind the head (chain members only). */
  lagVersions: number | null;
  epoch: number;
  msSinceHeartbeat: number | null;
  /** While syncing: share of the way from where the sync started to the head's version, 0…1. */
  syncProgress: number | null;
  /** Whether the controller holds a link to it now. */
  controllerLink: boolean;
}

/**
 * `chain`: a data link (driver → head → … → tail). `up` when an end heard the other within 2T,
 * `idle` when both ends are alive in the current epoch but no traffic was heard lately (links
 * carry no keepalive of their own), `down` when an end is not active.
 */
export interface LinkView {
  from: MemberId;
  to: MemberId;
  state: 'up' | 'idle' | 'down';
}

/** The volume's I/O at the driver, as rates over the last heartbeat interval. */
export interface IoView {
  iops: number;
  readMBps: number;
  writeMBps: number;
  latencyMsP50: number;
  latencyMsP99: number;
  /** Failed requests since the driver started. */
  errors: number;
}

export interface ClusterView {
  clusterId: string;
  volume: { name: string; sizeBytes: number };
  epoch: number;
  heartbeatMs: number;
  /** Silence after which the controller calls a member inactive (2T), and failed (4T). */
  inactiveAfterMs: number;
  failedAfterMs: number;
  /** Chain of the current epoch, head first. */
  chain: MemberId[];
  driverId: MemberId;
  quorum: number;
  replicaCount: number;
  pendingReplacements: MemberId[];
  nodes: Record<MemberId, NodeView>;
  links: LinkView[];
  io: IoView | null;
}

// ---------------------------------------------------------------------------------------------
// Trace records: `seq` orders them (one counter at the controller), `atMs` is its wall clock.

export interface TraceBase {
  seq: number;
  atMs: number;
}

/** The whole picture, every heartbeat period T. */
export interface StatusRecord extends TraceBase {
  kind: 'status';
  cluster: ClusterView;
}

/**
 * A machine changed state. The controller's own machine and its liveness children come from
 * XState inspection; replicas and the driver report theirs in heartbeats.
 */
export interface StateRecord extends TraceBase {
  kind: 'state';
  /** `controller`, or the member the machine belongs to (a liveness machine: the member it watches). */
  node: string;
  machine: MachineName;
  /** Dotted state path: `serving`, `inactive.waiting`. */
  value: string;
  from: string | null;
  /** The event that caused it, when known. */
  event: string | null;
}

export type TraceEventType =
  | 'heartbeat-missed'
  | 'liveness'
  | 'epoch'
  | 'replacement'
  | 'retire'
  | 'sync-start'
  | 'sync-progress'
  | 'sync-end'
  | 'io-error'
  | 'member-error'
  | 'alert'
  | 'link';

export interface TraceEvent extends TraceBase {
  kind: 'event';
  type: TraceEventType;
  node: string | null;
  /** One line for a person. */
  text: string;
  data?: Record<string, number | string | boolean | null | string[]>;
}

export type TraceRecord = StatusRecord | StateRecord | TraceEvent;

/** A saved run. */
export interface TraceFile {
  format: typeof traceFormat;
  version: typeof traceFormatVersion;
  savedAtMs: number;
  /** Where it was recorded (the controller's address, or a file name). */
  source: string;
  charts: ChartGraph[];
  records: TraceRecord[];
}

/** Controller → page over /viz/events. */
export type VizMessage =
  | { t: 'hello'; format: typeof traceFormat; version: typeof traceFormatVersion; source: string; charts: ChartGraph[]; history: TraceRecord[] }
  | { t: 'records'; records: TraceRecord[] };

/** `{ active: 'waiting' }` → `active.waiting`: one active leaf per machine (ours have no parallel states). */
export function statePath(value: unknown): string {
  if (typeof value === 'string') return value;
  if (typeof value === 'object' && value !== null) {
    const [key, child] = Object.entries(value as Record<string, unknown>)[0] ?? [];
    if (key === undefined) return '';
    const rest = statePath(child);
    return rest === '' ? key : `${key}.${rest}`;
  }
  return String(value);
}

/**
 * The visualizer page: wires the live connection (or a loaded file) to the recording, and the
 * recording to the views. Every view draws the world at the recording's cursor; drawing is
 * coalesced to one pass per animation frame.
 */
import type { ChartGraph } from '../protocol/trace.js';
import { layoutChart } from './chart-layout.js';
import { layoutEngine } from './elk-worker.js';
import { ChainView } from './chain-view.js';
import { LiveConnection } from './connection.js';
import { byId, el } from './dom.js';
import { IoChart } from './io-chart.js';
import { MachineTable } from './machine-table.js';
import { Recording } from './recording.js';
import { StatechartView } from './statechart-view.js';
import { TimelineView } from './timeline-view.js';
import { bytes } from './format.js';
import { download } from './download.js';
import { fileNameFor, parseTraceFile, toTraceFile } from './trace-file.js';
import { clusterAt, machineInstances } from './world.js';

const recording = new Recording();
let selected: string | null = null;
let charts: StatechartView[] = [];

const select = (id: string): void => {
  selected = id;
  chain.select(id);
  for (const c of charts) if (c.chart.machine !== 'controller') c.select(id);
  schedule();
};

const chain = new ChainView(select);
const io = new IoChart();
const table = new MachineTable(select);
const timeline = new TimelineView(recording);

byId('chain').append(chain.element);
byId('io').append(io.element);
byId('timeline').append(timeline.element);
byId('machines').append(table.element);

let chartsFor: ChartGraph[] | null = null;

/** Lay out (in the worker) and draw the charts of a new recording; the same graphs are kept. */
async function buildCharts(graphs: ChartGraph[]): Promise<void> {
  if (graphs === chartsFor || JSON.stringify(graphs) === JSON.stringify(chartsFor)) return;
  chartsFor = graphs;
  const box = byId('charts');
  if (graphs.length === 0) {
    charts = [];
    box.replaceChildren(el('p', { class: 'muted' }, 'this run carries no statecharts'));
    return;
  }
  try {
    const layouts = await Promise.all(graphs.map((g) => layoutChart(g, layoutEngine())));
    if (chartsFor !== graphs) return;
    charts = layouts.map((layout) => new StatechartView(layout, (node) => layout.machine !== 'controller' && select(node)));
    if (selected !== null) for (const c of charts) if (c.chart.machine !== 'controller') c.select(selected);
    box.replaceChildren(...charts.map((c) => c.element));
    box.dataset.ready = 'true';
    schedule();
  } catch (err) {
    box.replaceChildren(el('p', { class: 'muted' }, `statechart layout failed: ${(err as Error).message}`));
  }
}

// ---- drawing ----------------------------------------------------------------------------------

let scheduled = false;
function schedule(): void {
  if (scheduled) return;
  scheduled = true;
  // A hidden tab gets no animation frames: the timer draws then (at a slower pace).
  const draw = () => {
    if (!scheduled) return;
    scheduled = false;
    render();
  };
  requestAnimationFrame(draw);
  setTimeout(draw, 250);
}

function render(): void {
  const world = recording.current;
  chain.render(world);
  io.render(recording.records, recording.cursor);
  table.render(world);
  const instances = machineInstances(world);
  const cluster = clusterAt(world);
  if (selected === null && cluster?.chain[0] !== undefined) {
    // Until a member is picked, the charts follow the head.
    selected = cluster.chain[0];
    chain.select(selected);
    for (const c of charts) if (c.chart.machine !== 'controller') c.select(selected);
  }
  const gone = new Set(Object.values(cluster?.nodes ?? {}).filter((n) => n.liveness === 'failed').map((n) => n.id));
  for (const c of charts) c.render(instances, world.atMs, gone);
  const epoch = byId('epoch');
  epoch.textContent = cluster ? `epoch ${cluster.epoch}` : 'epoch —';
  epoch.dataset.epoch = cluster ? String(cluster.epoch) : '';
  const nodes = cluster?.nodes ?? {};
  byId('summary').textContent = cluster
    ? `${cluster.clusterId} · ${cluster.volume.name} (${bytes(cluster.volume.sizeBytes)}) · chain ${cluster.chain.map((id) => `${id}${nodes[id]?.state === 'serving' ? '' : ` (${nodes[id]?.state ?? '?'})`}`).join(' → ') || 'empty'}`
    : '';
  const mode = byId('mode');
  mode.textContent = recording.mode === 'replay' ? `replaying ${recording.source}` : recording.following ? 'live' : 'paused';
  mode.dataset.mode = recording.mode === 'replay' ? 'replay' : recording.following ? 'live' : 'paused';
  byId('back-to-live').hidden = recording.mode !== 'replay' || !live;
}

recording.onChange((change) => {
  if (change.kind === 'reset') void buildCharts(recording.charts);
  schedule();
});

// ---- live, save, load ------------------------------------------------------------------------

const conn = byId('connection');
const live =
  location.protocol === 'http:' || location.protocol === 'https:'
    ? new LiveConnection(`${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/viz/events`, {
        hello: (source, layouts, history) => {
          if (recording.mode === 'replay' && recording.records.length > 0 && !followLive) return;
          recording.reset({ mode: 'live', source, charts: layouts, records: history });
        },
        records: (records) => {
          if (recording.mode === 'live') recording.append(records);
        },
        state: (state, detail) => {
          conn.textContent = state === 'open' ? 'connected' : state === 'connecting' ? 'connecting…' : `disconnected: ${detail}`;
          conn.dataset.state = state;
        },
      })
    : null;
/** Set when the user asked to go back to live after a replay. */
let followLive = true;
live?.start();
if (!live) conn.textContent = 'offline: load a saved run';

byId('save').addEventListener('click', () => {
  const now = Date.now();
  download(toTraceFile(recording.source || location.host, recording.charts, recording.records, now), fileNameFor(now));
});

const loadInput = byId<HTMLInputElement>('load');
loadInput.addEventListener('change', async () => {
  const file = loadInput.files?.[0];
  if (!file) return;
  const status = byId('load-status');
  try {
    const trace = parseTraceFile(await file.text(), file.name);
    followLive = false;
    recording.reset({ mode: 'replay', source: file.name, charts: trace.charts.length > 0 ? trace.charts : recording.charts, records: trace.records });
    // Open at the first record: replay from the start.
    if (recording.records.length > 0) recording.seek(0);
    status.textContent = `loaded ${file.name}: ${trace.records.length} records recorded at ${trace.source}`;
  } catch (err) {
    status.textContent = `could not load ${file.name}: ${(err as Error).message}`;
  } finally {
    loadInput.value = '';
  }
});

byId('back-to-live').addEventListener('click', () => {
  followLive = true;
  byId('load-status').textContent = '';
  live?.stop();
  live?.start();
});

// Arrow keys step through the listed entries when paused.
document.addEventListener('keydown', (e) => {
  if (e.target instanceof HTMLInputElement || e.target instanceof HTMLSelectElement) return;
  if (e.key !== 'ArrowLeft' && e.key !== 'ArrowRight') return;
  const listed = [...document.querySelectorAll<HTMLElement>('.timeline li.entry')].map((li) => Number(li.dataset.seq));
  const seqAt = recording.records[recording.cursor]?.seq ?? -1;
  const target = e.key === 'ArrowRight' ? listed.find((s) => s > seqAt) : [...listed].reverse().find((s) => s < seqAt);
  if (target === undefined) return;
  const index = recording.records.findIndex((r) => r.seq === target);
  if (index >= 0) recording.seek(index);
  e.preventDefault();
});

byId('charts').append(el('p', { class: 'muted' }, 'waiting for the statecharts…'));
schedule();

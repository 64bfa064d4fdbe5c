/**
 * Fault-injection scenarios (deploy/faults/*.yaml): a cluster shape, a workload, a timed list of
 * steps and what the verdict expects. Validated with zod; an error names the key that is wrong
 * (`steps[2].kill: …`). The format is documented in deploy/faults/README.md.
 *
 * Times are `500ms`, `2s`, `1.5s`, `3T` (multiples of the heartbeat period T, so one scenario
 * runs with any T), sums of those (`4T+1s`) or plain numbers (ms). They are resolved against T
 * when the run starts.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';

// ---- times and sizes ------------------------------------------------------------------------

/** A time before T is known: fixed ms plus a multiple of T. */
export interface Duration {
  ms: number;
  t: number;
  text: string;
}

const durationPart = /^(\d+(?:\.\d+)?)\s*(ms|s|T)$/;

export function parseDuration(input: string | number): Duration {
  if (typeof input === 'number') {
    if (!(input >= 0) || !Number.isFinite(input)) throw new Error(`expected a time ≥ 0, got ${input}`);
    return { ms: input, t: 0, text: `${input}ms` };
  }
  const text = input.trim();
  let ms = 0;
  let t = 0;
  for (const part of text.split('+')) {
    const m = durationPart.exec(part.trim());
    if (!m) throw new Error(`"${input}" is not a time: write e.g. 500ms, 2s, 3T (heartbeat periods) or 4T+1s`);
    const n = Number(m[1]);
    if (m[2] === 'ms') ms += n;
    else if (m[2] === 's') ms += n * 1000;
    else t += n;
  }
  return { ms, t, text };
}

export function resolveMs(d: Duration, heartbeatMs: number): number {
  return Math.round(d.ms + d.t * heartbeatMs);
}

const sizeUnits: Record<string, number> = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 };

export function parseSize(input: string | number): number {
  if (typeof input === 'number') return input;
  const m = /^(\d+(?:\.\d+)?)\s*([kmg]?)(?:i?b)?$/i.exec(input.trim());
  if (!m) throw new Error(`"${input}" is not a size: write e.g. 4MiB, 64M, 1G`);
  return Math.round(Number(m[1]) * sizeUnits[m[2].toLowerCase()]);
}

const duration = z.union([z.string(), z.number()]).transform((v, ctx) => {
  try {
    return parseDuration(v);
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: (err as Error).message });
    return z.NEVER;
  }
});

const size = z.union([z.string(), z.number()]).transform((v, ctx) => {
  try {
    return parseSize(v);
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: (err as Error).message });
    return z.NEVER;
  }
});

// ---- targets --------------------------------------------------------------------------------

/**
 * Who a step acts on. head/middle/tail are looked up in the controller's chain when the step
 * runs; rN names a replica (the ones the run starts are r1…rN, replacements continue the count).
 */
export type Target = string;
const targetPattern = /^(head|middle|tail|driver|controller|r\d+)$/;
const target = z.string().regex(targetPattern, { message: 'expected head, middle, tail, driver, controller or a replica id like r2' });
const replicaTarget = z.string().regex(/^(head|middle|tail|r\d+)$/, { message: 'expected head, middle, tail or a replica id like r2' });
const sources = z.array(target).min(1);

// ---- steps ----------------------------------------------------------------------------------

const actions = ['kill', 'term', 'stop', 'cont', 'restart', 'partition', 'heal', 'drop', 'delay', 'slow-disk', 'corrupt', 'scrub', 'wait', 'pause', 'resume', 'resize'] as const;
export type ActionName = (typeof actions)[number];

const stepSchema = z
  .strictObject({
    /** Not before this time from the start of the workload (steps run one after another, in order). */
    at: duration,
    /** Run this step `times` times, `every` apart (a flapping link: a partition and a heal, repeated). */
    repeat: z.strictObject({ times: z.number().int().min(1).max(1000), every: duration }).optional(),
    /** A comment shown in the timeline. */
    note: z.string().optional(),
    kill: target.optional(),
    term: target.optional(),
    stop: target.optional(),
    cont: target.optional(),
    restart: target.optional(),
    /** restart: the member must refuse to start (e.g. its log is corrupt) instead of coming up. */
    expect: z.literal('refused').optional(),
    partition: target.optional(),
    heal: z.union([target, z.literal('all')]).optional(),
    drop: target.optional(),
    delay: duration.optional(),
    /** delay: the member whose inbound links are slowed. */
    to: target.optional(),
    /** partition/heal/drop/delay: only the links these members dial into the target. */
    from: sources.optional(),
    /** A slow disk on a replica: every segment write and fdatasync waits `latency` (reads too with `reads: true`). */
    'slow-disk': replicaTarget.optional(),
    latency: duration.optional(),
    reads: z.boolean().optional(),
    corrupt: replicaTarget.optional(),
    scrub: z.enum(['check', 'repair']).optional(),
    wait: z.union([z.literal('healed'), duration]).optional(),
    pause: z.literal('workload').optional(),
    resume: z.literal('workload').optional(),
    resize: replicaTarget.optional(),
    /** resize: the new size of the member's tmpfs. */
    size: size.optional(),
  })
  .superRefine((step, ctx) => {
    const present = actions.filter((a) => step[a] !== undefined);
    if (present.length !== 1) {
      ctx.addIssue({
        code: 'custom',
        message: present.length === 0 ? `a step needs one action: ${actions.join(', ')}` : `a step has one action, this one has ${present.join(' and ')}`,
      });
      return;
    }
    const action = present[0];
    const onlyWith = (key: 'to' | 'from' | 'expect' | 'size' | 'latency' | 'reads', allowed: ActionName[]) => {
      if (step[key] !== undefined && !allowed.includes(action)) ctx.addIssue({ code: 'custom', path: [key], message: `"${key}" does not go with ${action} (only with ${allowed.join(', ')})` });
    };
    onlyWith('to', ['delay']);
    onlyWith('from', ['partition', 'heal', 'drop', 'delay']);
    onlyWith('expect', ['restart']);
    onlyWith('size', ['resize']);
    onlyWith('latency', ['slow-disk']);
    onlyWith('reads', ['slow-disk']);
    if (action === 'slow-disk' && step.latency === undefined) ctx.addIssue({ code: 'custom', path: ['latency'], message: 'slow-disk needs "latency": how long each write and fdatasync waits, e.g. 50ms' });
    if (action === 'delay' && step.to === undefined) ctx.addIssue({ code: 'custom', path: ['to'], message: 'delay needs "to": the member whose inbound links are slowed' });
    if (action === 'resize' && step.size === undefined) ctx.addIssue({ code: 'custom', path: ['size'], message: 'resize needs "size", e.g. 256MiB' });
    if (action === 'heal' && step.heal === 'all' && step.from !== undefined) ctx.addIssue({ code: 'custom', path: ['from'], message: '"heal: all" heals every link; drop "from"' });
  });

type RawStep = z.output<typeof stepSchema>;

export type Step =
  | { action: 'kill' | 'term' | 'stop' | 'cont' | 'restart'; target: Target; expectRefused: boolean }
  | { action: 'partition' | 'drop'; target: Target; from: Target[] | null }
  | { action: 'heal'; target: Target | 'all'; from: Target[] | null }
  | { action: 'delay'; target: Target; from: Target[] | null; delay: Duration }
  | { action: 'slow-disk'; target: Target; latency: Duration; reads: boolean }
  | { action: 'corrupt'; target: Target }
  | { action: 'scrub'; mode: 'check' | 'repair' }
  | { action: 'wait'; until: 'healed' | Duration }
  | { action: 'pause' | 'resume' }
  | { action: 'resize'; target: Target; sizeBytes: number };

/** A step with its time; `index` is its place in the file (repeats share it). */
export type TimedStep = Step & { at: Duration; index: number; repetition: number; note?: string; text: string };

// ---- the scenario ---------------------------------------------------------------------------

const scenarioSchema = z.strictObject({
  name: z.string().regex(/^[\w.-]+$/, { message: 'letters, digits, - _ . only' }).optional(),
  description: z.string().optional(),
  replicas: z.number().int().min(1).max(9).default(3),
  /** T. `freebs inject --heartbeat-ms` overrides it (the CI profile runs everything at 250 ms). */
  heartbeatMs: z.number().int().min(20).max(60_000).default(500),
  sizeBytes: size.default(64 * 1024 * 1024),
  /** How long the workload runs, from its start (the run goes on until the last step is done). */
  duration: duration,
  workload: z
    .strictObject({
      blocks: z.number().int().min(1).default(2048),
      blockBytes: z.number().int().min(512).multipleOf(512).default(4096),
      queueDepth: z.number().int().min(1).max(256).default(8),
      flushEvery: z.number().int().min(0).default(64),
      seed: z.number().int().default(1),
    })
    .prefault({}),
  /** Members whose data directory is a tmpfs of this size (needs root): disk-full faults. */
  tmpfs: z.record(z.string().regex(/^r\d+$/, { message: 'a replica id like r3' }), size).optional(),
  steps: z.array(stepSchema).default([]),
  expect: z
    .strictObject({
      /** Kinds of client errors the scenario may cause (e.g. connection, when the driver is killed). */
      clientErrors: z.array(z.string()).default([]),
      /** The worst stall (no request completing while some are outstanding) may not exceed this. */
      maxStall: duration.optional(),
      /** After the last fault, the chain must be whole again within this. */
      healWithin: duration.default(parseDuration('30s')),
      /** The chain members' LSVDs must hash the same at the end. */
      identical: z.boolean().default(true),
    })
    .prefault({}),
});

export type Scenario = Omit<z.output<typeof scenarioSchema>, 'steps' | 'name'> & { name: string; file: string | null; steps: TimedStep[] };

export class ScenarioError extends Error {
  readonly code = 'ERR_SCENARIO';
}

/** `steps.2.kill` → `steps[2].kill`. */
function keyPath(p: ReadonlyArray<PropertyKey>): string {
  let out = '';
  for (const k of p) out += typeof k === 'number' ? `[${k}]` : out === '' ? String(k) : `.${String(k)}`;
  return out === '' ? '(top level)' : out;
}

function describeIssues(error: z.ZodError): string {
  return error.issues
    .map((i) => {
      let message = i.message;
      if (i.code === 'unrecognized_keys') message = `unknown key${i.keys.length > 1 ? 's' : ''} ${i.keys.map((k) => `"${k}"`).join(', ')}`;
      return `${keyPath(i.path)}: ${message}`;
    })
    .join('\n');
}

function toStep(raw: RawStep): Step {
  if (raw.kill !== undefined) return { action: 'kill', target: raw.kill, expectRefused: false };
  if (raw.term !== undefined) return { action: 'term', target: raw.term, expectRefused: false };
  if (raw.stop !== undefined) return { action: 'stop', target: raw.stop, expectRefused: false };
  if (raw.cont !== undefined) return { action: 'cont', target: raw.cont, expectRefused: false };
  if (raw.restart !== undefined) return { action: 'restart', target: raw.restart, expectRefused: raw.expect === 'refused' };
  if (raw.partition !== undefined) return { action: 'partition', target: raw.partition, from: raw.from ?? null };
  if (raw.drop !== undefined) return { action: 'drop', target: raw.drop, from: raw.from ?? null };
  if (raw.heal !== undefined) return { action: 'heal', target: raw.heal, from: raw.from ?? null };
  if (raw.delay !== undefined) return { action: 'delay', target: raw.to!, from: raw.from ?? null, delay: raw.delay };
  if (raw['slow-disk'] !== undefined) return { action: 'slow-disk', target: raw['slow-disk'], latency: raw.latency!, reads: raw.reads ?? false };
  if (raw.corrupt !== undefined) return { action: 'corrupt', target: raw.corrupt };
  if (raw.scrub !== undefined) return { action: 'scrub', mode: raw.scrub };
  if (raw.wait !== undefined) return { action: 'wait', until: raw.wait };
  if (raw.pause !== undefined) return { action: 'pause' };
  if (raw.resume !== undefined) return { action: 'resume' };
  return { action: 'resize', target: raw.resize!, sizeBytes: raw.size! };
}

/** One line for the timeline: `kill head`, `partition head from driver, middle`, `delay tail 200ms`. */
export function describeStep(step: Step): string {
  switch (step.action) {
    case 'partition':
    case 'drop':
    case 'heal':
      return `${step.action} ${step.target}${step.from ? ` from ${step.from.join(', ')}` : ''}`;
    case 'delay':
      return `delay ${step.target} ${step.delay.text}${step.from ? ` from ${step.from.join(', ')}` : ''}`;
    case 'slow-disk':
      return `slow disk on ${step.target}: ${step.latency.text} per write and fdatasync${step.reads ? ' and read' : ''}`;
    case 'scrub':
      return `scrub (${step.mode})`;
    case 'wait':
      return `wait ${typeof step.until === 'string' ? step.until : step.until.text}`;
    case 'pause':
    case 'resume':
      return `${step.action} workload`;
    case 'resize':
      return `resize ${step.target} to ${step.sizeBytes} bytes`;
    case 'restart':
      return `restart ${step.target}${step.expectRefused ? ' (must refuse)' : ''}`;
    default:
      return `${step.action} ${step.target}`;
  }
}

/** Validate a parsed document; `source` names it in errors. */
export function parseScenario(doc: unknown, source: string, file: string | null = null): Scenario {
  const result = scenarioSchema.safeParse(doc);
  if (!result.success) throw new ScenarioError(`${source} is not a valid scenario:\n${describeIssues(result.error)}`);
  const s = result.data;
  const steps: TimedStep[] = [];
  s.steps.forEach((raw, index) => {
    const step = toStep(raw);
    const times = raw.repeat?.times ?? 1;
    for (let k = 0; k < times; k++) {
      const every = raw.repeat?.every ?? { ms: 0, t: 0, text: '0ms' };
      const at: Duration = { ms: raw.at.ms + k * every.ms, t: raw.at.t + k * every.t, text: k === 0 ? raw.at.text : `${raw.at.text} + ${k}×${every.text}` };
      steps.push({ ...step, at, index, repetition: k, ...(raw.note !== undefined ? { note: raw.note } : {}), text: describeStep(step) });
    }
  });
  const fallbackName = file ? path.basename(file).replace(/\.ya?ml$/, '') : 'scenario';
  const { steps: _steps, name, ...rest } = s;
  return { ...rest, name: name ?? fallbackName, file, steps };
}

export function loadScenario(file: string): Scenario {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ScenarioError(`cannot read scenario ${file}: ${(err as Error).message}`);
  }
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (err) {
    throw new ScenarioError(`${file} is not valid YAML: ${(err as Error).message}`);
  }
  return parseScenario(doc, file, file);
}

/**
 * Steps in the order they run, with their times in ms for this T. Steps run one after another:
 * a step starts at its time or when the one before it is done, whichever is later.
 */
export function schedule(scenario: Scenario, heartbeatMs: number): Array<TimedStep & { atMs: number }> {
  return scenario.steps
    .map((s, order) => ({ ...s, atMs: resolveMs(s.at, heartbeatMs), order }))
    .sort((a, b) => a.atMs - b.atMs || a.order - b.order)
    .map(({ order: _order, ...s }) => s);
}

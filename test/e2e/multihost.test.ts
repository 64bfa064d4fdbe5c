/**
 * Several hosts on one machine: the controller, three replicas and the driver each in their own
 * network namespace with its own address on a /24, wired by veth pairs to a bridge (in a "switch"
 * namespace of its own, so the host's firewall and bridge settings stay out of it). Each member
 * is started with the command an operator would type on its host:
 *
 *   ip netns exec NS node --import tsx cli/freebs.ts replica --id r1 --host 10.77.X.11 --port 7400 \
 *     --controller ws://10.77.X.10:8080 --secret-file SECRET …
 *
 * fio writes and verifies through the driver (fio runs in the driver's namespace); then the cable
 * of the replica in the middle of the chain is pulled (`ip link set … down` on its switch port) while fio keeps writing: I/O goes on with the
 * majority once the controller has reconfigured, the cable goes back in, the replica rejoins at the tail and
 * SYNCs, and every replica converges. Needs root and iproute2; namespaces and the bridge are
 * removed in afterAll whatever happens.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect } from 'vitest';
import { CleanupStack } from '../helpers/cleanup.js';
import { fioJobs } from '../helpers/fio.js';
import { ProcessTracker, waitUntil, type BackgroundProcess } from '../helpers/processes.js';
import { itWith, requirements, type RequirementCheck } from '../helpers/tools.js';

const repoRoot = fileURLToPath(new URL('../..', import.meta.url));
const procs = new ProcessTracker();
const cleanup = new CleanupStack();
afterAll(async () => {
  await procs.stopAll();
  await cleanup.runAll();
});

/** Short and per run, so two runs (or a crashed one's leftovers) never collide: names ≤ 15 chars. */
const tag = (process.pid % 46656).toString(36);
/** A 10.77.X.0/24 this host does not route already (the test's leg puts a route to it in the root namespace). */
function freeSubnet(): string {
  let routes = '';
  try {
    routes = execFileSync('ip', ['-4', 'route'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  } catch {
    // No ip: the test is skipped anyway.
  }
  for (let i = 0; i < 200; i++) {
    const candidate = `10.77.${20 + ((process.pid + i) % 200)}`;
    if (!routes.includes(`${candidate}.`)) return candidate;
  }
  return `10.77.${20 + (process.pid % 200)}`;
}
const subnet = freeSubnet();
const sw = `fbmh-${tag}-sw`;
const hosts = {
  ctl: { ns: `fbmh-${tag}-ctl`, ip: `${subnet}.10` },
  r1: { ns: `fbmh-${tag}-r1`, ip: `${subnet}.11` },
  r2: { ns: `fbmh-${tag}-r2`, ip: `${subnet}.12` },
  r3: { ns: `fbmh-${tag}-r3`, ip: `${subnet}.13` },
  drv: { ns: `fbmh-${tag}-drv`, ip: `${subnet}.20` },
} as const;
type Host = keyof typeof hosts;
/** The test's own leg on the bridge, to read /status pages. */
const testLeg = { name: `fbmh${tag}`, ip: `${subnet}.1` };

/** Root and iproute2, and namespaces that can actually be made here (not in every container). */
function netnsCheck(): RequirementCheck {
  const base = requirements({ root: true, commands: ['ip', 'fio'] });
  if (base.missing) return base;
  const probe = `fbmh-probe-${tag}`;
  try {
    execFileSync('ip', ['netns', 'add', probe], { stdio: 'pipe' });
    execFileSync('ip', ['netns', 'del', probe], { stdio: 'pipe' });
    return { missing: undefined };
  } catch (err) {
    return { missing: `network namespaces (ip netns add failed: ${String((err as { stderr?: Buffer }).stderr ?? err).trim()})` };
  }
}

const ip = (...args: string[]) => procs.runOk('ip', args, { timeoutMs: 10_000 });

async function buildNetwork(): Promise<void> {
  // Leftovers of an earlier run that died with this pid (names are this test's own): remove them.
  for (const ns of [sw, ...Object.values(hosts).map((h) => h.ns)]) await procs.run('ip', ['netns', 'del', ns]);
  await procs.run('ip', ['link', 'del', testLeg.name]);
  cleanup.defer(`delete namespace ${sw}`, () => procs.run('ip', ['netns', 'del', sw]));
  await ip('netns', 'add', sw);
  await ip('-n', sw, 'link', 'add', 'br0', 'type', 'bridge');
  await ip('-n', sw, 'link', 'set', 'br0', 'up');
  for (const [name, host] of Object.entries(hosts)) {
    cleanup.defer(`delete namespace ${host.ns}`, () => procs.run('ip', ['netns', 'del', host.ns]));
    await ip('netns', 'add', host.ns);
    // The cable: eth0 in the host, port p-NAME on the switch.
    await ip('link', 'add', `p-${name}`, 'netns', sw, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', host.ns);
    await ip('-n', sw, 'link', 'set', `p-${name}`, 'master', 'br0', 'up');
    await ip('-n', host.ns, 'addr', 'add', `${host.ip}/24`, 'dev', 'eth0');
    await ip('-n', host.ns, 'link', 'set', 'eth0', 'up');
    await ip('-n', host.ns, 'link', 'set', 'lo', 'up');
  }
  // Namespace deletion frees its devices asynchronously: delete the root-side end explicitly.
  cleanup.defer(`delete link ${testLeg.name}`, () => procs.run('ip', ['link', 'del', testLeg.name]));
  await ip('link', 'add', testLeg.name, 'type', 'veth', 'peer', 'name', 'p-test', 'netns', sw);
  await ip('-n', sw, 'link', 'set', 'p-test', 'master', 'br0', 'up');
  await ip('addr', 'add', `${testLeg.ip}/24`, 'dev', testLeg.name);
  await ip('link', 'set', testLeg.name, 'up');
}

const members: { name: string; process: BackgroundProcess }[] = [];

/** `ip netns exec NS node --import tsx cli/freebs.ts ARGS…`, waiting for its ready line. */
async function startMember(host: Host, args: string[], ready: RegExp): Promise<BackgroundProcess> {
  const p = procs.start('ip', ['netns', 'exec', hosts[host].ns, process.execPath, '--import', 'tsx', 'cli/freebs.ts', ...args], { cwd: repoRoot });
  members.push({ name: host, process: p });
  await waitUntil(() => {
    if (p.child.exitCode !== null) throw new Error(`${host} exited (${p.child.exitCode}):\n${p.output()}`);
    return ready.test(p.output());
  }, `${host} to be ready`, 30_000, 50);
  return p;
}

async function json<T>(url: string): Promise<T> {
  return (await fetch(url, { signal: AbortSignal.timeout(2000) })).json() as Promise<T>;
}

interface ControllerStatus {
  epoch: number;
  chain: string[];
  members: Record<string, { liveness: string; caughtUp?: boolean; appliedVersion: number }>;
}
interface ReplicaStatus {
  state: string;
  epoch: number;
  appliedVersion: number;
}

const controllerStatus = () => json<ControllerStatus>(`http://${hosts.ctl.ip}:8080/status`);

function fio(name: string, args: string[]) {
  return procs.run('ip', [
    'netns', 'exec', hosts.drv.ns, 'fio', `--name=${name}`, '--ioengine=nbd', `--uri=nbd://${hosts.drv.ip}:10809/freebs`,
    // No verify-state files in the working directory.
    '--verify=crc32c', '--verify_state_save=0', '--output-format=json', ...args,
  ], { timeoutMs: 90_000 });
}

function expectFioOk(result: { code: number | null; stdout: string; stderr: string }, what: string): void {
  expect(result.code, `${what}: ${result.stderr}\n${result.stdout.slice(0, 2000)}`).toBe(0);
  expect(fioJobs(result.stdout).every((j) => j.error === 0), what).toBe(true);
}

describe('members on separate hosts (network namespaces)', () => {
  itWith(netnsCheck(), 'fio verifies through the driver; a replica host loses its link and comes back; the chain heals', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'freebs-multihost-'));
    cleanup.defer(`remove ${dir}`, () => rmSync(dir, { recursive: true, force: true }));
    const secretFile = path.join(dir, 'cluster.secret');
    writeFileSync(secretFile, `${randomBytes(32).toString('hex')}\n`, { mode: 0o600 });
    await buildNetwork();

    try {
      const common = ['--cluster', 'multihost', '--secret-file', secretFile, '--heartbeat-ms', '200'];
      const controllerUrl = `ws://${hosts.ctl.ip}:8080`;
      const replicas = ['r1', 'r2', 'r3'] as const;
      const chain = replicas.map((r) => `${r}=ws://${hosts[r].ip}:7400`).join(',');
      await startMember('ctl', [
        'controller', '--dir', path.join(dir, 'ctl'), '--chain', chain, '--size', '256M', '--host', hosts.ctl.ip, '--port', '8080', '--no-spawn', ...common,
      ], /controller listening on ws:\/\/\S+ \(authenticated/);
      await Promise.all(replicas.map((r) => startMember(r, [
        'replica', '--id', r, '--dir', path.join(dir, r), '--size', '256M', '--host', hosts[r].ip, '--port', '7400', '--controller', controllerUrl, ...common,
      ], /replica \S+ listening on ws:\/\/\S+ at version \d+ \(authenticated\)/)));
      await startMember('drv', [
        'driver', '--controller', controllerUrl, '--size', '256M', '--host', hosts.drv.ip, '--nbd-port', '10809', '--http-port', '8081', ...common,
      ], /driver ready: nbd:\/\//);

      // The controller may have shuffled the chain while members were starting (one heard late
      // counts as failed and comes back at the tail): wait for three active members.
      await waitUntil(async () => {
        const s = await controllerStatus();
        return s.chain.length === 3 && s.chain.every((m) => s.members[m]?.liveness === 'active');
      }, 'a chain of three active replicas', 15_000, 100);

      // Through the driver, across hosts: write and verify.
      const regionA = ['--rw=randwrite', '--bs=4k', '--size=24M', '--offset=0', '--iodepth=16'];
      expectFioOk(await fio('a', [...regionA, '--do_verify=1']), 'fio region A');
      const before = await controllerStatus();
      // The middle of the chain: its neighbours must link up around it.
      const victim = before.chain[1] as (typeof replicas)[number];

      // Pull the victim's cable while a rate-limited writer runs; plug it back in a few seconds later.
      const regionB = ['--rw=write', '--bs=64k', '--size=40M', '--offset=64M', '--iodepth=4', '--rate=8m'];
      const writer = fio('b', [...regionB, '--do_verify=1']);
      await new Promise((r) => setTimeout(r, 1000));
      await ip('-n', sw, 'link', 'set', `p-${victim}`, 'down');
      const cut = await waitUntil(async () => {
        const s = await controllerStatus();
        return s.epoch > before.epoch && !s.chain.includes(victim) ? s : null;
      }, `the controller to drop ${victim} from the chain`, 15_000, 100);
      expect(cut.chain).toEqual(before.chain.filter((m) => m !== victim));
      await new Promise((r) => setTimeout(r, 1500));
      await ip('-n', sw, 'link', 'set', `p-${victim}`, 'up');
      // I/O went on with the majority: the writer finished and verified what it wrote.
      expectFioOk(await writer, 'fio region B, across the cut');

      // The victim comes back at the tail, SYNCs, and every replica converges.
      const healed = await waitUntil(async () => {
        const s = await controllerStatus();
        if (s.chain.length !== 3 || !s.chain.includes(victim)) return null;
        const all = await Promise.all(replicas.map((r) => json<ReplicaStatus>(`http://${hosts[r].ip}:7400/status`)));
        const converged = all.every((x) => x.state === 'serving' && x.epoch === s.epoch && x.appliedVersion === all[0]!.appliedVersion);
        return converged ? { controller: s, replicas: all } : null;
      }, `${victim} back in the chain and all replicas at one version`, 30_000, 200);
      expect(healed.controller.chain).toEqual([...cut.chain, victim]);
      expect(healed.replicas[0]!.appliedVersion).toBeGreaterThan(0);

      // Everything written, before and across the cut, reads back intact through the healed chain.
      expectFioOk(await fio('a', [...regionA, '--verify_only']), 'fio region A verify after healing');
      expectFioOk(await fio('b', [...regionB.filter((a) => !a.startsWith('--rate')), '--verify_only']), 'fio region B verify after healing');
    } catch (err) {
      const logs = members.map((m) => `--- ${m.name} ---\n${m.process.output().slice(-3000)}`).join('\n');
      throw new Error(`${(err as Error).message}\n${logs}`, { cause: err });
    }
  });
});

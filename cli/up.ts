/**
 * `freebs up`: a whole cluster on this machine, as separate processes started with the
 * same commands an operator would use on separate hosts. Ctrl-C stops the driver first
 * (it flushes), then the replicas, so nothing acknowledged is lost.
 */
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { loadControllerState } from '../actors/controller-state.js';
import { spawnMember, stopMember, waitForLine, type MemberProcess } from '../actors/member-process.js';
import { replicaPidsUnder, stopPid } from '../actors/pids.js';
import { ensureSecretFile } from './security.js';

export interface UpOptions {
  dir: string;
  replicas: number;
  size: number;
  host: string;
  nbdPort: number;
  basePort: number;
  controllerPort: number;
  driverHttpPort: number;
  heartbeatMs: number;
}

export async function runUp(options: UpOptions): Promise<void> {
  const dir = path.resolve(options.dir);
  mkdirSync(dir, { recursive: true });
  const logDir = path.join(dir, 'logs');
  const members: MemberProcess[] = [];
  let driver: MemberProcess | null = null;
  let controller: MemberProcess | null = null;
  let stopping = false;
  const shutdown = async (why: string) => {
    if (stopping) return;
    stopping = true;
    console.log(`\nstopping (${why}): driver first (it flushes), then the controller, then the replicas…`);
    if (driver) await stopMember(driver);
    if (controller) await stopMember(controller);
    await Promise.all(members.map((m) => stopMember(m)));
    await Promise.all(replicaPidsUnder(dir).map((pid) => stopPid(pid)));
    console.log('stopped; data is in', dir);
    process.exit(0);
  };
  process.on('SIGINT', () => void shutdown('Ctrl-C'));
  process.on('SIGTERM', () => void shutdown('SIGTERM'));

  // Every member proves it holds this secret on every link; made once, kept with the data.
  const secretFile = path.join(dir, 'secret');
  if (ensureSecretFile(secretFile)) console.log(`made a cluster secret in ${secretFile} (mode 0600); members on other hosts need a copy`);
  const common = ['--cluster', 'freebs', '--heartbeat-ms', String(options.heartbeatMs), '--secret-file', secretFile];
  const controllerUrl = `ws://${options.host}:${options.controllerPort}`;
  const chain: string[] = [];
  for (let i = 1; i <= options.replicas; i++) chain.push(`r${i}=ws://${options.host}:${options.basePort + i}`);
  // A cluster that ran here before resumes its last configuration (replacements included).
  const persisted = loadControllerState(dir);
  const replicas = persisted
    ? persisted.chain.map((m) => ({ id: m.id, port: Number(new URL(m.url).port) }))
    : chain.map((_, i) => ({ id: `r${i + 1}`, port: options.basePort + i + 1 }));
  if (persisted) console.log(`resuming the cluster in ${dir} at epoch ${persisted.epoch}: ${persisted.chain.map((m) => m.id).join(' → ')}`);
  try {
    controller = spawnMember('controller', [
      'controller', '--dir', dir, '--chain', chain.join(','), '--size', String(options.size), '--replicas', String(options.replicas),
      '--host', options.host, '--port', String(options.controllerPort), ...common,
    ], logDir);
    await waitForLine(controller, /^controller listening/);
    for (const { id, port } of replicas) {
      const member = spawnMember(id, [
        'replica', '--id', id, '--dir', path.join(dir, id), '--size', String(options.size), '--host', options.host,
        '--port', String(port), '--controller', controllerUrl, ...common,
      ], logDir);
      members.push(member);
    }
    await Promise.all(members.map((m) => waitForLine(m, /^replica \S+ listening/)));
    driver = spawnMember('driver', [
      'driver', '--controller', controllerUrl, '--size', String(options.size), '--host', options.host,
      '--nbd-port', String(options.nbdPort), '--http-port', String(options.driverHttpPort), ...common,
    ], logDir);
    await waitForLine(driver, /^driver ready/);
  } catch (err) {
    console.error(`freebs up: ${(err as Error).message}`);
    await shutdown('a member failed to start');
    return;
  }
  for (const m of [controller, driver, ...members]) {
    m.child.once('exit', (code, signal) => {
      if (!stopping) console.error(`${m.id} exited (${signal ?? code}); see ${m.logPath}`);
    });
  }
  const uri = `nbd://${options.host}:${options.nbdPort}/freebs`;
  console.log(`FreEBS is up: ${replicas.length} replicas, data in ${dir}, logs in ${logDir}
  NBD export:  ${uri}
  visualizer:  http://${options.host}:${options.controllerPort}/ (the chain, statecharts, timeline and I/O, live)
  status:      http://${options.host}:${options.controllerPort}/status
  metrics:     http://${options.host}:${options.controllerPort}/metrics (controller), http://${options.host}:${options.driverHttpPort}/metrics (driver),
               http://${options.host}:PORT/metrics on each replica (ports in /status)
Try:
  nbdinfo ${uri}
  qemu-io -f raw -c 'write -P 0xab 0 1M' -c 'read -P 0xab 0 1M' ${uri}
  fio --name=t --ioengine=nbd --uri=${uri} --rw=randwrite --bs=4k --size=64M --verify=crc32c
Ctrl-C stops the cluster cleanly.`);
}

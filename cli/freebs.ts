#!/usr/bin/env -S node --import tsx
/**
 * The freebs command: `up` runs a local cluster; `replica` and `driver` run one member each
 * (for separate hosts); `serve` exports a single local LSVD (like `nbdkit file`).
 */
import { Command, InvalidArgumentError, Option } from 'commander';
import { parseSizeBytes } from './size.js';
import { runController, runDriver, runReplica, runServe } from './members.js';
import { runUp } from './up.js';

function size(text: string): number {
  try {
    return parseSizeBytes(text);
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
}

function port(text: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new InvalidArgumentError(`not a TCP port: "${text}"`);
  return n;
}

function positive(text: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`expected a whole number ≥ 1, got "${text}"`);
  return n;
}

// Members started by `freebs up` print their ready line to a pipe that may close before them.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code !== 'EPIPE') throw err;
});

const program = new Command('freebs')
  .description('FreEBS: a replicated virtual block device over NBD')
  .showHelpAfterError();

program
  .command('up')
  .description('start a local cluster: N replica processes and the driver with its NBD export')
  .option('--dir <path>', 'data directory (one subdirectory per replica)', '.freebs')
  .option('--replicas <n>', 'number of replicas', positive, 3)
  .option('--size <bytes>', 'volume size, e.g. 10G (used when the volume is created)', size, parseSizeBytes('10G'))
  .option('--host <addr>', 'address to listen on', '127.0.0.1')
  .option('--nbd-port <port>', 'NBD port of the driver', port, 10809)
  .option('--base-port <port>', 'first replica port (replica i listens on base+i)', port, 7400)
  .option('--controller-port <port>', 'controller port: member links, /status and the visualizer', port, 8080)
  .option('--driver-http-port <port>', "driver's /status and /metrics", port, 8081)
  .option('--heartbeat-ms <ms>', 'heartbeat period T', positive, 500)
  .action(runUp);

program
  .command('replica')
  .description('run one replica: its LSVD in --dir, accepting links on --port')
  .requiredOption('--id <id>', 'member id, unique in the cluster')
  .requiredOption('--dir <path>', 'data directory of this replica')
  .option('--size <bytes>', 'volume size, needed when the directory is new', size)
  .option('--host <addr>', 'address to listen on', '127.0.0.1')
  .requiredOption('--port <port>', 'port to accept links on', port)
  .option('--cluster <id>', 'cluster id every member must share', 'freebs')
  .option('--controller <url>', 'ws:// address of the controller (without one, the driver configures the chain)')
  .option('--heartbeat-ms <ms>', 'heartbeat period T', positive, 500)
  .action(runReplica);

program
  .command('driver')
  .description('run the driver: forwards NBD requests to the replica chain')
  .option('--id <id>', 'member id', 'driver')
  .option('--chain <list>', 'static chain, head first: id=ws://host:port,… (when there is no controller)')
  .option('--controller <url>', 'ws:// address of the controller, which then configures the chain')
  .requiredOption('--size <bytes>', 'volume size', size)
  .option('--name <export>', 'NBD export name', 'freebs')
  .option('--host <addr>', 'address for the NBD server', '127.0.0.1')
  .option('--nbd-port <port>', 'NBD port', port, 10809)
  .option('--http-port <port>', 'serve /status and /metrics (Prometheus) on this port', port)
  .option('--heartbeat-ms <ms>', 'heartbeat period T', positive, 500)
  .option('--cluster <id>', 'cluster id every member must share', 'freebs')
  .action(runDriver);

program
  .command('controller')
  .description('run the controller: watches heartbeats, reconfigures the chain on failure, starts replacements')
  .requiredOption('--dir <path>', 'state directory (controller.json) and home of replacement replicas')
  .requiredOption('--chain <list>', 'initial chain, head first: id=ws://host:port,… (ignored once state is persisted)')
  .requiredOption('--size <bytes>', 'volume size', size)
  .option('--name <export>', 'volume name', 'freebs')
  .option('--driver-id <id>', 'the driver allowed to attach first', 'driver')
  .option('--replicas <n>', 'how many replicas the chain should have', positive, 3)
  .option('--host <addr>', 'address to listen on (links and the status page)', '127.0.0.1')
  .option('--port <port>', 'port for member links, /status and the visualizer', port, 8080)
  .option('--heartbeat-ms <ms>', 'heartbeat period T (inactive after 2T, failed after 4T)', positive, 500)
  .option('--cluster <id>', 'cluster id every member must share', 'freebs')
  .option('--no-spawn', 'do not start replacement replicas (another system does)')
  .action(runController);

program
  .command('serve')
  .description('export one local LSVD over NBD, no replication (a single-node mode like nbdkit file)')
  .requiredOption('--dir <path>', 'data directory')
  .option('--size <bytes>', 'volume size, needed when the directory is new', size)
  .option('--name <export>', 'NBD export name', 'freebs')
  .option('--host <addr>', 'address to listen on', '127.0.0.1')
  .option('--port <port>', 'NBD port', port, 10809)
  .addOption(new Option('--read-only', 'refuse writes'))
  .action(runServe);

await program.parseAsync();

#!/usr/bin/env -S node --initial-old-space-size=256 --import tsx
/**
 * The freebs command: `up` runs a local cluster; `replica` and `driver` run one member each
 * (for separate hosts); `serve` exports a single local LSVD (like `nbdkit file`).
 */
import { Command, InvalidArgumentError, Option } from 'commander';
import { ConfigError, resolveOptions, type MemberCommand } from './config.js';
import { parseSizeBytes } from './size.js';
import { runController, runDriver, runReplica, runServe, type ControllerCliOptions, type DriverCliOptions, type ReplicaCliOptions } from './members.js';
import { runInject } from './inject.js';
import { runScrub } from './scrub.js';
import { addNbdTlsOptions } from './nbd-tls.js';
import { runStatus } from './status.js';
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

/** Flags every member command takes: its config file, the cluster secret, TLS. */
function memberCommand(name: MemberCommand, description: string): Command {
  return program
    .command(name)
    .description(description)
    .option('--config <file>', 'YAML config file; its keys are these flags without the dashes (flags override it)')
    .addOption(new Option('--secret-file <path>', 'file holding the cluster secret (every member must have the same)').env('FREEBS_SECRET_FILE'))
    .option('--tls-cert <path>', 'PEM certificate: accept links over TLS (wss://)')
    .option('--tls-key <path>', 'PEM private key of --tls-cert')
    .option('--tls-ca <path>', 'PEM CA bundle to trust for wss:// peers (default: the system CAs)')
    .option('--insecure', 'allow running without a cluster secret on a non-loopback address');
}

/** The action of a member command: options after its --config file, then run. */
function withConfig<T>(name: MemberCommand, run: (options: T) => Promise<void>) {
  return async (_options: unknown, cmd: Command): Promise<void> => {
    let options: T;
    try {
      options = resolveOptions<T>(cmd, name);
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      console.error(`freebs: ${err.message}\n(see freebs ${name} --help)`);
      process.exit(2);
    }
    await run(options);
  };
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

memberCommand('replica', 'run one replica: its LSVD in --dir, accepting links on --port')
  .option('--id <id>', 'member id, unique in the cluster (required)')
  .option('--dir <path>', 'data directory of this replica (required)')
  .option('--size <bytes>', 'volume size, needed when the directory is new', size)
  .option('--host <addr>', 'address to listen on', '127.0.0.1')
  .option('--port <port>', 'port to accept links on (required; 0 = any free port)', port)
  .option('--cluster <id>', 'cluster id every member must share', 'freebs')
  .option('--controller <url>', 'ws:// address of the controller (without one, the driver configures the chain)')
  .option('--heartbeat-ms <ms>', 'heartbeat period T', positive, 500)
  .option('--write-buffer <bytes>', 'log writes held in memory until written (e.g. 256M); past it, writes wait for the disk, and past twice it the replica stops reading from its predecessor', size)
  .option('--sync-window <bytes>', 'log kept for peers that fall behind (default: a quarter of the volume, at most 1G); further behind, they get an image', size)
  .option('--disk-faults <file>', 'fault-injection runs: slow this disk by the delays in a JSON file, re-read while running ({"writeDelayMs": 50, "syncDelayMs": 200, "readDelayMs": 0})')
  .action(withConfig<ReplicaCliOptions>('replica', runReplica));

const driverCommand = memberCommand('driver', 'run the driver: forwards NBD requests to the replica chain')
  .option('--id <id>', 'member id', 'driver')
  .option('--chain <list>', 'static chain, head first: id=ws://host:port,… (when there is no controller)')
  .option('--controller <url>', 'ws:// address of the controller, which then configures the chain')
  .option('--size <bytes>', 'volume size (required)', size)
  .option('--name <export>', 'NBD export name', 'freebs')
  .option('--host <addr>', 'address for the NBD server', '127.0.0.1')
  .option('--nbd-port <port>', 'NBD port', port, 10809)
  .option('--http-port <port>', 'serve /status and /metrics (Prometheus) on this port', port)
  .option('--heartbeat-ms <ms>', 'heartbeat period T', positive, 500)
  .option('--cluster <id>', 'cluster id every member must share', 'freebs');
addNbdTlsOptions(driverCommand).action(withConfig<DriverCliOptions>('driver', runDriver));

memberCommand('controller', 'run the controller: watches heartbeats, reconfigures the chain on failure, starts replacements')
  .option('--dir <path>', 'state directory (controller.json) and home of replacement replicas (required)')
  .option('--chain <list>', 'initial chain, head first: id=ws://host:port,… (required; ignored once state is persisted)')
  .option('--size <bytes>', 'volume size (required)', size)
  .option('--name <export>', 'volume name', 'freebs')
  .option('--driver-id <id>', 'the driver allowed to attach first', 'driver')
  .option('--replicas <n>', 'how many replicas the chain should have', positive, 3)
  .option('--host <addr>', 'address to listen on (links and the status page)', '127.0.0.1')
  .option('--port <port>', 'port for member links, /status and the visualizer', port, 8080)
  .option('--heartbeat-ms <ms>', 'heartbeat period T (inactive after 2T, failed after 4T)', positive, 500)
  .option('--cluster <id>', 'cluster id every member must share', 'freebs')
  .option('--no-spawn', 'do not start replacement replicas (another system does)')
  .action(withConfig<ControllerCliOptions>('controller', runController));

program
  .command('status')
  .description("every member as the controller sees it: role, liveness, state, version, lag, epoch, last heartbeat")
  .addOption(new Option('--controller <url>', 'the controller (http://, ws:// or host:port)').env('FREEBS_CONTROLLER').default('http://127.0.0.1:8080'))
  .option('--json', "print the controller's /status document instead of a table")
  .action(runStatus);

program
  .command('inject')
  .description('run a fault-injection scenario (deploy/faults/*.yaml) against a cluster of its own and judge it')
  .argument('<scenario>', 'scenario file (YAML; format in deploy/faults/README.md)')
  .option('--out <file>', 'write the verdict as JSON here, with the run\'s trace in it (the visualizer\'s "Load run" replays it)')
  .option('--dir <path>', 'data directory of the run (default: a fresh temp directory)')
  .option('--keep', 'keep the data and logs (they are kept anyway when the verdict fails)')
  .option('--heartbeat-ms <ms>', "heartbeat period T, overriding the scenario's", positive)
  .action((scenario: string, options: { out?: string; dir?: string; keep?: boolean; heartbeatMs?: number }) => runInject(scenario, options));

program
  .command('scrub')
  .description("compare the chain replicas' content chunk by chunk (like DRBD online verify); --repair replaces a replica that differs")
  .addOption(new Option('--controller <url>', 'the controller (http://, ws:// or host:port)').env('FREEBS_CONTROLLER').default('http://127.0.0.1:8080'))
  .option('--chunk <bytes>', 'chunk size compared, e.g. 1M', size, 1024 * 1024)
  .option('--repair', 'stop a replica that differs from the majority, move its data aside, and let the controller replace it (local clusters; needs --dir)')
  .option('--dir <path>', 'the cluster data directory (freebs up --dir), for --repair')
  .option('--json', 'print the report as JSON')
  .option('--timeout-ms <ms>', 'how long to wait for the replicas to reach one version, and for a repair to heal', positive, 60_000)
  .action(runScrub);

const serveCommand = program
  .command('serve')
  .description('export one local LSVD over NBD, no replication (a single-node mode like nbdkit file)')
  .requiredOption('--dir <path>', 'data directory')
  .option('--size <bytes>', 'volume size, needed when the directory is new', size)
  .option('--name <export>', 'NBD export name', 'freebs')
  .option('--host <addr>', 'address to listen on', '127.0.0.1')
  .option('--port <port>', 'NBD port', port, 10809)
  .addOption(new Option('--read-only', 'refuse writes'));
addNbdTlsOptions(serveCommand).action(runServe);

await program.parseAsync();

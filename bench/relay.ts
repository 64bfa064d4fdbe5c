/**
 * A byte relay: accepts TCP connections and pipes each, both ways, to one upstream port.
 *
 *   npx tsx bench/relay.ts LISTEN_PORT UPSTREAM_PORT
 *
 * It parses nothing and keeps nothing. bench/nbd.ts --relay puts one between fio and
 * `nbdkit file`: the least work any process that forwards NBD requests to a storage server can
 * do, so what fio measures through it bounds a driver in front of a replica on this machine.
 */
import net from 'node:net';

const [listenPort, upstreamPort] = process.argv.slice(2).map(Number);
if (!Number.isInteger(listenPort) || !Number.isInteger(upstreamPort)) {
  process.stderr.write('usage: relay.ts LISTEN_PORT UPSTREAM_PORT\n');
  process.exit(2);
}

net
  .createServer((client) => {
    const upstream = net.connect(upstreamPort, '127.0.0.1');
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    client.pipe(upstream);
    upstream.pipe(client);
    client.on('error', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  })
  .listen(listenPort, '127.0.0.1', () => process.stdout.write(`relay 127.0.0.1:${listenPort} -> 127.0.0.1:${upstreamPort}\n`));

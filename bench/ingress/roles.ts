/**
 * The processes of the ingress benchmark, one role per child process so that each gets its
 * own event loop, as in production (workload and volantd are separate processes; the chain through a
 * real VM and its vsock device is bench/ingress/chain.ts):
 *
 *   upstream PORT_FILE?         a plain node:http server answering `hello` (the workload)
 *   ingress  TARGET             volantd's API server with the ingress in front (its fast path, bearer
 *                               token BENCH_API_TOKEN required), every VM name reaching TARGET
 *                               TARGET = tcp:HOST:PORT | vsock:/path/to/vm.sock
 *   pipe     PORT               the floor of any single-event-loop Node proxy: bytes relayed as they
 *                               come between each client connection and its own upstream connection
 *                               (no HTTP at all), so what it costs is Node's and libuv's I/O alone
 *
 * Each prints `READY <json>` on stdout when listening and runs until killed.
 */

import { createServer } from 'node:http';
import { connect, createServer as createNetServer } from 'node:net';
import { startIngressStack } from '../../test/support/ingress-stack.js';
import { BENCH_API_TOKEN } from '../support/wrk.js';

const [role, arg1, arg2] = process.argv.slice(2);
// Exit normally on SIGTERM so that `--cpu-prof` can write its profile.
process.on('SIGTERM', () => process.exit(0));

function ready(info: object): void {
  process.stdout.write(`READY ${JSON.stringify(info)}\n`);
}

if (role === 'upstream') {
  const body = Buffer.from('hello');
  const server = createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': body.length });
    res.end(body);
  });
  server.keepAliveTimeout = 60_000;
  server.listen(0, '127.0.0.1', () => ready({ port: (server.address() as { port: number }).port }));
} else if (role === 'ingress') {
  const target = arg1 ?? '';
  // `relay` (third argument): the VM's kestrel runs its raw relay, so the ingress dials port 8081.
  const relay = arg2 === 'relay';
  const transport = target.startsWith('vsock:')
    ? ({ kind: 'vsock', socketPath: target.slice('vsock:'.length), relay } as const)
    : ({ kind: 'tcp', host: target.split(':')[1]!, port: Number(target.split(':')[2]), relay } as const);
  startIngressStack({ lookup: (vmName) => ({ vmName, transport }), token: BENCH_API_TOKEN }).then((stack) => ready({ port: stack.port }));
} else if (role === 'pipe') {
  const upstreamPort = Number(arg1);
  const server = createNetServer({ noDelay: true }, (client) => {
    const up = connect({ host: '127.0.0.1', port: upstreamPort, noDelay: true });
    client.on('data', (d) => up.write(d));
    up.on('data', (d) => client.write(d));
    client.on('close', () => up.destroy());
    up.on('close', () => client.destroy());
    client.on('error', () => up.destroy());
    up.on('error', () => client.destroy());
  });
  server.listen(0, '127.0.0.1', () => ready({ port: (server.address() as { port: number }).port }));
} else {
  process.stderr.write(`unknown role ${role}\n`);
  process.exit(2);
}

/**
 * The "outside world" of the end-to-end suite, run inside its own network namespace: a DNS
 * server that answers for a few test names, and HTTP (:80) and HTTPS (:443, certificate from a
 * test-only CA) servers that say who they are. Nothing here is reachable from the machine's own
 * network; the suite links this namespace to volantd's with a veth pair.
 *
 * Usage: node --import tsx test/support/world-server.ts --ip 10.99.0.2 --records JSON --cert PEM_FILE --key PEM_FILE
 * Prints `world ready` once every server listens; serves until SIGTERM.
 */

import { readFileSync } from 'node:fs';
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { startDnsServer } from './dns-server.js';

function arg(name: string): string {
  const i = process.argv.indexOf(name);
  const v = i >= 0 ? process.argv[i + 1] : undefined;
  if (v === undefined) throw new Error(`world-server: missing ${name}`);
  return v;
}

function answer(scheme: string) {
  return (req: IncomingMessage, res: ServerResponse): void => {
    const body = JSON.stringify({ world: true, scheme, host: req.headers.host ?? '', path: req.url ?? '' });
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  };
}

async function main(): Promise<void> {
  const ip = arg('--ip');
  const dns = await startDnsServer({ host: ip, port: 53, records: JSON.parse(arg('--records')) });
  const http = createHttpServer(answer('http'));
  const https = createHttpsServer({ cert: readFileSync(arg('--cert')), key: readFileSync(arg('--key')) }, answer('https'));
  await Promise.all([new Promise<void>((r) => http.listen(80, ip, r)), new Promise<void>((r) => https.listen(443, ip, r))]);
  console.log('world ready');
  const stop = (): void => {
    http.close();
    https.close();
    void dns.close().then(() => process.exit(0));
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

await main();

/**
 * Runs one egress proxy in its own process for the bench, as volantd would (the bench's client
 * and upstream live in the parent, so the proxy does not share their event loop; squid gets the
 * same treatment). Args: DNS_SERVER RULES_JSON. Prints `listening PORT` when ready.
 */

import { startEgressProxy } from '../../host/egress/index.js';

const [dnsServer, rulesJson] = process.argv.slice(2);
const allowedDomains = JSON.parse(rulesJson ?? '[]') as string[];
const proxy = await startEgressProxy({
  listen: { host: '127.0.0.1', port: 0 },
  resolver: { servers: [dnsServer!] },
  allowPrivate: ['127.0.0.0/8'],
  requestsPerSecondPerVm: 1_000_000,
  maxTunnelsPerVm: 10_000,
  policyFor: () => ({ vmName: 'bench', allowedDomains }),
});
process.stdout.write(`listening ${(proxy.address as { port: number }).port}\n`);
process.on('SIGTERM', () => {
  proxy.close().then(() => process.exit(0));
});

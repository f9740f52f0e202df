/**
 * The ingress proxy's counters (host/ingress keeps them as plain numbers on its hot path), read at
 * scrape time (docs/metrics.md). Every counter the ingress keeps has a row here: the table is
 * typed by the ingress's own record, so a new counter there is a compile error until it is named.
 */

import { Counter, type Registry } from 'prom-client';
import type { IngressMetrics } from '../ingress/index.js';

export const INGRESS_COUNTERS: Readonly<Record<keyof IngressMetrics, { name: string; help: string }>> = {
  requests: { name: 'volant_ingress_requests_total', help: 'Requests proxied to VMs (past the path and header checks).' },
  upgrades: { name: 'volant_ingress_upgrades_total', help: 'Upgrades (WebSocket) proxied to VMs.' },
  refused: { name: 'volant_ingress_refused_total', help: 'Proxy requests refused before reaching a VM (unsafe path, bad framing).' },
  responses: { name: 'volant_ingress_responses_total', help: "Responses relayed from VMs' workloads to the end." },
  upstreamErrors: { name: 'volant_ingress_upstream_errors_total', help: 'Proxy requests whose VM could not be reached, timed out or answered invalid HTTP.' },
  clientAborts: { name: 'volant_ingress_client_aborts_total', help: 'Proxy requests whose client went away before the response ended.' },
};

export function registerIngressMetrics(registry: Registry, counts: () => Readonly<IngressMetrics>): void {
  for (const [field, { name, help }] of Object.entries(INGRESS_COUNTERS) as [keyof IngressMetrics, { name: string; help: string }][]) {
    new Counter({
      name,
      help,
      registers: [registry],
      collect() {
        this.reset();
        this.inc(counts()[field]);
      },
    });
  }
}

/**
 * volantd's one metrics registry (prom-client), served at `GET /metrics` in the Prometheus text
 * format. Each family is declared by the module that counts it and registered here when the
 * daemon starts; docs/metrics.md lists every name with its type, labels and meaning:
 *
 *   host/api/metrics.ts            volant_api_*              requests and their durations
 *   host/metrics/vms.ts            volant_vms, volant_ip_*   VMs by state, the address pool
 *   host/metrics/ingress.ts        volant_ingress_*          the ingress proxy's counters
 *   host/egress/metrics.ts         volant_egress_*           per-VM egress decisions, bytes, tunnels
 *   host/metrics/vsock-device.ts   volant_vsock_device_*     per-VM vsock device back-end counters
 *   prom-client's defaults         process_*, nodejs_*       volantd's own process
 *
 * What must hold: gauges are read at scrape time from their owner (the store, the ingress, a
 * device's metrics file), so they cannot drift; counters are bumped by the code that knows the
 * event. A VM's series (label `vm`) are kept while the VM exists, stopped or not, and removed when
 * it is deleted (`PerVmSeries.forgetVm`).
 */

import { collectDefaultMetrics, Registry } from 'prom-client';

export { Registry };

/** Families with per-VM series, told when a VM is deleted. */
export interface PerVmSeries {
  forgetVm(vm: string): void;
}

/** A registry with prom-client's default process metrics. */
export function createMetricsRegistry(): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  return registry;
}

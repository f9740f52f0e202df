/**
 * VMs and addresses, read from the store at scrape time (docs/metrics.md):
 *
 *   volant_vms{state}            gauge   VMs in each state (every state, 0 included)
 *   volant_ip_leases             gauge   pool addresses leased to VMs
 *   volant_ip_pool_addresses     gauge   addresses in the pool
 *   volant_ip_pool_free          gauge   pool addresses neither leased nor reserved
 */

import { Gauge, type Registry } from 'prom-client';
import type { IpamReport } from '../ipam/report.js';
import { VM_STATES, type VmState } from '../orchestrator/state.js';

export interface VmMetricsSource {
  vms(): readonly { state: VmState }[];
  ipam(): Pick<IpamReport, 'leased' | 'size' | 'free'>;
}

export function registerVmMetrics(registry: Registry, source: VmMetricsSource): void {
  const registers = [registry];
  new Gauge({
    name: 'volant_vms',
    help: 'VMs by state.',
    labelNames: ['state'],
    registers,
    collect() {
      const counts = new Map<string, number>(VM_STATES.map((s) => [s, 0]));
      for (const vm of source.vms()) counts.set(vm.state, (counts.get(vm.state) ?? 0) + 1);
      for (const [state, n] of counts) this.set({ state }, n);
    },
  });
  const ipamGauge = (name: string, help: string, value: (r: ReturnType<VmMetricsSource['ipam']>) => number): void => {
    new Gauge({
      name,
      help,
      registers,
      collect() {
        this.set(value(source.ipam()));
      },
    });
  };
  ipamGauge('volant_ip_leases', 'IPv4 pool addresses leased to VMs.', (r) => r.leased);
  ipamGauge('volant_ip_pool_addresses', 'IPv4 addresses in the pool.', (r) => r.size);
  ipamGauge('volant_ip_pool_free', 'IPv4 pool addresses neither leased nor reserved for a VM.', (r) => r.free);
}

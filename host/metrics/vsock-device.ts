/**
 * The vsock device back-ends' counters (host/vsock/device/metrics.ts), per VM (docs/metrics.md).
 * Each back-end process keeps its counters in a JSON file in its VM's run directory, rewritten
 * every second; at scrape time the files of every VM are read once (the families share one read)
 * and exposed with the label `vm`.
 *
 * What must hold: a VM's series stay while the VM exists — its run directory, and the file with
 * it, go when the VM stops, so the last values read are kept — and are removed when it is
 * deleted (`forgetVm`). A new back-end (the VM started again) counts from zero: Prometheus reads
 * that as a counter reset. A file that cannot be read or parsed keeps the last values.
 */

import { readFile } from 'node:fs/promises';
import { Counter, Gauge, type Registry } from 'prom-client';
import type { DeviceMetrics } from '../vsock/device/metrics.js';
import type { PerVmSeries } from './registry.js';

interface Family {
  name: string;
  help: string;
  type: 'counter' | 'gauge';
}

const counter = (name: string, help: string): Family => ({ name: `volant_vsock_device_${name}_total`, help, type: 'counter' });

/** One family per field of the device's counters (the type makes the table complete). */
export const VSOCK_DEVICE_FAMILIES: Readonly<Record<keyof DeviceMetrics, Family>> = {
  txPackets: counter('tx_packets', 'Packets the guest sent (TX queue).'),
  txBytes: counter('tx_bytes', 'Payload bytes of the RW packets the guest sent.'),
  txRefusedChains: counter('tx_refused_chains', 'TX descriptor chains refused as malformed (outside guest memory, loops, INDIRECT).'),
  txDropped: counter('tx_dropped', 'Guest packets dropped for a wrong CID, a bad length or an unknown type.'),
  rxPackets: counter('rx_packets', 'Packets written to the guest (RX queue).'),
  rxBytes: counter('rx_bytes', 'Payload bytes of the RW packets written to the guest.'),
  notifications: counter('notifications', 'Used-ring interrupts sent to the guest.'),
  kicks: counter('kicks', 'Kicks received from the guest.'),
  hostConnections: counter('host_connections', 'Connections opened from the host (CONNECT on the hybrid socket).'),
  guestConnections: counter('guest_connections', 'Connections opened from the guest to the host (CID 2).'),
  handshakeFailures: counter('handshake_failures', 'Host connections closed without OK (bad command, nothing listening, timeout).'),
  guestRefused: counter('guest_refused', 'Guest connections refused (no <uds>_<port> listener, limit reached).'),
  overLimit: counter('over_limit', 'Connections turned away because the connection limit was reached.'),
  resetsSent: counter('resets_sent', 'RST packets sent to the guest.'),
  resetsReceived: counter('resets_received', 'RST packets received from the guest.'),
  creditViolations: counter('credit_violations', 'Guests that sent more than their credit allowed (reset).'),
  timeouts: counter('timeouts', 'Connection timers that fired (handshake, request, shutdown, drain).'),
  backlogBytes: counter('backlog_bytes', 'Bytes that had to wait in a backlog because the host socket was full.'),
  connections: { name: 'volant_vsock_device_connections', help: 'Open vsock connections now.', type: 'gauge' },
};

export interface VsockDeviceSource {
  /** The VMs that exist now. */
  vms(): readonly string[];
  /** Where a VM's back-end keeps its counters (host/vmm/vsock-backend.ts). */
  metricsFile(vm: string): string;
}

export class VsockDeviceMetrics implements PerVmSeries {
  readonly #last = new Map<string, DeviceMetrics>();
  #reading: Promise<void> | undefined;

  constructor(
    registry: Registry,
    private readonly source: VsockDeviceSource,
  ) {
    const last = this.#last;
    const read = (): Promise<void> => this.#read();
    for (const [field, family] of Object.entries(VSOCK_DEVICE_FAMILIES) as [keyof DeviceMetrics, Family][]) {
      const config = { name: family.name, help: family.help, labelNames: ['vm'], registers: [registry] };
      if (family.type === 'gauge') {
        new Gauge({
          ...config,
          async collect() {
            await read();
            this.reset();
            for (const [vm, m] of last) this.set({ vm }, m[field]);
          },
        });
      } else {
        new Counter({
          ...config,
          async collect() {
            await read();
            this.reset();
            for (const [vm, m] of last) this.inc({ vm }, Math.max(0, m[field]));
          },
        });
      }
    }
  }

  forgetVm(vm: string): void {
    this.#last.delete(vm);
  }

  /** One read of every VM's file per scrape, however many families ask. */
  #read(): Promise<void> {
    this.#reading ??= this.#readAll().finally(() => {
      this.#reading = undefined;
    });
    return this.#reading;
  }

  async #readAll(): Promise<void> {
    const vms = this.source.vms();
    // A VM deleted while a scrape read its file is dropped here at the latest.
    for (const vm of this.#last.keys()) if (!vms.includes(vm)) this.#last.delete(vm);
    await Promise.all(
      vms.map(async (vm) => {
        try {
          const parsed = JSON.parse(await readFile(this.source.metricsFile(vm), 'utf8')) as Partial<DeviceMetrics>;
          const previous = this.#last.get(vm);
          const next = {} as DeviceMetrics;
          for (const field of Object.keys(VSOCK_DEVICE_FAMILIES) as (keyof DeviceMetrics)[]) {
            const v = parsed[field];
            next[field] = typeof v === 'number' && Number.isFinite(v) ? v : (previous?.[field] ?? 0);
          }
          this.#last.set(vm, next);
        } catch {
          // No file (a stopped VM, a VMM without this device) or a torn one: keep what was read last.
        }
      }),
    );
  }
}

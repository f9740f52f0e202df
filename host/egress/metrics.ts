/**
 * The egress proxies' metric families (prom-client), one set for all of a volantd's per-VM
 * proxies, registered in its one registry (docs/metrics.md):
 *
 *   volant_egress_decisions_total{vm,method,decision,reason}  counter
 *   volant_egress_bytes_total{vm,direction}                   counter (in: upstream → VM, out: VM → upstream)
 *   volant_egress_active_tunnels{vm}                          gauge
 *
 * Label sets are bounded by the VMs × the fixed reason list, never by client input (hosts are
 * not labels); a peer no VM claims is `vm=""`. A VM's series outlive its proxy (a stopped VM keeps
 * its counts) and are removed by `forgetVm` when the VM is deleted.
 */

import { Counter, Gauge, type Registry } from 'prom-client';

export interface DecisionLabels {
  vm: string;
  method: 'CONNECT' | 'HTTP';
  decision: 'allow' | 'deny';
  reason: string;
}

type Labels = { vm: string } & Record<string, string>;

export class EgressMetrics {
  readonly #decisions: Counter<keyof DecisionLabels>;
  readonly #bytes: Counter<'vm' | 'direction'>;
  readonly #tunnels: Gauge<'vm'>;
  /** Every label set recorded per VM, so `forgetVm` removes exactly that VM's series. */
  readonly #seen = new Map<string, Map<string, { remove: (labels: Labels) => void; labels: Labels }>>();

  constructor(registry: Registry) {
    const registers = [registry];
    this.#decisions = new Counter({
      name: 'volant_egress_decisions_total',
      help: 'Egress proxy decisions by VM, method (CONNECT or plain HTTP), allow/deny and reason.',
      labelNames: ['vm', 'method', 'decision', 'reason'],
      registers,
    });
    this.#bytes = new Counter({
      name: 'volant_egress_bytes_total',
      help: 'Bytes relayed by the egress proxy (in: from upstream to the VM, out: from the VM).',
      labelNames: ['vm', 'direction'],
      registers,
    });
    this.#tunnels = new Gauge({ name: 'volant_egress_active_tunnels', help: 'Open CONNECT tunnels per VM.', labelNames: ['vm'], registers });
  }

  recordDecision(l: DecisionLabels): void {
    this.#decisions.inc(l);
    this.#remember('decisions', this.#decisions, { ...l });
  }

  recordBytes(vm: string, direction: 'in' | 'out', n: number): void {
    if (n <= 0) return;
    const labels = { vm, direction };
    this.#bytes.inc(labels, n);
    this.#remember('bytes', this.#bytes, labels);
  }

  tunnelOpened(vm: string): void {
    this.#tunnels.inc({ vm });
    this.#remember('tunnels', this.#tunnels, { vm });
  }

  tunnelClosed(vm: string): void {
    this.#tunnels.dec({ vm });
  }

  /** Sum of the decision counter over the series whose labels match every given one. */
  async count(filter: Partial<DecisionLabels> = {}): Promise<number> {
    const wanted = Object.entries(filter);
    let n = 0;
    for (const v of (await this.#decisions.get()).values) {
      const labels = v.labels as Partial<Record<string, string | number>>;
      if (wanted.every(([k, want]) => labels[k] === want)) n += v.value;
    }
    return n;
  }

  /** Removes every series of the VM (it was deleted). */
  forgetVm(vm: string): void {
    for (const { remove, labels } of this.#seen.get(vm)?.values() ?? []) remove(labels);
    this.#seen.delete(vm);
  }

  #remember(family: string, metric: { remove(labels: Labels): void }, labels: Labels): void {
    let sets = this.#seen.get(labels.vm);
    if (sets === undefined) {
      sets = new Map();
      this.#seen.set(labels.vm, sets);
    }
    const key = `${family}\0${Object.values(labels).join('\0')}`;
    if (!sets.has(key)) sets.set(key, { remove: (l) => metric.remove(l), labels });
  }
}

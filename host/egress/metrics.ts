/**
 * Prometheus counters of the egress proxy, rendered in the text exposition format (0.0.4) so
 * volantd's `/metrics` can append them. Label values are escaped; label sets are bounded by the
 * number of VMs × the fixed reason list, never by client input (hosts are not labels).
 */

export interface DecisionLabels {
  vm: string;
  method: 'CONNECT' | 'HTTP';
  decision: 'allow' | 'deny';
  reason: string;
}

const escapeLabel = (v: string): string => v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');

export class EgressMetrics {
  private readonly decisions = new Map<string, number>();
  private readonly bytes = new Map<string, number>();
  private readonly active = new Map<string, number>();

  recordDecision(l: DecisionLabels): void {
    const key = `vm="${escapeLabel(l.vm)}",method="${l.method}",decision="${l.decision}",reason="${escapeLabel(l.reason)}"`;
    this.decisions.set(key, (this.decisions.get(key) ?? 0) + 1);
  }

  recordBytes(vm: string, direction: 'in' | 'out', n: number): void {
    if (n <= 0) return;
    const key = `vm="${escapeLabel(vm)}",direction="${direction}"`;
    this.bytes.set(key, (this.bytes.get(key) ?? 0) + n);
  }

  tunnelOpened(vm: string): void {
    const key = `vm="${escapeLabel(vm)}"`;
    this.active.set(key, (this.active.get(key) ?? 0) + 1);
  }

  tunnelClosed(vm: string): void {
    const key = `vm="${escapeLabel(vm)}"`;
    this.active.set(key, (this.active.get(key) ?? 1) - 1);
  }

  /** Sum of the decision counter over entries whose labels contain every given `k="v"`. */
  count(filter: Partial<DecisionLabels> = {}): number {
    let n = 0;
    const parts = Object.entries(filter).map(([k, v]) => `${k}="${escapeLabel(String(v))}"`);
    for (const [key, v] of this.decisions) if (parts.every((p) => key.split(',').includes(p))) n += v;
    return n;
  }

  render(): string {
    const lines: string[] = [];
    const block = (name: string, type: string, help: string, m: Map<string, number>): void => {
      lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
      for (const [k, v] of m) lines.push(`${name}{${k}} ${v}`);
    };
    block('volant_egress_decisions_total', 'counter', 'Egress proxy decisions by VM, method, allow/deny and reason.', this.decisions);
    block('volant_egress_bytes_total', 'counter', 'Bytes relayed by the egress proxy (in: from upstream to the VM, out: from the VM).', this.bytes);
    block('volant_egress_active_tunnels', 'gauge', 'Open CONNECT tunnels per VM.', this.active);
    return `${lines.join('\n')}\n`;
  }
}

/**
 * A small Prometheus text-format registry. Counters are incremented by the code that knows the
 * event; gauges are read at scrape time from collectors (VMs by state, leases), so the numbers
 * can never drift from the store. Other modules register their own collectors (egress, ingress).
 */

export type Labels = Record<string, string>;

export interface Sample {
  labels?: Labels;
  value: number;
}

export interface MetricFamily {
  name: string;
  help: string;
  type: 'counter' | 'gauge';
  samples: Sample[];
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;

function escapeLabel(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}

function labelText(labels: Labels | undefined): string {
  const entries = Object.entries(labels ?? {});
  if (entries.length === 0) return '';
  return `{${entries.map(([k, v]) => `${k}="${escapeLabel(v)}"`).join(',')}}`;
}

export function renderFamilies(families: MetricFamily[]): string {
  const out: string[] = [];
  for (const f of families) {
    out.push(`# HELP ${f.name} ${f.help.replace(/\n/g, ' ')}`, `# TYPE ${f.name} ${f.type}`);
    for (const s of f.samples) out.push(`${f.name}${labelText(s.labels)} ${Number.isFinite(s.value) ? s.value : 0}`);
  }
  return `${out.join('\n')}\n`;
}

export class Counter {
  private readonly values = new Map<string, { labels: Labels; value: number }>();
  constructor(
    readonly name: string,
    readonly help: string,
  ) {
    if (!NAME.test(name)) throw new Error(`metric name ${name} is not valid`);
  }

  inc(labels: Labels = {}, by = 1): void {
    const key = JSON.stringify(Object.entries(labels).sort());
    const cur = this.values.get(key);
    if (cur) cur.value += by;
    else this.values.set(key, { labels, value: by });
  }

  family(): MetricFamily {
    return { name: this.name, help: this.help, type: 'counter', samples: [...this.values.values()] };
  }
}

export type Collector = () => MetricFamily[];

export class MetricsRegistry {
  private readonly counters: Counter[] = [];
  private readonly collectors: Collector[] = [];
  private readonly texts: (() => string)[] = [];

  counter(name: string, help: string): Counter {
    const c = new Counter(name, help);
    this.counters.push(c);
    return c;
  }

  register(collector: Collector): void {
    this.collectors.push(collector);
  }

  /** For modules that already render Prometheus text themselves (the egress proxy). */
  registerText(render: () => string): void {
    this.texts.push(render);
  }

  render(): string {
    const families = [...this.counters.map((c) => c.family())];
    for (const collect of this.collectors) {
      try {
        families.push(...collect());
      } catch {
        // a broken collector must not take /metrics down with it
      }
    }
    let text = renderFamilies(families);
    for (const r of this.texts) {
      try {
        text += r();
      } catch {
        // as above
      }
    }
    return text;
  }
}

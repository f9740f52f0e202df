/**
 * The egress proxy's record of what it decided: one counter increment per decision (metrics.ts),
 * and audit lines for the operator's log.
 *
 * What must hold:
 *  - every allowed exchange is one audit line (with bytes and duration), written when it ends;
 *  - a denial is written the first time it happens in a window; identical denials after it (same
 *    VM, method, host, port, address, reason and status) are counted, not written, and one
 *    summary line (`repeated: <count>`, `window_ms`) follows when the window closes. A VM that
 *    hammers the proxy with refused requests costs the log two lines per distinct refusal per
 *    window, and distinct refusals are bounded by the VM's rate budget (limits.ts);
 *  - at most AUDIT_MAX_TRACKED_DENIALS distinct denials are tracked per window; past that they are
 *    written as they come (still bounded by the rate budgets);
 *  - an audit sink that throws never takes the proxy down.
 */

import type { DenyReason } from './decide.js';
import type { EgressMetrics } from './metrics.js';
import type { Target } from './target.js';

export const AUDIT_WINDOW_MS = 10_000;
export const AUDIT_MAX_TRACKED_DENIALS = 1024;

export interface AuditRecord {
  time: string;
  vm: string | null;
  method: string;
  host: string | null;
  port: number | null;
  address: string | null;
  decision: 'allow' | 'deny';
  reason: DenyReason | 'allowed';
  rule: string | null;
  status: number;
  bytes_in: number;
  bytes_out: number;
  duration_ms: number;
  /** Summary lines only: how many identical denials followed the first one in this window. */
  repeated?: number;
  window_ms?: number;
}

/** One request or tunnel as it is being decided: what the audit line will say. */
export interface Exchange {
  start: number;
  vm: string | null;
  method: string;
  target?: Target;
  address?: string;
  rule?: string;
}

export function newExchange(method: string): Exchange {
  return { start: performance.now(), vm: null, method };
}

export class AuditTrail {
  private readonly window = new Map<string, { last: AuditRecord; repeated: number }>();
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly metrics: EgressMetrics,
    private readonly sink: ((record: AuditRecord) => void) | undefined,
    private readonly windowMs: number = AUDIT_WINDOW_MS,
  ) {}

  record(x: Exchange, decision: 'allow' | 'deny', reason: DenyReason | 'allowed', status: number, bytesIn = 0, bytesOut = 0): void {
    this.metrics.recordDecision({ vm: x.vm ?? '', method: x.method === 'CONNECT' ? 'CONNECT' : 'HTTP', decision, reason });
    if (x.vm) {
      this.metrics.recordBytes(x.vm, 'in', bytesIn);
      this.metrics.recordBytes(x.vm, 'out', bytesOut);
    }
    if (this.sink === undefined) return;
    const rec: AuditRecord = {
      time: new Date().toISOString(),
      vm: x.vm,
      method: x.method,
      host: x.target?.host ?? null,
      port: x.target?.port ?? null,
      address: x.address ?? null,
      decision,
      reason,
      rule: x.rule ?? null,
      status,
      bytes_in: bytesIn,
      bytes_out: bytesOut,
      duration_ms: Math.round(performance.now() - x.start),
    };
    if (decision === 'allow') {
      this.write(rec);
      return;
    }
    const key = `${rec.vm}\0${rec.method}\0${rec.host}\0${rec.port}\0${rec.address}\0${rec.reason}\0${rec.status}`;
    const seen = this.window.get(key);
    if (seen !== undefined) {
      seen.repeated++;
      seen.last = rec;
      return;
    }
    if (this.window.size < AUDIT_MAX_TRACKED_DENIALS) {
      this.window.set(key, { last: rec, repeated: 0 });
      this.timer ??= setTimeout(() => this.flush(), this.windowMs).unref();
    }
    this.write(rec);
  }

  /** Closes the window: one summary line per denial that repeated. */
  flush(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    const time = new Date().toISOString();
    for (const { last, repeated } of this.window.values()) {
      if (repeated > 0) this.write({ ...last, time, repeated, window_ms: this.windowMs });
    }
    this.window.clear();
  }

  private write(rec: AuditRecord): void {
    try {
      this.sink?.(rec);
    } catch {
      // An audit sink that throws must not take the proxy down.
    }
  }
}

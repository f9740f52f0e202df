/**
 * Per-VM admission for the egress proxy: a token bucket for the request rate (a CONNECT counts
 * as one request) and counters for concurrent tunnels per VM and in-flight work overall. They
 * answer "may this start?" and nothing else; the proxy maps a refusal to 429 (this VM is over
 * its share) or 503 (the host is). The clock is injected so tests and decisions stay pure.
 */

export const REQUESTS_PER_SECOND_PER_VM = 50;
export const REQUEST_BURST_PER_VM = 100;
export const MAX_TUNNELS_PER_VM = 64;
export const MAX_CONCURRENT_TOTAL = 4096;

export class TokenBucket {
  private tokens: number;
  private last: number;

  constructor(
    private readonly ratePerSecond: number,
    private readonly burst: number,
    now: number,
  ) {
    this.tokens = burst;
    this.last = now;
  }

  /** Takes one token if there is one; `now` in milliseconds, monotonic. */
  take(now: number): boolean {
    const elapsed = Math.max(0, now - this.last);
    this.last = now;
    this.tokens = Math.min(this.burst, this.tokens + (elapsed * this.ratePerSecond) / 1000);
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }
}

export interface LimitsOptions {
  requestsPerSecondPerVm?: number;
  requestBurstPerVm?: number;
  maxTunnelsPerVm?: number;
  maxConcurrentTotal?: number;
}

export type Admission = 'ok' | 'rate-limited' | 'tunnel-limit' | 'overloaded';

export class EgressLimits {
  private readonly buckets = new Map<string, TokenBucket>();
  private readonly tunnels = new Map<string, number>();
  private inFlight = 0;
  readonly rate: number;
  readonly burst: number;
  readonly maxTunnelsPerVm: number;
  readonly maxConcurrentTotal: number;

  constructor(opts: LimitsOptions = {}) {
    this.rate = opts.requestsPerSecondPerVm ?? REQUESTS_PER_SECOND_PER_VM;
    this.burst = opts.requestBurstPerVm ?? Math.max(this.rate, REQUEST_BURST_PER_VM);
    this.maxTunnelsPerVm = opts.maxTunnelsPerVm ?? MAX_TUNNELS_PER_VM;
    this.maxConcurrentTotal = opts.maxConcurrentTotal ?? MAX_CONCURRENT_TOTAL;
  }

  /** Admits one request or tunnel; on 'ok' the caller must call `release` exactly once. */
  admit(vm: string, tunnel: boolean, now: number): Admission {
    if (this.inFlight >= this.maxConcurrentTotal) return 'overloaded';
    if (tunnel && (this.tunnels.get(vm) ?? 0) >= this.maxTunnelsPerVm) return 'tunnel-limit';
    let bucket = this.buckets.get(vm);
    if (!bucket) {
      bucket = new TokenBucket(this.rate, this.burst, now);
      this.buckets.set(vm, bucket);
    }
    if (!bucket.take(now)) return 'rate-limited';
    this.inFlight++;
    if (tunnel) this.tunnels.set(vm, (this.tunnels.get(vm) ?? 0) + 1);
    return 'ok';
  }

  release(vm: string, tunnel: boolean): void {
    this.inFlight--;
    if (!tunnel) return;
    const n = (this.tunnels.get(vm) ?? 1) - 1;
    if (n <= 0) this.tunnels.delete(vm);
    else this.tunnels.set(vm, n);
  }

  activeTunnels(vm: string): number {
    return this.tunnels.get(vm) ?? 0;
  }

  get active(): number {
    return this.inFlight;
  }
}

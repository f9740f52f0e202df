/**
 * Admission limits of the egress proxy: a token bucket per VM for the request rate, and counters
 * for concurrent tunnels per VM and in-flight work overall. They answer "may this start?" and
 * nothing else; the proxy maps a refusal to 429 (this VM is over its share) or 503 (the host is).
 *
 * What must hold:
 *  - every request a VM makes takes a token before it is decided, refused or not (a VM cannot
 *    make unlimited denied requests and audit lines). Peers no VM policy claims share one bucket
 *    (UNIDENTIFIED_PEER), so they are bounded too;
 *  - the overall concurrency limit is host-wide: one `EgressLimits` is shared by every VM's
 *    listener (host/daemon/egress.ts), and VM buckets are keyed by VM name;
 *  - `acquire` that answered 'ok' is matched by exactly one `release`.
 *
 * The clock is injected so tests and decisions stay pure.
 */

export const REQUESTS_PER_SECOND_PER_VM = 50;
export const REQUEST_BURST_PER_VM = 100;
export const MAX_TUNNELS_PER_VM = 64;
export const MAX_CONCURRENT_TOTAL = 4096;
/** The bucket of peers that no VM policy claims (VM names are never empty). */
export const UNIDENTIFIED_PEER = '';

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

export type Slot = 'ok' | 'tunnel-limit' | 'overloaded';

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

  /** Charges one request (allowed or refused) to `vm`'s rate budget; false when it is spent. */
  take(vm: string, now: number): boolean {
    let bucket = this.buckets.get(vm);
    if (!bucket) {
      bucket = new TokenBucket(this.rate, this.burst, now);
      this.buckets.set(vm, bucket);
    }
    return bucket.take(now);
  }

  /** A concurrency slot for an allowed request or tunnel; on 'ok' the caller must `release` once. */
  acquire(vm: string, tunnel: boolean): Slot {
    if (this.inFlight >= this.maxConcurrentTotal) return 'overloaded';
    if (tunnel && (this.tunnels.get(vm) ?? 0) >= this.maxTunnelsPerVm) return 'tunnel-limit';
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

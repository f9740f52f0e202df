/**
 * One keep-alive connection pool per VM (an undici `Pool` whose connector dials kestrel over the
 * VM's transport). Requests to one VM reuse warm connections; a VM cannot exhaust another's.
 * Pipelining stays off (one request per connection at a time): a slow response must not hold
 * up the next request on the same connection.
 *
 * A VM whose transport changes (restarted with another socket or address) gets a fresh pool;
 * `forget` drops a VM's pool when it stops. Closing a pool lets in-flight requests finish.
 */

import { Pool } from 'undici';
import { type IngressTransport, dialAgent, transportKey } from './dialer.js';

export interface PoolLimits {
  connectTimeoutMs: number;
  headersTimeoutMs: number;
  bodyTimeoutMs: number;
  maxConnectionsPerVm: number;
  /** How long an idle kept-alive connection stays open (kestrel's own keep-alive is 5 s). */
  keepAliveTimeoutMs: number;
}

interface Entry {
  transport: IngressTransport;
  key: string;
  /** By the kestrel port dialled (dialer.ts `ingressUpstreamPort`: the relay, or kestrel's HTTP port). */
  pools: Map<number, Pool>;
}

export class VmPools {
  private readonly byVm = new Map<string, Entry>();

  constructor(private readonly limits: PoolLimits) {}

  /** The pool for `vmName` over `transport` to kestrel's `port`, created on first use or when the transport changed. */
  get(vmName: string, transport: IngressTransport, port: number): Pool {
    let entry = this.byVm.get(vmName);
    // Same object as last time (a lookup that caches) is the common case: no string building.
    if (entry !== undefined && entry.transport !== transport && entry.key !== transportKey(transport)) {
      for (const p of entry.pools.values()) void p.close().catch(() => undefined);
      entry = undefined;
    }
    if (entry === undefined) {
      entry = { transport, key: transportKey(transport), pools: new Map() };
      this.byVm.set(vmName, entry);
    }
    let pool = entry.pools.get(port);
    if (pool === undefined) {
      pool = this.create(transport, port);
      entry.pools.set(port, pool);
    }
    return pool;
  }

  private create(transport: IngressTransport, port: number): Pool {
    const { connectTimeoutMs, headersTimeoutMs, bodyTimeoutMs, maxConnectionsPerVm, keepAliveTimeoutMs } = this.limits;
    const origin = transport.kind === 'tcp' ? `http://${transport.host.includes(':') ? `[${transport.host}]` : transport.host}:${transport.port}` : 'http://localhost';
    return new Pool(origin, {
      connections: maxConnectionsPerVm,
      pipelining: 1,
      headersTimeout: headersTimeoutMs,
      bodyTimeout: bodyTimeoutMs,
      keepAliveTimeout: keepAliveTimeoutMs,
      keepAliveMaxTimeout: keepAliveTimeoutMs,
      connect: (_opts, callback) => {
        dialAgent(transport, connectTimeoutMs, undefined, port).then(
          (socket) => callback(null, socket),
          (err: Error) => callback(err, null),
        );
      },
    });
  }

  forget(vmName: string): void {
    const entry = this.byVm.get(vmName);
    if (entry === undefined) return;
    this.byVm.delete(vmName);
    for (const p of entry.pools.values()) void p.close().catch(() => undefined);
  }

  async close(): Promise<void> {
    const pools = [...this.byVm.values()].flatMap((e) => [...e.pools.values()]);
    this.byVm.clear();
    await Promise.all(pools.map((p) => p.destroy().catch(() => undefined)));
  }
}

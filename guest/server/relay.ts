/**
 * The raw relay on AGENT_RELAY_PORT: each connection is piped byte for byte to the workload's
 * HTTP port, with no HTTP parsing here. It exists for the host's ingress, which has already
 * parsed and checked every request it sends (request line, framing, hop-by-hop and forwarding
 * headers) and checks every response head it gets back before a client sees it
 * (host/ingress/headers.ts, shared/http-response-head.ts) — so a second parse in the guest only
 * costs time. kestrel's own API and its HTTP-aware proxy stay on AGENT_VSOCK_PORT.
 *
 * What must hold (docs/agent.md):
 *  - only the host reaches it: on vsock only CID 2 can reach a guest port from outside (and a
 *    process in the guest, over the loopback CID, reaches nothing it could not dial itself); on
 *    TCP `admit` lets in only the host's bridge address;
 *  - a workload that is down or refuses the connection gets the one JSON error shape (502, with
 *    Retry-After while it restarts), as on the HTTP-aware path, before any byte was relayed;
 *  - bytes flow with backpressure both ways (pipe), half-closes pass through, and a reset on one
 *    side resets the other; nothing outlives `closeAll()`.
 */

import { connect, type Socket } from 'node:net';
import { VolantError } from '../../shared/errors.js';
import { sendErrorOnSocket } from '../../shared/http-error-response.js';
import type { WorkloadSnapshot } from '../workload/supervisor.js';
import { downReason } from './proxy.js';

export const RELAY_CONNECT_TIMEOUT_MS = 5000;

export interface RelayOptions {
  /** The workload's HTTP listener (shared/schema/manifest.ts `workloadRelayTarget`). */
  target: { host: string; port: number };
  workload: () => WorkloadSnapshot;
  /** Whether a connecting peer may use the relay (TCP: the host's address only); absent: everyone that can connect. */
  admit?: (socket: Socket) => boolean;
}

export interface WorkloadRelay {
  handle(socket: Socket): void;
  /** Cuts every relayed connection (shutdown). */
  closeAll(): void;
  readonly stats: { relayed: number; refused: number; failed: number };
}

/**
 * Whether a peer may use the relay: on TCP only the host's bridge address (`hostAddress`, the
 * gateway of bridged mode's `ip=`); a peer without an address (vsock, Unix) is the host or the
 * guest itself. A TCP peer when the host's address is not known is refused.
 */
export function relayAdmits(remoteAddress: string | undefined, hostAddress: string | undefined): boolean {
  if (remoteAddress === undefined) return true;
  return hostAddress !== undefined && remoteAddress.replace(/^::ffff:/, '') === hostAddress;
}

export function createWorkloadRelay(opts: RelayOptions): WorkloadRelay {
  const { host, port } = opts.target;
  const open = new Set<Socket>();
  const stats = { relayed: 0, refused: 0, failed: 0 };

  function fail(client: Socket, err: VolantError, headers: Record<string, string> = {}): void {
    stats.failed++;
    sendErrorOnSocket(client, err, { headers });
  }

  function handle(client: Socket): void {
    if (opts.admit && !opts.admit(client)) {
      stats.refused++;
      client.destroy();
      return;
    }
    // A half-close (the peer shut its write side) passes through: the other side still answers.
    client.allowHalfOpen = true;
    client.on('error', () => client.destroy());
    const w = opts.workload();
    const down = downReason(w);
    if (down !== undefined) {
      fail(client, new VolantError('UPSTREAM_UNREACHABLE', down), w.restart_in_ms === undefined ? {} : { 'retry-after': String(Math.max(1, Math.ceil(w.restart_in_ms / 1000))) });
      return;
    }
    const upstream = connect({ host, port, noDelay: true, allowHalfOpen: true });
    open.add(client);
    open.add(upstream);
    let connected = false;
    upstream.setTimeout(RELAY_CONNECT_TIMEOUT_MS, () => upstream.destroy(Object.assign(new Error('connect timeout'), { code: 'ETIMEDOUT' })));
    upstream.once('connect', () => {
      connected = true;
      stats.relayed++;
      upstream.setTimeout(0);
      client.pipe(upstream);
      upstream.pipe(client);
    });
    upstream.on('error', (e: NodeJS.ErrnoException) => {
      if (connected) {
        client.destroy();
        return;
      }
      const code = e.code === 'ETIMEDOUT' ? 'TIMEOUT' : 'UPSTREAM_UNREACHABLE';
      fail(client, new VolantError(code, `the workload at http://${host}:${port} failed: ${e.code ?? e.message} (workload state: ${opts.workload().state})`));
    });
    client.once('close', (hadError) => {
      open.delete(client);
      // Clean close: both directions ended, and pipe has ended the upstream's write side.
      if (hadError || !connected) upstream.destroy();
      else upstream.end();
    });
    upstream.once('close', (hadError) => {
      open.delete(upstream);
      if (hadError && connected) client.destroy();
    });
  }

  return {
    handle,
    closeAll() {
      for (const s of open) s.destroy();
      open.clear();
    },
    stats,
  };
}

/**
 * Step 7 of boot (when outbound is allowed): the workload's HTTP proxy on 127.0.0.1:3128.
 *
 * kestrel does not decide where the workload may go; the host's egress proxy does. The
 * forwarder's job is narrower: read the first request head, refuse garbage with a 400 before
 * any upstream is opened (head.ts), then open one upstream stream (vsock to the host, or TCP /
 * Unix outside a VM) per client connection and carry the bytes both ways unchanged, starting
 * with the head it read. The host answers CONNECT, applies the allowlist and speaks for itself.
 *
 * Named limits keep a misbehaving workload from exhausting the agent: a head must arrive within
 * HEAD_TIMEOUT_MS, and at most MAX_FORWARDER_CONNECTIONS connections run at once (503 beyond).
 */

import { createServer, type Server, type Socket } from 'node:net';
import { type ErrorCode, VolantError } from '../../shared/errors.js';
import { rawErrorResponse } from '../../shared/http-error-response.js';
import type { Endpoint } from '../server/endpoint.js';
import { dial } from '../server/transports.js';
import { parseProxyHead } from './head.js';

export const HEAD_TIMEOUT_MS = 10_000;
export const MAX_FORWARDER_CONNECTIONS = 512;
/** After a refusal, how long the rest of the client's bytes are read and dropped. */
export const REJECT_LINGER_MS = 2000;
export const DEFAULT_EGRESS_LISTEN = { host: '127.0.0.1', port: 3128 } as const;

export interface ForwarderMetrics {
  accepted: number;
  rejected: number;
  upstreamFailures: number;
  active: number;
}

export interface EgressForwarder {
  server: Server;
  metrics: ForwarderMetrics;
  /** Feed a connection from any transport. */
  handle(socket: Socket): void;
  /** Cuts every open connection (shutdown). */
  closeAll(): void;
}

/** Answers in the one error shape (shared/http-error-response.ts) and closes. */
function respond(socket: Socket, code: ErrorCode, message: string): void {
  socket.end(rawErrorResponse(new VolantError(code, message)));
}

export function createEgressForwarder(opts: { upstream: Endpoint; dial?: (e: Endpoint) => Promise<Socket> }): EgressForwarder {
  const dialUpstream = opts.dial ?? dial;
  const metrics: ForwarderMetrics = { accepted: 0, rejected: 0, upstreamFailures: 0, active: 0 };
  const open = new Set<Socket>();

  const handle = (client: Socket): void => {
    if (metrics.active >= MAX_FORWARDER_CONNECTIONS) {
      metrics.rejected++;
      respond(client, 'OVERLOADED', `the egress forwarder already carries ${MAX_FORWARDER_CONNECTIONS} connections`);
      return;
    }
    metrics.active++;
    metrics.accepted++;
    open.add(client);
    client.on('error', () => client.destroy());
    const chunks: Buffer[] = [];
    let received = 0;
    let headDone = false;
    const timer = setTimeout(() => {
      metrics.rejected++;
      respond(client, 'REQUEST_TIMEOUT', `no complete request head within ${HEAD_TIMEOUT_MS} ms`);
    }, HEAD_TIMEOUT_MS);
    client.once('close', () => {
      open.delete(client);
      metrics.active--;
      clearTimeout(timer);
    });
    const onData = (chunk: Buffer): void => {
      chunks.push(chunk);
      received += chunk.length;
      const result = parseProxyHead(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, received));
      if (result.state === 'need-more') return;
      headDone = true;
      clearTimeout(timer);
      client.off('data', onData);
      client.pause();
      if (result.state === 'reject') {
        metrics.rejected++;
        respond(client, 'INVALID_ARGUMENT', result.reason);
        // Read and drop what the client still sends, so the 400 is not lost to a reset.
        client.resume();
        setTimeout(() => client.destroy(), REJECT_LINGER_MS).unref();
        return;
      }
      const buffered = Buffer.concat(chunks, received);
      dialUpstream(opts.upstream).then(
        (upstream) => {
          if (client.destroyed) {
            upstream.destroy();
            return;
          }
          upstream.on('error', () => client.destroy());
          client.on('error', () => upstream.destroy());
          upstream.once('close', () => client.destroy());
          client.once('close', () => upstream.destroy());
          upstream.write(buffered);
          client.pipe(upstream);
          upstream.pipe(client);
          client.resume();
        },
        (e: unknown) => {
          metrics.upstreamFailures++;
          const err = e instanceof VolantError ? e : new VolantError('UPSTREAM_UNREACHABLE', String(e));
          respond(client, err.code, `the host egress proxy is unreachable: ${err.message}`);
        },
      );
    };
    client.on('data', onData);
    client.once('end', () => {
      if (headDone) return;
      clearTimeout(timer);
      client.end();
    });
  };

  const server = createServer(handle);
  return {
    server,
    metrics,
    handle,
    closeAll: () => {
      for (const s of open) s.destroy();
    },
  };
}

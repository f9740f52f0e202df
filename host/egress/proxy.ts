/**
 * The per-VM egress proxy: an HTTP/1.1 forward proxy on a Unix socket (the VM's `<vsock>_3128`,
 * reached by guest-initiated hybrid vsock) or on TCP (the bridge address; `policyFor` maps the
 * source address to the VM). It serves `CONNECT host:port` tunnels (tunnel.ts) and absolute-form
 * `http://` requests (forward-http.ts), and nothing else. This module only wires them to a
 * server and owns its life: the decisions live in admission.ts and decide.ts, dialling in
 * dial.ts, the record in audit.ts.
 *
 * What must hold (decide.ts has the pipeline):
 *  - every request is decided on exactly the bytes the client sent, and refused with an HTTP
 *    status and the one JSON error body naming the reason, never with a hang or a silent close
 *    (except after a tunnel's 200, where closing is all HTTP leaves);
 *  - only HTTP/1.0 and 1.1 request lines are served (shared/http-request-line.ts); the HTTP
 *    parser's own refusals (431, 408, 400) are answered in the same shape;
 *  - every request, refused or not, is charged to its VM's rate budget before it is decided;
 *  - the proxy resolves names itself and dials exactly an address it checked;
 *  - each decision produces one counter increment and an audit record (aggregated for repeated
 *    denials);
 *  - the host-wide limits are host-wide: give every VM's proxy the same `limits`.
 */

import { unlinkSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { Socket } from 'node:net';
import { Registry } from 'prom-client';
import { clientErrorRefusal, writeClientErrorAnswer } from '../../shared/http-error-response.js';
import { requestLineRefusal } from '../../shared/http-request-line.js';
import { AddressPolicy } from './address-policy.js';
import { AllowlistCache, charge } from './admission.js';
import { AuditTrail, newExchange } from './audit.js';
import { deny, denialError } from './decide.js';
import { TUNNEL_BUFFER_BYTES } from './dial.js';
import type { ProxyEnv } from './env.js';
import { handlePlainRequest } from './forward-http.js';
import { EgressLimits } from './limits.js';
import { EgressMetrics } from './metrics.js';
import { checkOptions, type EgressProxyOptions, HEADERS_TIMEOUT_MS, KEEP_ALIVE_TIMEOUT_MS, settingsOf } from './options.js';
import { refuseOnSocket } from './refusal.js';
import { createDnsResolver, DNS_TIMEOUT_MS, type NameResolver } from './resolver.js';
import { handleConnect } from './tunnel.js';

export type { AuditRecord } from './audit.js';
export {
  CLIENT_HELLO_TIMEOUT_MS,
  CONNECT_TIMEOUT_MS,
  type EgressPeer,
  type EgressPolicy,
  type EgressProxyOptions,
  IDLE_TIMEOUT_MS,
  MAX_HEADER_BYTES,
  MAX_REQUEST_BODY_BYTES,
} from './options.js';

export interface EgressProxy {
  address: { path: string } | { host: string; port: number };
  metrics: EgressMetrics;
  close(): Promise<void>;
}

/** Starts an egress proxy; rejects with VolantError INVALID_ARGUMENT for bad options (nothing listens then). */
export async function startEgressProxy(opts: EgressProxyOptions): Promise<EgressProxy> {
  checkOptions(opts);
  const resolver: NameResolver =
    opts.resolver && 'resolve' in opts.resolver
      ? opts.resolver
      : createDnsResolver({ servers: opts.resolver?.servers ?? [], timeoutMs: opts.dnsTimeoutMs ?? DNS_TIMEOUT_MS });
  const limits =
    opts.limits ??
    new EgressLimits({
      maxTunnelsPerVm: opts.maxTunnelsPerVm,
      requestsPerSecondPerVm: opts.requestsPerSecondPerVm,
      requestBurstPerVm: opts.requestBurstPerVm,
      maxConcurrentTotal: opts.maxConcurrent,
    });
  const metrics = opts.metrics ?? new EgressMetrics(new Registry());
  const env: ProxyEnv = {
    settings: settingsOf(opts),
    admission: {
      policyFor: opts.policyFor,
      limits,
      resolver,
      addresses: new AddressPolicy({ allowPrivate: opts.allowPrivate, deniedAddresses: opts.deniedAddresses }),
      allowlists: new AllowlistCache(),
    },
    audit: new AuditTrail(metrics, opts.audit, opts.auditWindowMs),
    metrics,
    sockets: new Set<Socket>(),
  };

  const server: Server = createServer({
    maxHeaderSize: env.settings.maxHeaderBytes,
    requireHostHeader: false,
    headersTimeout: HEADERS_TIMEOUT_MS,
    highWaterMark: TUNNEL_BUFFER_BYTES,
  });
  server.keepAliveTimeout = KEEP_ALIVE_TIMEOUT_MS;
  server.on('connect', (req, socket, head) => {
    handleConnect(env, req, socket as Socket, head).catch((err: unknown) => {
      opts.log?.error({ err }, 'CONNECT handling failed; the connection is cut');
      (socket as Socket).destroy();
    });
  });
  server.on('request', (req, res) => {
    handlePlainRequest(env, req, res).catch((err: unknown) => {
      opts.log?.error({ err }, 'request handling failed; the connection is cut');
      res.destroy();
    });
  });
  server.on('upgrade', (req, socket) => {
    const x = newExchange(req.method ?? 'GET');
    const peer = { remoteAddress: (socket as Socket).remoteAddress };
    const line = requestLineRefusal(req, { requireHost: false });
    const own = line
      ? deny('INVALID_ARGUMENT', 'http-version', line.message)
      : deny('NOT_SUPPORTED', 'upgrade-unsupported', 'protocol upgrades are not proxied as plain requests; use CONNECT');
    refuseOnSocket(env, x, socket, charge(env.admission, x, peer).denial ?? own);
  });
  server.on('connection', (s: Socket) => {
    env.sockets.add(s);
    s.on('close', () => env.sockets.delete(s));
  });
  server.on('clientError', (err: NodeJS.ErrnoException & { reason?: string }, socket: Socket) => {
    const x = newExchange('UNKNOWN');
    const refusal = clientErrorRefusal(err, env.settings.maxHeaderBytes);
    if (refusal === undefined) {
      socket.destroy();
      return;
    }
    const reason = refusal.code === 'HEADERS_TOO_LARGE' ? 'header-too-large' : refusal.code === 'REQUEST_TIMEOUT' ? 'incomplete-request' : 'bad-target';
    const d = charge(env.admission, x, { remoteAddress: socket.remoteAddress }).denial ?? deny(refusal.code, reason, refusal.message);
    env.audit.record(x, 'deny', d.reason, d.status);
    writeClientErrorAnswer(socket, denialError(d));
  });

  const listen = opts.listen;
  if ('path' in listen) {
    try {
      unlinkSync(listen.path);
    } catch {
      // no stale socket file
    }
  }
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    const done = (): void => {
      server.off('error', reject);
      resolve();
    };
    if ('path' in listen) server.listen(listen.path, done);
    else server.listen(listen.port, listen.host, done);
  });
  const bound = server.address();
  const address = 'path' in listen ? { path: listen.path } : { host: listen.host, port: typeof bound === 'object' && bound ? bound.port : listen.port };

  return {
    address,
    metrics,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => {
          if ('path' in listen) {
            try {
              unlinkSync(listen.path);
            } catch {
              // already gone
            }
          }
          env.audit.flush();
          resolve();
        });
        for (const s of env.sockets) s.destroy();
      }),
  };
}

/**
 * The ingress proxy: `ANY /api/v1/vms/:name/proxy/*` → kestrel in VM `:name` → the workload.
 *
 * The API's HTTP server offers every request and upgrade here first (after authentication);
 * `handleRequest`/`handleUpgrade` return `false` for what is not a proxy route, and `true` when
 * they took it (answered or forwarded). This sits in front of fastify on purpose: a proxied
 * request costs one path match, one header pass and one undici dispatch on a warm per-VM
 * connection, nothing more (see bench/ingress).
 *
 * Errors are the one JSON error shape (shared/http-error-response.ts) with `httpStatusFor`: unsafe
 * path or framing 400, unknown VM 404 and VM not running 409 (from `lookup`), guest unreachable or
 * answering with an invalid head 502, guest too slow 504. The server in front (host/api/server.ts)
 * has already refused what the request-line rule refuses (shared/http-request-line.ts).
 */

import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { VolantError } from '../../shared/errors.js';
import { sendErrorOnSocket, sendErrorResponse } from '../../shared/http-error-response.js';
import type { Logger } from '../log/logger.js';
import { describeTransport, type IngressTransport, ingressUpstreamPort, transportKey } from './dialer.js';
import { asVolantError, logFailure } from './failures.js';
import { dispatchOptions, ForwardHandler, type ForwardStats } from './forward.js';
import { Front, type FrontContext, type FrontTarget } from './front.js';
import { type ClientFacts, type UpstreamRequestHead, upstreamRequestHead } from './headers.js';
import { matchProxyPath } from './path.js';
import { VmPools } from './pools.js';
import { type TickClock, VmUpstreams } from './upstream.js';
import { tunnelUpgrade } from './upgrade.js';

export { matchProxyPath, type ProxyMatch, PROXY_ROUTE_PREFIX } from './path.js';
export type { IngressTransport } from './dialer.js';

/** A cached lookup: the fast path's target and the transport it was made for. */
interface CachedTarget extends FrontTarget {
  transport: IngressTransport;
}

export interface IngressTarget {
  vmName: string;
  transport: IngressTransport;
}

/** Default bound for reaching kestrel (hybrid-vsock handshake included; the VMM's own bound is 2 s). */
export const INGRESS_CONNECT_TIMEOUT_MS = 5_000;
/** Default bound for the guest to start answering, and for silence between body chunks. */
export const INGRESS_HEADERS_TIMEOUT_MS = 60_000;
export const INGRESS_BODY_TIMEOUT_MS = 60_000;
export const INGRESS_MAX_CONNECTIONS_PER_VM = 64;
export const INGRESS_KEEP_ALIVE_TIMEOUT_MS = 4_000;

export interface IngressOptions {
  /** The VM's transport; throws `VolantError` NOT_FOUND (404) or INVALID_STATE (409). May be async. */
  lookup(vmName: string): IngressTarget | Promise<IngressTarget>;
  /** Shorthand for headers and body timeouts (config `ingress.timeout_ms`). */
  timeoutMs?: number;
  connectTimeoutMs?: number;
  headersTimeoutMs?: number;
  bodyTimeoutMs?: number;
  maxConnectionsPerVm?: number;
  keepAliveTimeoutMs?: number;
  /** Failures are logged here under the request's X-Request-Id (`reqId`) and its VM. */
  log?: Logger;
}

export interface IngressMetrics extends ForwardStats {
  requests: number;
  upgrades: number;
  refused: number;
}

/** What the API server gives the fast path (front.ts): its auth rule, its hand-over, its limits. */
export type FrontOptions = Pick<FrontContext, 'authorize' | 'consumesAuthorization' | 'handOver' | 'maxHeaderBytes' | 'headersTimeoutMs' | 'keepAliveTimeoutMs'>;

export interface IngressFront {
  /** A new client connection: read on the fast path until a request that is not a proxy request. */
  accept(socket: Socket): void;
  /** Cuts every connection still on the fast path. */
  close(): void;
}

export interface Ingress {
  /** The fast path for the API server's connections (front.ts); the other handlers are the compatibility path. */
  front(opts: FrontOptions): IngressFront;
  handleRequest(req: IncomingMessage, res: ServerResponse): boolean;
  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): boolean;
  /** Drops the VM's warm connections (call when it stops or is deleted). */
  forget(vmName: string): void;
  close(): Promise<void>;
  readonly metrics: Readonly<IngressMetrics>;
}

function isPromise<T>(v: T | Promise<T>): v is Promise<T> {
  return typeof (v as { then?: unknown }).then === 'function';
}

function clientFacts(req: IncomingMessage, upgrade: boolean): ClientFacts {
  const socket = req.socket;
  return {
    remoteAddress: socket.remoteAddress,
    proto: (socket as { encrypted?: boolean }).encrypted ? 'https' : 'http',
    httpVersionMinor: req.httpVersionMinor,
    upgrade,
  };
}

export function createIngress(opts: IngressOptions): Ingress {
  const connectTimeoutMs = opts.connectTimeoutMs ?? INGRESS_CONNECT_TIMEOUT_MS;
  const headersTimeoutMs = opts.headersTimeoutMs ?? opts.timeoutMs ?? INGRESS_HEADERS_TIMEOUT_MS;
  const bodyTimeoutMs = opts.bodyTimeoutMs ?? opts.timeoutMs ?? INGRESS_BODY_TIMEOUT_MS;
  const pools = new VmPools({
    connectTimeoutMs,
    headersTimeoutMs,
    bodyTimeoutMs,
    maxConnectionsPerVm: opts.maxConnectionsPerVm ?? INGRESS_MAX_CONNECTIONS_PER_VM,
    keepAliveTimeoutMs: opts.keepAliveTimeoutMs ?? INGRESS_KEEP_ALIVE_TIMEOUT_MS,
  });
  const metrics: IngressMetrics = { requests: 0, upgrades: 0, refused: 0, responses: 0, upstreamErrors: 0, clientAborts: 0 };
  /** Client sockets of upgraded (WebSocket) connections, cut on `close()`. */
  const tunnels = new Set<Duplex>();
  const upstreamLimits = {
    connectTimeoutMs,
    headersTimeoutMs,
    bodyTimeoutMs,
    maxConnectionsPerVm: opts.maxConnectionsPerVm ?? INGRESS_MAX_CONNECTIONS_PER_VM,
    keepAliveTimeoutMs: opts.keepAliveTimeoutMs ?? INGRESS_KEEP_ALIVE_TIMEOUT_MS,
  };

  /*
   * The fast path's clock: one timer for every timeout (client heads, idle clients, guest heads
   * and bodies, idle guest sockets), so no request reads the clock or arms a timer.
   */
  const fronts = new Set<Front>();
  /** Per VM: the transport its sockets use and its upstream sockets per port (kestrel's HTTP agent port, its raw relay). */
  const upstreams = new Map<string, { key: string; byPort: Map<number, VmUpstreams> }>();
  const eachUpstreams = function* (): Generator<VmUpstreams> {
    for (const vm of upstreams.values()) yield* vm.byPort.values();
  };
  const clock: TickClock = { now: 0, intervalMs: sweepIntervalMs(headersTimeoutMs, bodyTimeoutMs, upstreamLimits.keepAliveTimeoutMs) };
  const sweeper = setInterval(() => {
    clock.now++;
    for (const f of fronts) f.sweep();
    for (const u of eachUpstreams()) u.sweep();
  }, clock.intervalMs);
  sweeper.unref();

  /*
   * VM lookups, cached: a proxied request costs a map read, not a store query. `forget` (the VM
   * stopped, was deleted or changed state) drops the entry; a lookup that was in flight when any
   * VM was forgotten is answered but not cached (`epoch`), so a stale transport never sticks.
   */
  const targets = new Map<string, CachedTarget>();
  let epoch = 0;

  /** The VM's sockets to `port` over `transport`; a VM whose transport changed starts afresh. */
  function upstreamsFor(vmName: string, transport: IngressTransport, port: number): VmUpstreams {
    const key = transportKey(transport);
    let vm = upstreams.get(vmName);
    if (vm !== undefined && vm.key !== key) {
      for (const u of vm.byPort.values()) u.close();
      vm = undefined;
    }
    if (vm === undefined) {
      vm = { key, byPort: new Map() };
      upstreams.set(vmName, vm);
    }
    const have = vm.byPort.get(port);
    if (have !== undefined) return have;
    const fresh: VmUpstreams = new VmUpstreams(transport, port, upstreamLimits, clock, () => {
      if (targets.get(vmName)?.transport === transport) targets.delete(vmName);
    });
    vm.byPort.set(port, fresh);
    return fresh;
  }

  function frontTarget(vmName: string): FrontTarget | Promise<FrontTarget> {
    const hit = targets.get(vmName);
    if (hit !== undefined) return hit;
    const at = epoch;
    const settle = (t: IngressTarget): FrontTarget => {
      const ft: CachedTarget = {
        vmName,
        transport: t.transport,
        upstreamsFor: (upstreamPath) => upstreamsFor(vmName, t.transport, ingressUpstreamPort(t.transport, upstreamPath)),
      };
      if (at === epoch) targets.set(vmName, ft);
      return ft;
    };
    const t = opts.lookup(vmName);
    return isPromise(t) ? t.then(settle) : settle(t);
  }

  /** Resolves the VM, then runs `then`; lookup failures are answered with `reply`. */
  function withTarget(vmName: string, reply: (e: VolantError) => void, then: (t: IngressTarget) => void): void {
    let target: IngressTarget | Promise<IngressTarget>;
    try {
      target = opts.lookup(vmName);
    } catch (e) {
      reply(asVolantError(e));
      return;
    }
    if (isPromise(target)) target.then(then, (e: unknown) => reply(asVolantError(e)));
    else then(target);
  }

  function handleRequest(req: IncomingMessage, res: ServerResponse): boolean {
    let match: ReturnType<typeof matchProxyPath>;
    let head: ReturnType<typeof upstreamRequestHead>;
    try {
      match = matchProxyPath(req.url!);
      if (match === null) return false;
      head = upstreamRequestHead(req.rawHeaders, clientFacts(req, false));
    } catch (e) {
      metrics.refused++;
      const err = asVolantError(e);
      logFailure(opts.log, err, {});
      sendErrorResponse(res, err, { close: true });
      return true;
    }
    metrics.requests++;
    const { vmName, upstreamPath } = match;
    const refuse = (e: unknown): void => {
      const err = asVolantError(e);
      logFailure(opts.log, err, { reqId: head.requestId, vm: vmName });
      sendErrorResponse(res, err, { headers: { 'x-request-id': head.requestId } });
    };
    let target: IngressTarget | Promise<IngressTarget>;
    try {
      target = opts.lookup(vmName);
    } catch (e) {
      refuse(e);
      return true;
    }
    if (isPromise(target)) {
      target.then((t) => forward(req, res, upstreamPath, head, t), refuse);
    } else {
      forward(req, res, upstreamPath, head, target);
    }
    return true;
  }

  function forward(req: IncomingMessage, res: ServerResponse, upstreamPath: string, head: UpstreamRequestHead, target: IngressTarget): void {
    if (res.destroyed) return;
    const handler = new ForwardHandler(res, head.requestId, target.vmName, target.transport, metrics, opts.log);
    pools.get(target.vmName, target.transport, ingressUpstreamPort(target.transport, upstreamPath)).dispatch(dispatchOptions(req, upstreamPath, head.headers, head.hasBody), handler);
  }

  function handleUpgrade(req: IncomingMessage, socket: Duplex, clientHead: Buffer): boolean {
    let match: ReturnType<typeof matchProxyPath>;
    let head: ReturnType<typeof upstreamRequestHead>;
    try {
      match = matchProxyPath(req.url!);
      if (match === null) return false;
      head = upstreamRequestHead(req.rawHeaders, clientFacts(req, true));
      // Bytes after an upgrade request's head belong to the new protocol; a body would blur that line.
      if (head.hasBody) throw new VolantError('INVALID_ARGUMENT', 'an upgrade request must not carry a body');
    } catch (e) {
      metrics.refused++;
      const err = asVolantError(e);
      logFailure(opts.log, err, {});
      sendErrorOnSocket(socket, err);
      return true;
    }
    startUpgrade(socket, clientHead, req.method!, match.upstreamPath, head, match.vmName);
    return true;
  }

  function startUpgrade(socket: Duplex, clientHead: Buffer, method: string, upstreamPath: string, head: UpstreamRequestHead, vmName: string): void {
    metrics.upgrades++;
    tunnels.add(socket);
    socket.once('close', () => tunnels.delete(socket));
    const match = { vmName };
    withTarget(
      match.vmName,
      (e) => {
        logFailure(opts.log, e, { reqId: head.requestId, vm: match.vmName });
        sendErrorOnSocket(socket, e, { headers: { 'x-request-id': head.requestId } });
      },
      (target) => {
        const where = `VM ${target.vmName} agent via ${describeTransport(target.transport)}`;
        tunnelUpgrade(
          socket,
          clientHead,
          target.transport,
          { method, path: upstreamPath, headers: head.headers, requestId: head.requestId, where, vmName: target.vmName },
          { connectTimeoutMs, headersTimeoutMs },
          opts.log,
        );
      },
    );
  }

  function front(fo: FrontOptions): IngressFront {
    const f = new Front({
      ...fo,
      target: frontTarget,
      upgrade: (socket, clientHead, r) => {
        socket.on('error', () => socket.destroy());
        startUpgrade(socket, clientHead, r.method, r.path, r.head, r.vmName);
      },
      counters: metrics,
      clock,
      log: opts.log,
    });
    fronts.add(f);
    return {
      accept: (socket) => f.accept(socket),
      close: () => {
        fronts.delete(f);
        f.close();
      },
    };
  }

  return {
    front,
    handleRequest,
    handleUpgrade,
    forget: (vmName) => {
      epoch++;
      targets.delete(vmName);
      for (const u of upstreams.get(vmName)?.byPort.values() ?? []) u.close();
      upstreams.delete(vmName);
      pools.forget(vmName);
    },
    close: () => {
      clearInterval(sweeper);
      for (const socket of tunnels) socket.destroy();
      tunnels.clear();
      for (const f of fronts) f.close();
      fronts.clear();
      for (const u of eachUpstreams()) u.destroy();
      upstreams.clear();
      targets.clear();
      return pools.close();
    },
    metrics,
  };
}

/** The sweep's period: a quarter of the shortest timeout (so none fires more than 25% late), 10 ms to 1 s. */
function sweepIntervalMs(...timeoutsMs: number[]): number {
  return Math.max(10, Math.min(1000, Math.floor(Math.min(...timeoutsMs) / 4)));
}

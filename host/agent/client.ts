/**
 * The host's one HTTP client for a VM's kestrel: one undici Pool per VM whose connector is the
 * one dialer (host/ingress/dialer.ts `dialAgent`, hybrid vsock, AF_VSOCK or TCP) to kestrel's
 * HTTP agent port. The health wait, the logs stream and any other call to kestrel's own API go
 * through it; the ingress opens its own upstream sockets through the same dialer (to the relay
 * port where the VM has one), so there is one transport and one way to dial it.
 *
 * Life cycle (host/orchestrator/orchestrator.ts): made when the VM's kestrel becomes reachable
 * (the health wait of a create or start, the re-adoption of a running VM), replaced when the
 * transport changes (a dhcp VM's new lease), closed when the VM stops, fails or is deleted:
 * `close()` cuts what is in flight (log followers included), so no socket outlives the VM.
 *
 * Every failure is a `VolantError`: TIMEOUT (no connection or no answer in time),
 * UPSTREAM_UNREACHABLE (refused, reset, closed), PROTOCOL_ERROR (not a hybrid-vsock answer).
 */

import { type Dispatcher, Pool } from 'undici';
import { isVolantError, VolantError } from '../../shared/errors.js';
import { type AfVsockConnect, type AgentTransport, describeTransport, dialAgent, transportKey } from '../ingress/dialer.js';

export type { AgentTransport } from '../ingress/dialer.js';

/** How long one /healthz probe may take before it counts as no answer. */
export const HEALTH_PROBE_TIMEOUT_MS = 2000;
/** Pause between probes while the guest boots. */
export const HEALTH_POLL_INTERVAL_MS = 200;
/** Bound for reaching kestrel (the hybrid-vsock handshake included; the VMM's own bound is 2 s). */
export const AGENT_CONNECT_TIMEOUT_MS = 5000;
/**
 * Connections per VM: each log follower holds one for as long as it follows, the health wait
 * and API calls reuse the rest. A caller past the bound waits for a free connection.
 */
export const AGENT_MAX_CONNECTIONS = 16;
/** Idle kept-alive connections close before kestrel's own 5 s keep-alive would cut them. */
export const AGENT_KEEP_ALIVE_TIMEOUT_MS = 4000;
/** The largest /healthz body we read; kestrel's is well under 1 KiB. */
const HEALTH_BODY_MAX_BYTES = 64 * 1024;

export interface AgentRequestOptions {
  method?: 'GET' | 'HEAD';
  /** Bound for the response head (connecting included); the body may stream for as long as it likes. */
  timeoutMs: number;
  signal?: AbortSignal;
}

export class AgentClient {
  readonly key: string;
  private readonly pool: Pool;
  private closed = false;

  constructor(
    readonly transport: AgentTransport,
    options: { afVsock?: AfVsockConnect; connectTimeoutMs?: number } = {},
  ) {
    this.key = transportKey(transport);
    const connectTimeoutMs = options.connectTimeoutMs ?? AGENT_CONNECT_TIMEOUT_MS;
    this.pool = new Pool('http://kestrel', {
      connections: AGENT_MAX_CONNECTIONS,
      pipelining: 1,
      keepAliveTimeout: AGENT_KEEP_ALIVE_TIMEOUT_MS,
      keepAliveMaxTimeout: AGENT_KEEP_ALIVE_TIMEOUT_MS,
      connect: (_opts, callback) => {
        dialAgent(transport, connectTimeoutMs, options.afVsock).then(
          (socket) => callback(null, socket),
          (err: Error) => callback(err, null),
        );
      },
    });
  }

  /** A request to kestrel's own API; resolves with the response once its head arrived (body unread). */
  async request(path: string, options: AgentRequestOptions): Promise<Dispatcher.ResponseData> {
    if (this.closed) throw new VolantError('UPSTREAM_UNREACHABLE', `kestrel ${path}: the VM's agent client is closed (the VM stopped)`);
    // The bound covers waiting for a connection and the head, not the body (a log follower streams on).
    const deadline = new AbortController();
    const timer = setTimeout(() => deadline.abort(), options.timeoutMs);
    const signal = options.signal ? AbortSignal.any([options.signal, deadline.signal]) : deadline.signal;
    try {
      return await this.pool.request({ path, method: options.method ?? 'GET', signal, headersTimeout: options.timeoutMs, bodyTimeout: 0 });
    } catch (e) {
      if (isVolantError(e)) throw e;
      const where = `kestrel ${path} via ${describeTransport(this.transport)}`;
      const code = (e as { code?: string }).code;
      if (deadline.signal.aborted || code === 'UND_ERR_HEADERS_TIMEOUT') throw new VolantError('TIMEOUT', `${where}: no answer within ${options.timeoutMs} ms`, undefined, { cause: e });
      throw new VolantError('UPSTREAM_UNREACHABLE', `${where}: ${code ?? (e as Error).message}`, undefined, { cause: e });
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * One /healthz probe: true when kestrel answers 200 with `status: "ok"`, i.e. the workload runs
   * and passes its health check. Kestrel answers 200 `degraded` while the workload is still
   * starting; "running" must mean a user's first proxied request succeeds, so that is not enough.
   */
  async probeHealth(timeoutMs = HEALTH_PROBE_TIMEOUT_MS): Promise<boolean> {
    let res: Dispatcher.ResponseData;
    try {
      res = await this.request('/healthz', { timeoutMs });
    } catch {
      return false;
    }
    try {
      if (res.statusCode !== 200) return false;
      let body = '';
      for await (const chunk of res.body) {
        body += chunk;
        if (body.length > HEALTH_BODY_MAX_BYTES) return false;
      }
      return (JSON.parse(body) as { status?: unknown }).status === 'ok';
    } catch {
      return false;
    } finally {
      res.body.destroy();
    }
  }

  /**
   * Polls /healthz until kestrel reports the workload ok, the deadline passes (TIMEOUT), or
   * `abandon` settles first (the VMM exited: VMM_FAILED from the caller's promise).
   */
  async waitForHealthy(options: { timeoutMs: number; abandon?: Promise<never> }): Promise<void> {
    const deadline = Date.now() + options.timeoutMs;
    let abandoned: unknown;
    options.abandon?.catch((e: unknown) => {
      abandoned = e;
    });
    for (;;) {
      if (abandoned !== undefined) throw abandoned;
      const left = deadline - Date.now();
      if (left <= 0) throw new VolantError('TIMEOUT', `kestrel did not answer /healthz within ${options.timeoutMs} ms`);
      if (await this.probeHealth(Math.min(HEALTH_PROBE_TIMEOUT_MS, left))) return;
      if (abandoned !== undefined) throw abandoned;
      await new Promise((r) => setTimeout(r, Math.min(HEALTH_POLL_INTERVAL_MS, Math.max(0, deadline - Date.now()))));
    }
  }

  /** Cuts every connection, in-flight requests and log followers included. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.pool.destroy().catch(() => undefined);
  }
}

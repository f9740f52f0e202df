/**
 * The host's HTTP client for a VM's kestrel agent (health and logs), over the transport the
 * network policy chose (hybrid vsock, AF_VSOCK or TCP; ingress/dialer.ts dials all three).
 */

import { request, type IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import { VolantError } from '../../shared/errors.js';
import { type AfVsockConnect, type AgentTransport, dialAgent } from '../ingress/dialer.js';

export type { AgentTransport } from '../ingress/dialer.js';

export const AGENT_TCP_PORT = 8080;
/** How long one /healthz probe may take before it counts as no answer. */
export const HEALTH_PROBE_TIMEOUT_MS = 2000;
/** Pause between probes while the guest boots. */
export const HEALTH_POLL_INTERVAL_MS = 200;

/** Sends a GET to kestrel and resolves with the response (body unread). */
export function agentGet(t: AgentTransport, path: string, options: { timeoutMs: number; signal?: AbortSignal; afVsock?: AfVsockConnect }): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    const req = request({
      method: 'GET',
      path,
      host: 'kestrel',
      headers: { connection: 'close' },
      signal: options.signal,
      createConnection: (_opts, cb) => {
        dialAgent(t, options.timeoutMs, options.afVsock).then(
          (s) => {
            cb(null, s);
            s.resume();
          },
          (e: Error) => cb(e, undefined as unknown as Socket),
        );
        return undefined as unknown as Socket;
      },
    });
    const timer = setTimeout(() => req.destroy(new VolantError('TIMEOUT', `kestrel ${path}: no answer within ${options.timeoutMs} ms`)), options.timeoutMs);
    req.once('response', (res) => {
      clearTimeout(timer);
      resolve(res);
    });
    req.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    req.end();
  });
}

/** The largest /healthz body we read; kestrel's is well under 1 KiB. */
const HEALTH_BODY_MAX_BYTES = 64 * 1024;

/**
 * One /healthz probe: true when kestrel answers 200 with `status: "ok"`, i.e. the workload runs
 * and passes its health check. Kestrel answers 200 `degraded` while the workload is still
 * starting; "running" must mean a user's first proxied request succeeds, so that is not enough.
 */
export async function probeHealth(t: AgentTransport, timeoutMs = HEALTH_PROBE_TIMEOUT_MS, afVsock?: AfVsockConnect): Promise<boolean> {
  try {
    const res = await agentGet(t, '/healthz', { timeoutMs, afVsock });
    if (res.statusCode !== 200) {
      res.resume();
      return false;
    }
    let body = '';
    for await (const chunk of res) {
      body += chunk;
      if (body.length > HEALTH_BODY_MAX_BYTES) return false;
    }
    return (JSON.parse(body) as { status?: unknown }).status === 'ok';
  } catch {
    return false;
  }
}

/**
 * Polls /healthz until kestrel reports the workload ok, the deadline passes (TIMEOUT), or `abandon` settles first
 * (the VMM exited: VMM_FAILED from the caller's promise).
 */
export async function waitForHealthy(t: AgentTransport, options: { timeoutMs: number; abandon?: Promise<never>; afVsock?: AfVsockConnect }): Promise<void> {
  const deadline = Date.now() + options.timeoutMs;
  let abandoned: unknown;
  let done = false;
  options.abandon?.catch((e: unknown) => {
    abandoned = e;
  });
  try {
    while (!done) {
      if (abandoned !== undefined) throw abandoned;
      const left = deadline - Date.now();
      if (left <= 0) throw new VolantError('TIMEOUT', `kestrel did not answer /healthz within ${options.timeoutMs} ms`);
      if (await probeHealth(t, Math.min(HEALTH_PROBE_TIMEOUT_MS, left), options.afVsock)) return;
      if (abandoned !== undefined) throw abandoned;
      await new Promise((r) => setTimeout(r, Math.min(HEALTH_POLL_INTERVAL_MS, Math.max(0, deadline - Date.now()))));
    }
  } finally {
    done = true;
  }
}

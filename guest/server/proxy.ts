/**
 * The agent's reverse proxy to the workload's base_url. Bodies stream both ways with
 * backpressure (undici reads the client's body as the workload takes it; the response is piped
 * back), so a 100 MB upload or download never sits in kestrel's memory. WebSocket and other
 * upgrades are forwarded as a raw HTTP/1.1 request on a fresh TCP connection, then the two
 * sockets are piped byte for byte.
 *
 * A workload that cannot answer gets a JSON error saying why (the one error writer,
 * shared/http-error-response.ts): not running (its state, and when it restarts), refused, timed
 * out, or answering with a head no proxy may relay (shared/http-response-head.ts: 502).
 */

import type { IncomingMessage, ServerResponse } from 'node:http';
import { connect, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Pool } from 'undici';
import { type ErrorCode, VolantError } from '../../shared/errors.js';
import { sendErrorOnSocket, sendErrorResponse } from '../../shared/http-error-response.js';
import { flatHeaders, responseHeadProblem } from '../../shared/http-response-head.js';
import type { WorkloadSnapshot } from '../workload/supervisor.js';
import { forwardRequestHeaders, forwardResponseHeaders } from './headers.js';

/** Waiting for the workload's response head; bodies may stream for as long as they like. */
export const PROXY_HEADERS_TIMEOUT_MS = 60_000;
export const PROXY_CONNECT_TIMEOUT_MS = 5000;
export const PROXY_MAX_CONNECTIONS = 256;

export interface ProxyOptions {
  /** http://host:port[/prefix], without a trailing slash. */
  baseUrl: string;
  workload: () => WorkloadSnapshot;
}

export interface WorkloadProxy {
  handleRequest(req: IncomingMessage, res: ServerResponse): void;
  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void;
  close(): Promise<void>;
}

export function sendJsonError(res: ServerResponse, code: ErrorCode, message: string, headers: Record<string, string> = {}): void {
  sendErrorResponse(res, new VolantError(code, message), { headers });
}

/** Why the workload cannot take a request now (its state), or undefined while it runs. */
export function downReason(w: WorkloadSnapshot): string | undefined {
  if (w.state === 'backoff') return `the workload is not running (it exited, restart in ${w.restart_in_ms ?? 0} ms, ${w.restarts} restarts so far)`;
  if (w.state === 'stopped' || w.state === 'stopping' || w.state === 'exited') return `the workload is ${w.state}`;
  return undefined;
}

function hasBody(req: IncomingMessage): boolean {
  const cl = req.headers['content-length'];
  return req.headers['transfer-encoding'] !== undefined || (cl !== undefined && cl !== '0');
}

export function createWorkloadProxy(opts: ProxyOptions): WorkloadProxy {
  const base = new URL(opts.baseUrl);
  const prefix = base.pathname.replace(/\/+$/, '');
  const pool = new Pool(base.origin, {
    connections: PROXY_MAX_CONNECTIONS,
    headersTimeout: PROXY_HEADERS_TIMEOUT_MS,
    bodyTimeout: 0,
    connectTimeout: PROXY_CONNECT_TIMEOUT_MS,
  });
  const upstreamFailure = (e: unknown): { code: ErrorCode; message: string } => {
    const err = e as { code?: string; message?: string };
    const state = opts.workload().state;
    if (err.code === 'UND_ERR_HEADERS_TIMEOUT') return { code: 'TIMEOUT', message: `the workload at ${base.origin} sent no response head within ${PROXY_HEADERS_TIMEOUT_MS} ms` };
    if (err.code === 'ECONNREFUSED') return { code: 'UPSTREAM_UNREACHABLE', message: `the workload at ${base.origin} refused the connection (workload state: ${state})` };
    return { code: 'UPSTREAM_UNREACHABLE', message: `the workload at ${base.origin} failed: ${err.code ?? err.message ?? 'unknown error'} (workload state: ${state})` };
  };

  return {
    handleRequest(req, res) {
      if (!req.url?.startsWith('/')) {
        sendJsonError(res, 'INVALID_ARGUMENT', 'the request target must be a path (origin-form)');
        return;
      }
      const down = downReason(opts.workload());
      if (down) {
        const retry = opts.workload().restart_in_ms;
        sendJsonError(res, 'UPSTREAM_UNREACHABLE', down, retry === undefined ? {} : { 'retry-after': String(Math.max(1, Math.ceil(retry / 1000))) });
        req.resume();
        return;
      }
      const abort = new AbortController();
      res.once('close', () => {
        if (!res.writableFinished) abort.abort();
      });
      const remoteAddress = req.socket.remoteAddress;
      pool
        .request({
          path: `${prefix}${req.url}`,
          method: req.method as 'GET',
          headers: forwardRequestHeaders(req.headers, { remoteAddress, proto: 'http' }) as Record<string, string>,
          body: hasBody(req) ? req : null,
          signal: abort.signal,
        })
        .then(
          async (up) => {
            const problem = responseHeadProblem(up.statusCode, '', flatHeaders(up.headers));
            if (problem !== undefined) {
              up.body.on('error', () => undefined).destroy();
              sendJsonError(res, 'PROTOCOL_ERROR', `the workload at ${base.origin} answered with a head no proxy may relay: ${problem}`);
              return;
            }
            try {
              res.writeHead(up.statusCode, forwardResponseHeaders(up.headers));
            } catch (e) {
              up.body.on('error', () => undefined).destroy();
              sendJsonError(res, 'PROTOCOL_ERROR', `the workload at ${base.origin} answered with a head no proxy may relay: ${(e as Error).message}`);
              return;
            }
            try {
              await pipeline(up.body, res);
            } catch {
              res.destroy();
            }
          },
          (e: unknown) => {
            if (abort.signal.aborted) return;
            const f = upstreamFailure(e);
            sendJsonError(res, f.code, f.message);
          },
        );
    },

    handleUpgrade(req, socket, head) {
      const fail = (code: ErrorCode, message: string): void => sendErrorOnSocket(socket, new VolantError(code, message));
      if (!req.url?.startsWith('/')) return fail('INVALID_ARGUMENT', 'the request target must be a path (origin-form)');
      const down = downReason(opts.workload());
      if (down) return fail('UPSTREAM_UNREACHABLE', down);
      const headers = forwardRequestHeaders(req.headers, { remoteAddress: req.socket.remoteAddress, proto: 'http', upgrade: true });
      headers.host = base.host;
      let text = `${req.method} ${prefix}${req.url} HTTP/1.1\r\n`;
      for (const [name, value] of Object.entries(headers)) {
        for (const v of Array.isArray(value) ? value : [value]) text += `${name}: ${v}\r\n`;
      }
      text += '\r\n';
      const upstream: Socket = connect({ host: base.hostname, port: Number(base.port || 80) });
      upstream.setTimeout(PROXY_CONNECT_TIMEOUT_MS, () => upstream.destroy(Object.assign(new Error('connect timeout'), { code: 'ETIMEDOUT' })));
      let connected = false;
      upstream.once('connect', () => {
        connected = true;
        upstream.setTimeout(0);
        upstream.write(text);
        if (head.length > 0) upstream.write(head);
        socket.pipe(upstream);
        upstream.pipe(socket);
      });
      upstream.on('error', (e) => {
        if (!connected) {
          const f = upstreamFailure(e);
          fail(f.code, f.message);
        } else socket.destroy();
      });
      socket.on('error', () => upstream.destroy());
      socket.once('close', () => upstream.destroy());
      upstream.once('close', () => socket.destroy());
    },

    close: () => pool.close(),
  };
}

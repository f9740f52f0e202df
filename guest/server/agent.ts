/**
 * Step 6 of boot: the agent HTTP server the host talks to. Three things live here:
 *
 *   GET /healthz            kestrel's own status as JSON (200 whenever kestrel answers; the
 *                           workload's state is inside, so the host can tell "agent up, workload
 *                           restarting" from "VM unreachable")
 *   GET /v1/logs[?follow=1] the workload's buffered output as text lines; with follow=1 the
 *                           response stays open and new lines stream as they come
 *   anything else           the workload, through proxy.ts
 *
 * The host's ingress sends /healthz and /v1/logs here and everything else of a VM with a relay
 * to relay.ts (shared/vsock.ts AGENT_OWN_PATHS), so both ports agree on what a path means.
 * The server is transport-agnostic: transports.ts feeds it connections from vsock, TCP or a
 * Unix socket via `server.emit('connection', socket)`. Like every Volant server it serves only
 * HTTP/1.0 and 1.1 requests with a Host (shared/http-request-line.ts) and answers every refusal,
 * the parser's own included, in the one JSON error shape (shared/http-error-response.ts).
 */

import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { VolantError } from '../../shared/errors.js';
import { answerClientError, sendErrorOnSocket, sendErrorResponse } from '../../shared/http-error-response.js';
import { requestLineRefusal } from '../../shared/http-request-line.js';
import type { LogLine, LogRing } from '../logs/ring.js';
import { sendJsonError, type WorkloadProxy } from './proxy.js';

/** A follower that stops reading is cut off once this much is waiting for it. */
export const LOG_FOLLOW_MAX_PENDING_BYTES = 1024 * 1024;
export const HEADERS_TIMEOUT_MS = 30_000;
export const MAX_HEADER_BYTES = 16 * 1024;

export interface AgentOptions {
  health: () => object;
  logs: LogRing;
  /** Absent when the workload serves no HTTP (an exec workload). */
  proxy?: WorkloadProxy;
}

function pathOf(url: string | undefined): string {
  const q = url?.indexOf('?') ?? -1;
  return url === undefined ? '' : q < 0 ? url : url.slice(0, q);
}

function serveLogs(req: IncomingMessage, res: ServerResponse, logs: LogRing): void {
  const params = new URL(req.url ?? '/', 'http://kestrel').searchParams;
  const follow = params.get('follow') === '1' || params.get('follow') === 'true';
  res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store', 'x-content-type-options': 'nosniff' });
  const format = (l: LogLine): string => `${l.text}\n`;
  const backlog = logs.snapshot();
  if (!follow) {
    res.end(backlog.map(format).join(''));
    return;
  }
  res.write(backlog.map(format).join(''));
  const stop = logs.follow((line) => {
    if (res.writableLength > LOG_FOLLOW_MAX_PENDING_BYTES) {
      stop();
      res.destroy();
      return;
    }
    res.write(format(line));
  });
  res.once('close', stop);
}

export function createAgentServer(opts: AgentOptions): Server {
  const server = createServer({ headersTimeout: HEADERS_TIMEOUT_MS, requestTimeout: 0, maxHeaderSize: MAX_HEADER_BYTES, requireHostHeader: false }, (req, res) => {
    const refusal = requestLineRefusal(req, { requireHost: true });
    if (refusal !== undefined) return sendErrorResponse(res, refusal, { close: true });
    const path = pathOf(req.url);
    if (path === '/healthz' && (req.method === 'GET' || req.method === 'HEAD')) {
      const body = JSON.stringify(opts.health());
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store' });
      res.end(req.method === 'HEAD' ? undefined : body);
      return;
    }
    if (path === '/v1/logs') {
      if (req.method !== 'GET') return sendJsonError(res, 'INVALID_ARGUMENT', '/v1/logs takes GET only');
      return serveLogs(req, res, opts.logs);
    }
    if (!opts.proxy) return sendJsonError(res, 'NOT_FOUND', 'this workload serves no HTTP (no workload.http in its manifest)');
    opts.proxy.handleRequest(req, res);
  });
  server.on('upgrade', (req, socket, head) => {
    const refusal = requestLineRefusal(req, { requireHost: true });
    if (refusal !== undefined) return sendErrorOnSocket(socket, refusal);
    if (!opts.proxy) return sendErrorOnSocket(socket, new VolantError('NOT_FOUND', 'this workload serves no HTTP (no workload.http in its manifest)'));
    opts.proxy.handleUpgrade(req, socket, head);
  });
  server.on('connect', (req, socket) => {
    sendErrorOnSocket(socket, requestLineRefusal(req, { requireHost: false }) ?? new VolantError('NOT_SUPPORTED', 'CONNECT is not served by the agent'));
  });
  server.on('clientError', (err, socket) => {
    answerClientError(err, socket, MAX_HEADER_BYTES);
  });
  return server;
}

/**
 * How the egress proxy says no, in the one error shape (shared/http-error-response.ts) with the
 * denial's reason in `details`: on a raw socket (CONNECT, upgrade, parser errors: then the socket
 * closes, after CLOSE_LINGER_MS at the latest) or on a response (then the connection closes:
 * the rest of the client's bytes cannot be trusted to frame a next request). Each refusal is one
 * audit record (audit.ts aggregates repeats).
 */

import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { sendErrorOnSocket, sendErrorResponse } from '../../shared/http-error-response.js';
import { type Denial, denialError } from './decide.js';
import type { Exchange } from './audit.js';
import type { ProxyEnv } from './env.js';
import { CLOSE_LINGER_MS } from './options.js';

export function refuseOnSocket(env: ProxyEnv, x: Exchange, socket: Duplex, d: Denial): void {
  env.audit.record(x, 'deny', d.reason, d.status);
  sendErrorOnSocket(socket, denialError(d), { lingerMs: CLOSE_LINGER_MS });
}

export function refuseResponse(env: ProxyEnv, x: Exchange, req: IncomingMessage, res: ServerResponse, d: Denial): void {
  env.audit.record(x, 'deny', d.reason, d.status);
  sendErrorResponse(res, denialError(d), { close: true });
  req.resume();
}

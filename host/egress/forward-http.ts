/**
 * Plain HTTP through the egress proxy: `METHOD http://host[:port]/path HTTP/1.1`, admitted
 * (admission.ts), then re-issued by undici to the pinned address (one checked address, no second
 * lookup), bodies streamed both ways. `upgrade_to_https` sends it over TLS verified against the
 * host name instead (port 80 becomes 443, and the decision is made on the port dialled).
 *
 * What must hold:
 *  - the upstream sees the Host the allowlist decided on: the canonical name (lower case, no
 *    trailing dot, punycode) or IP literal, with the port unless it is 80. The client's Host
 *    headers never pass (the request target and Host were checked to agree, admission.ts), and
 *    `Connection` cannot name Host or Content-Length away (shared/http-headers.ts);
 *  - hop-by-hop and Proxy-* headers, and `Expect` (our server answers it), are not forwarded;
 *  - a request body over MAX_REQUEST_BODY_BYTES is 413, declared or streamed;
 *  - the upstream's response head is checked (shared/http-response-head.ts) before it is relayed:
 *    a bad one is a 502, never a half-written response.
 */

import type { IncomingMessage, ServerResponse } from 'node:http';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Client } from 'undici';
import { VolantError } from '../../shared/errors.js';
import { connectionTokens, isHopByHop } from '../../shared/http-headers.js';
import { requestLineRefusal } from '../../shared/http-request-line.js';
import { flatHeaders, responseHeadProblem } from '../../shared/http-response-head.js';
import { admit, charge } from './admission.js';
import { newExchange } from './audit.js';
import { type AllowedTarget, deny, type DenyReason } from './decide.js';
import { bracket } from './dial.js';
import type { ProxyEnv } from './env.js';
import { refuseResponse } from './refusal.js';
import { type HttpTarget, parseAbsoluteTarget } from './target.js';

const HTTP_DEFAULT_PORT = 80;
const HTTPS_DEFAULT_PORT = 443;

/** The Host header the upstream gets: the decided host, with the port the client named unless it is the default. */
export function decidedHost(allowed: AllowedTarget, requestedPort: number): string {
  return requestedPort === HTTP_DEFAULT_PORT ? bracket(allowed.host) : `${bracket(allowed.host)}:${requestedPort}`;
}

/**
 * Header pairs to forward: `Host` first and as decided, then the client's headers without Host,
 * hop-by-hop, Proxy-* and Connection-listed ones (never Host or Content-Length), and Expect.
 */
export function forwardableHeaders(raw: readonly string[], host: string): string[] {
  const listed = new Set<string>(['expect', 'host']);
  for (let i = 0; i < raw.length; i += 2) {
    if (raw[i]!.toLowerCase() === 'connection') for (const t of connectionTokens(raw[i + 1]!)) listed.add(t);
  }
  const out: string[] = ['Host', host];
  for (let i = 0; i < raw.length; i += 2) {
    const k = raw[i]!.toLowerCase();
    if (isHopByHop(k, listed)) continue;
    out.push(raw[i]!, raw[i + 1]!);
  }
  return out;
}

function countHeader(raw: readonly string[], name: string): number {
  let n = 0;
  for (let i = 0; i < raw.length; i += 2) if (raw[i]!.toLowerCase() === name) n++;
  return n;
}

export async function handlePlainRequest(env: ProxyEnv, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const x = newExchange(req.method ?? 'GET');
  const peer = { remoteAddress: req.socket.remoteAddress };
  const line = requestLineRefusal(req, { requireHost: false });
  if (line !== undefined) {
    refuseResponse(env, x, req, res, charge(env.admission, x, peer).denial ?? deny('INVALID_ARGUMENT', 'http-version', line.message));
    return;
  }
  const { settings } = env;
  const upgrade = settings.upgradeToHttps;
  let httpTarget: HttpTarget | undefined;
  const r = await admit(
    env.admission,
    x,
    peer,
    () => {
      // Node keeps only the first of repeated Host headers; the upstream would see them all.
      if (countHeader(req.rawHeaders, 'host') > 1) return { ok: false, reason: 'host-mismatch', message: 'more than one Host header' };
      const p = parseAbsoluteTarget(req.url ?? '', req.headers.host);
      if (p.ok) httpTarget = p.target;
      return p;
    },
    // Upgraded requests are decided on the port actually dialled (80 becomes 443).
    { tunnel: false, dialPort: upgrade ? (t) => (t.port === HTTP_DEFAULT_PORT ? HTTPS_DEFAULT_PORT : t.port) : undefined },
  );
  if ('status' in r) {
    refuseResponse(env, x, req, res, r);
    return;
  }
  const maxBody = settings.maxRequestBodyBytes;
  const declared = req.headers['content-length'];
  if (declared !== undefined && Number(declared) > maxBody) {
    r.release();
    refuseResponse(env, x, req, res, deny('PAYLOAD_TOO_LARGE', 'body-too-large', `request body of ${declared} bytes exceeds ${maxBody}`, { rule: r.allowed.rule }));
    return;
  }
  const address = r.dial[0]!;
  x.address = address;
  const requestedPort = httpTarget!.port;
  const port = upgrade && requestedPort === HTTP_DEFAULT_PORT ? HTTPS_DEFAULT_PORT : requestedPort;
  const origin = `${upgrade ? 'https' : 'http'}://${bracket(address)}:${port}`;
  const client = new Client(origin, {
    connect: {
      timeout: settings.connectTimeoutMs,
      ...(upgrade ? { servername: r.allowed.literal ? undefined : r.allowed.host, rejectUnauthorized: true, ca: settings.upstreamCa } : {}),
    },
    headersTimeout: settings.idleTimeoutMs,
    bodyTimeout: settings.idleTimeoutMs,
  });
  const headers = forwardableHeaders(req.rawHeaders, decidedHost(r.allowed, requestedPort));
  const hasBody = declared !== undefined || req.headers['transfer-encoding'] !== undefined;
  let bytesOut = 0;
  let tooLarge = false;
  const counted = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      bytesOut += chunk.length;
      if (bytesOut > maxBody) {
        tooLarge = true;
        cb(new VolantError('PAYLOAD_TOO_LARGE', `request body exceeds ${maxBody} bytes`));
        return;
      }
      cb(null, chunk);
    },
  });
  const abort = new AbortController();
  res.on('close', () => {
    if (!res.writableFinished) abort.abort();
  });
  let bytesIn = 0;
  try {
    if (hasBody) req.pipe(counted);
    const up = await client.request({ method: req.method ?? 'GET', path: httpTarget!.path, headers, body: hasBody ? counted : undefined, signal: abort.signal });
    const problem = responseHeadProblem(up.statusCode, '', flatHeaders(up.headers));
    if (problem !== undefined) {
      up.body.on('error', () => undefined).destroy();
      throw new VolantError('PROTOCOL_ERROR', `the upstream's response head is refused: ${problem}`);
    }
    const listed = connectionTokens(up.headers.connection);
    const resHeaders: string[] = [];
    for (const [k, v] of Object.entries(up.headers)) {
      if (v === undefined || isHopByHop(k.toLowerCase(), listed)) continue;
      for (const one of Array.isArray(v) ? v : [v]) resHeaders.push(k, one);
    }
    res.writeHead(up.statusCode, resHeaders);
    up.body.on('data', (c: Buffer) => {
      bytesIn += c.length;
    });
    await pipeline(up.body, res);
    env.audit.record(x, 'allow', 'allowed', up.statusCode, bytesIn, bytesOut);
  } catch (e) {
    if (tooLarge) refuseResponse(env, x, req, res, deny('PAYLOAD_TOO_LARGE', 'body-too-large', `request body exceeds ${maxBody} bytes`, { rule: r.allowed.rule }));
    else {
      const code = (e as { code?: string }).code ?? '';
      const timeout = code === 'UND_ERR_CONNECT_TIMEOUT' || code === 'UND_ERR_HEADERS_TIMEOUT';
      const reason: DenyReason = timeout ? 'connect-timeout' : code === 'ECONNREFUSED' ? 'connect-failed' : 'upstream-error';
      const message = `upstream ${x.target!.host}:${port} (${address}): ${(e as Error).message}`;
      const errorCode = timeout ? 'TIMEOUT' : e instanceof VolantError && e.code === 'PROTOCOL_ERROR' ? 'PROTOCOL_ERROR' : 'UPSTREAM_UNREACHABLE';
      refuseResponse(env, x, req, res, deny(errorCode, reason, message, { rule: r.allowed.rule, address }));
    }
  } finally {
    r.release();
    client.destroy().catch(() => {});
  }
}

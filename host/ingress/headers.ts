/**
 * Header hygiene between the client and the guest, in one pass over Node's raw header list.
 *
 * Hop-by-hop headers (shared/http-headers.ts) describe one connection and must not cross the
 * proxy: `Connection` and every header it names (never the ones we guarantee), `Keep-Alive`,
 * `Proxy-*`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade` (kept only on an upgrade request,
 * where it is the point). `Expect` is answered by our own server, so it is not forwarded either.
 *
 * Forwarding headers follow forwarding.ts: every client-supplied one is dropped, and ours
 * (`Forwarded`, `X-Forwarded-For/-Proto/-Host`) are added; `X-Request-Id` is kept when valid,
 * else a fresh UUID. A header spelled with underscores (`X_Forwarded_For`) is dropped when its
 * dashed spelling is one of these: CGI-style servers read both spellings as the same variable.
 *
 * The same pass refuses framing that Node's parser lets through but a proxy must not forward
 * ambiguously (request smuggling): more than one `Transfer-Encoding` or `Host`, a transfer coding
 * other than `chunked`, `Transfer-Encoding` on HTTP/1.0. Node already rejects `Content-Length`
 * together with `Transfer-Encoding`, duplicate or malformed `Content-Length`, and obfuscated
 * header names. The body is re-framed by our client anyway, never passed through as raw bytes.
 *
 * Speed: this runs for every request, so header names are classified through a map that also
 * remembers the spellings it has seen (bounded), instead of lower-casing every name.
 */

import { randomUUID } from 'node:crypto';
import { VolantError } from '../../shared/errors.js';
import { connectionTokens, HOP_BY_HOP_HEADERS } from '../../shared/http-headers.js';
import type { ResponseHeadCheck } from '../../shared/http-response-head.js';
import { forwardingHeaders, isForwardingHeader } from './forwarding.js';
import { REQUEST_ID } from '../log/request-id.js';

enum Kind {
  Pass = 0,
  Drop = 1,
  Connection = 2,
  Upgrade = 3,
  Forwarding = 4,
  RequestId = 5,
  TransferEncoding = 6,
  Host = 7,
  ContentLength = 8,
  Authorization = 9,
  Expect = 10,
}

const KNOWN: ReadonlyArray<[string, Kind]> = [
  ...[...HOP_BY_HOP_HEADERS].map((name): [string, Kind] => [name, Kind.Drop]),
  ['connection', Kind.Connection],
  ['transfer-encoding', Kind.TransferEncoding],
  ['upgrade', Kind.Upgrade],
  ['expect', Kind.Expect],
  ['authorization', Kind.Authorization],
  ['x-request-id', Kind.RequestId],
  ['host', Kind.Host],
  ['content-length', Kind.ContentLength],
];

/** How many distinct header-name spellings we remember; past that, names are lower-cased each time. */
const NAME_CACHE_MAX_ENTRIES = 2048;
const kindByName = new Map<string, Kind>();

function titleCase(lower: string): string {
  return lower.replace(/(^|-)([a-z])/g, (_m, sep: string, c: string) => sep + c.toUpperCase());
}
for (const [lower, kind] of KNOWN) {
  kindByName.set(lower, kind);
  kindByName.set(titleCase(lower), kind);
}
kindByName.set('X-Request-ID', Kind.RequestId);
kindByName.set('TE', Kind.Drop);

function classifyDashed(lower: string): Kind {
  const known = kindByName.get(lower);
  if (known !== undefined) return known;
  if (lower.startsWith('proxy-')) return Kind.Drop;
  return isForwardingHeader(lower) ? Kind.Forwarding : Kind.Pass;
}

function classifyLower(lower: string): Kind {
  if (!lower.includes('_')) return classifyDashed(lower);
  // `X_Forwarded_For`, `Transfer_Encoding`: CGI-style servers fold them into the dashed name.
  return classifyDashed(lower.replace(/_/g, '-')) === Kind.Pass ? Kind.Pass : Kind.Drop;
}

function kindOf(name: string): Kind {
  const k = kindByName.get(name);
  if (k !== undefined) return k;
  const kind = classifyLower(name.toLowerCase());
  if (kindByName.size < NAME_CACHE_MAX_ENTRIES) kindByName.set(name, kind);
  return kind;
}

/** The usual `Connection` values, which name no other header. */
const PLAIN_CONNECTION = /^\s*(keep-alive|close)\s*$/i;

export interface ClientFacts {
  /** The peer address of the client connection (`req.socket.remoteAddress`). */
  remoteAddress: string | undefined;
  /** `https` when the API listens with TLS, else `http`. */
  proto: 'http' | 'https';
  /** `req.httpVersionMinor`: 0 for HTTP/1.0. */
  httpVersionMinor: number;
  /** Keep `Upgrade` and `Connection: upgrade` (WebSocket and other upgrade requests). */
  upgrade: boolean;
  /** Drop `Authorization`: it carried volantd's own bearer token, checked already (never the workload's). */
  dropAuthorization?: boolean;
}

export interface UpstreamRequestHead {
  /** Flat `[name, value, name, value, ...]`, ready for undici or an HTTP/1.1 request head. */
  headers: string[];
  requestId: string;
  /** The request carries a body (`Content-Length` or `Transfer-Encoding: chunked`). */
  hasBody: boolean;
  /** The body is chunked (its `Transfer-Encoding` is not in `headers`: whoever sends it frames it). */
  chunked: boolean;
  /** The client sent `Expect: 100-continue` (answered by our side, never forwarded). */
  expectContinue: boolean;
}

function smuggling(why: string): VolantError {
  return new VolantError('INVALID_ARGUMENT', `request framing refused: ${why}`);
}

/**
 * Builds the header list for the guest from `rawHeaders` (Node's flat list, names in the
 * client's spelling). Throws `INVALID_ARGUMENT` for ambiguous framing.
 */
export function upstreamRequestHead(raw: readonly string[], facts: ClientFacts): UpstreamRequestHead {
  const out: string[] = [];
  let host: string | undefined;
  let requestId: string | undefined;
  let connection: string | undefined;
  let transferEncoding: string | undefined;
  let hasBody = false;
  let upgrade: string | undefined;
  let expectContinue = false;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    const value = raw[i + 1]!;
    switch (kindOf(name)) {
      case Kind.Pass:
        out.push(name, value);
        break;
      case Kind.Drop:
      case Kind.Forwarding:
        break;
      case Kind.Authorization:
        if (facts.dropAuthorization !== true) out.push(name, value);
        break;
      case Kind.Expect:
        if (value.length === 12 && value.toLowerCase() === '100-continue') expectContinue = true;
        break;
      case Kind.Connection:
        connection = connection === undefined ? value : `${connection},${value}`;
        break;
      case Kind.Upgrade:
        upgrade = value;
        break;
      case Kind.RequestId:
        if (requestId === undefined && REQUEST_ID.test(value)) requestId = value;
        break;
      case Kind.TransferEncoding:
        if (transferEncoding !== undefined) throw smuggling('more than one Transfer-Encoding header');
        transferEncoding = value;
        break;
      case Kind.Host:
        if (host !== undefined) throw smuggling('more than one Host header');
        host = value;
        out.push(name, value);
        break;
      case Kind.ContentLength:
        hasBody = value !== '0';
        out.push(name, value);
        break;
    }
  }
  if (transferEncoding !== undefined) {
    if (facts.httpVersionMinor === 0) throw smuggling('Transfer-Encoding on an HTTP/1.0 request');
    if (transferEncoding.trim().toLowerCase() !== 'chunked') {
      throw smuggling(`Transfer-Encoding ${JSON.stringify(transferEncoding.slice(0, 60))}: only "chunked" is accepted`);
    }
    hasBody = true;
  }
  const kept = connection === undefined ? out : dropNamedByConnection(out, connection, facts.upgrade);
  const forwarding = forwardingHeaders({ remoteAddress: facts.remoteAddress, proto: facts.proto, host });
  for (let i = 0; i < forwarding.length; i++) kept.push(forwarding[i]!);
  requestId ??= randomUUID();
  kept.push('x-request-id', requestId);
  if (facts.upgrade && upgrade !== undefined) kept.push('connection', 'upgrade', 'upgrade', upgrade);
  return { headers: kept, requestId, hasBody, chunked: transferEncoding !== undefined, expectContinue };
}

/** Headers that `Connection` names are hop-by-hop too, except the ones it cannot remove (shared/http-headers.ts). */
function dropNamedByConnection(headers: string[], value: string, upgrade: boolean): string[] {
  if (PLAIN_CONNECTION.test(value)) return headers;
  const named = connectionTokens(value);
  named.delete('close');
  named.delete('keep-alive');
  if (upgrade) named.delete('upgrade');
  if (named.size === 0) return headers;
  const kept: string[] = [];
  for (let i = 0; i < headers.length; i += 2) {
    const name = headers[i]!;
    if (named.has(name.toLowerCase())) continue;
    kept.push(name, headers[i + 1]!);
  }
  return kept;
}

const latin1 = (x: string | Buffer): string => (typeof x === 'string' ? x : x.toString('latin1'));

/**
 * The guest's response headers (undici's raw Buffers, or the strings Node's HTTP client parsed)
 * as the client gets them, in one pass: every field goes through `check`
 * (shared/http-response-head.ts), hop-by-hop headers are dropped, and `X-Request-Id` is added
 * when the guest sent none. Values of dropped headers are checked as they are, never decoded.
 * Returns `undefined` once `check` has refused a field.
 */
export function downstreamResponseHeaders(raw: readonly (string | Buffer)[], requestId: string, check: ResponseHeadCheck): string[] | undefined {
  const out: string[] = [];
  let connection: string | undefined;
  let sawRequestId = false;
  for (let i = 0; i < raw.length; i += 2) {
    const name = latin1(raw[i]!);
    const kind = kindOf(name);
    switch (kind) {
      case Kind.RequestId:
      case Kind.Pass:
      case Kind.Authorization:
      case Kind.Host:
      case Kind.ContentLength:
      case Kind.Forwarding: {
        const value = latin1(raw[i + 1]!);
        if (!check.field(name, value)) return undefined;
        out.push(name, value);
        if (kind === Kind.RequestId) sawRequestId = true;
        break;
      }
      case Kind.Connection: {
        const value = latin1(raw[i + 1]!);
        if (!check.field(name, value)) return undefined;
        connection = connection === undefined ? value : `${connection},${value}`;
        break;
      }
      default:
        if (!check.field(name, raw[i + 1]!)) return undefined;
        break;
    }
  }
  if (!sawRequestId) out.push('x-request-id', requestId);
  return connection === undefined ? out : dropNamedByConnection(out, connection, false);
}

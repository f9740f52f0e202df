/**
 * Header hygiene between the client and the guest, in one pass over Node's raw header list.
 *
 * Hop-by-hop headers (RFC 9110 §7.6.1) describe one connection and must not cross the proxy:
 * `Connection` and every header it names, `Keep-Alive`, `Proxy-*`, `TE`, `Trailer`,
 * `Transfer-Encoding`, `Upgrade` (kept only on an upgrade request, where it is the point).
 * `Expect` is answered by our own server, so it is not forwarded either.
 *
 * We add `X-Forwarded-For` (appended to what the client sent, like nginx's
 * `$proxy_add_x_forwarded_for`), `X-Forwarded-Proto`, `X-Forwarded-Host` (ours replace the
 * client's), and `X-Request-Id` (a valid incoming one is kept, else a fresh UUID).
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

enum Kind {
  Pass = 0,
  Drop = 1,
  Connection = 2,
  Upgrade = 3,
  ForwardedFor = 4,
  ForwardedReplaced = 5,
  RequestId = 6,
  TransferEncoding = 7,
  Host = 8,
  ContentLength = 9,
}

const KNOWN: ReadonlyArray<[string, Kind]> = [
  ['connection', Kind.Connection],
  ['keep-alive', Kind.Drop],
  ['te', Kind.Drop],
  ['trailer', Kind.Drop],
  ['transfer-encoding', Kind.TransferEncoding],
  ['upgrade', Kind.Upgrade],
  ['expect', Kind.Drop],
  ['x-forwarded-for', Kind.ForwardedFor],
  ['x-forwarded-proto', Kind.ForwardedReplaced],
  ['x-forwarded-host', Kind.ForwardedReplaced],
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

function classifyLower(lower: string): Kind {
  return kindByName.get(lower) ?? (lower.startsWith('proxy-') ? Kind.Drop : Kind.Pass);
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

/** A request id we pass on as is: short, printable, no separators that could split a log line. */
const REQUEST_ID = /^[A-Za-z0-9._:+/=@-]{1,200}$/;

export interface ClientFacts {
  /** The peer address of the client connection (`req.socket.remoteAddress`). */
  remoteAddress: string | undefined;
  /** `https` when the API listens with TLS, else `http`. */
  proto: string;
  /** `req.httpVersionMinor`: 0 for HTTP/1.0. */
  httpVersionMinor: number;
  /** Keep `Upgrade` and `Connection: upgrade` (WebSocket and other upgrade requests). */
  upgrade: boolean;
}

export interface UpstreamRequestHead {
  /** Flat `[name, value, name, value, ...]`, ready for undici or an HTTP/1.1 request head. */
  headers: string[];
  requestId: string;
  /** The request carries a body (`Content-Length` or `Transfer-Encoding: chunked`). */
  hasBody: boolean;
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
  let forwardedFor: string | undefined;
  let host: string | undefined;
  let requestId: string | undefined;
  let connectionTokens: string | undefined;
  let transferEncoding: string | undefined;
  let hasBody = false;
  let upgrade: string | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    const value = raw[i + 1]!;
    switch (kindOf(name)) {
      case Kind.Pass:
        out.push(name, value);
        break;
      case Kind.Drop:
      case Kind.ForwardedReplaced:
        break;
      case Kind.Connection:
        connectionTokens = connectionTokens === undefined ? value : `${connectionTokens},${value}`;
        break;
      case Kind.Upgrade:
        upgrade = value;
        break;
      case Kind.ForwardedFor:
        forwardedFor = forwardedFor === undefined ? value : `${forwardedFor}, ${value}`;
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
  const address = facts.remoteAddress ?? 'unknown';
  out.push('x-forwarded-for', forwardedFor === undefined ? address : `${forwardedFor}, ${address}`);
  out.push('x-forwarded-proto', facts.proto);
  if (host !== undefined) out.push('x-forwarded-host', host);
  requestId ??= randomUUID();
  out.push('x-request-id', requestId);
  if (facts.upgrade && upgrade !== undefined) out.push('connection', 'upgrade', 'upgrade', upgrade);
  const head = { headers: out, requestId, hasBody };
  return connectionTokens === undefined ? head : { ...head, headers: dropNamedByConnection(out, connectionTokens, facts.upgrade) };
}

/** Headers that `Connection` names are hop-by-hop too (`close`, `keep-alive`, `upgrade` are ours to set). */
function dropNamedByConnection(headers: string[], tokens: string, upgrade: boolean): string[] {
  if (PLAIN_CONNECTION.test(tokens)) return headers;
  const named = new Set<string>();
  for (const t of tokens.split(',')) {
    const token = t.trim().toLowerCase();
    if (token !== '' && token !== 'close' && token !== 'keep-alive' && !(upgrade && token === 'upgrade')) named.add(token);
  }
  if (named.size === 0) return headers;
  const kept: string[] = [];
  for (let i = 0; i < headers.length; i += 2) {
    const name = headers[i]!;
    const lower = name.toLowerCase();
    // Our own forwarding headers stay whatever the client's Connection says.
    if (named.has(lower) && !lower.startsWith('x-forwarded-') && lower !== 'x-request-id' && lower !== 'host') continue;
    kept.push(name, headers[i + 1]!);
  }
  return kept;
}

/**
 * Response headers from undici's raw list (Buffers) to a flat string list for
 * `res.writeHead`, without hop-by-hop headers; `X-Request-Id` is added when the guest sent none.
 */
export function downstreamResponseHeaders(raw: readonly Buffer[], requestId: string): string[] {
  const out: string[] = [];
  let connectionTokens: string | undefined;
  let sawRequestId = false;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!.toString('latin1');
    switch (kindOf(name)) {
      case Kind.Pass:
      case Kind.Host:
      case Kind.ContentLength:
      case Kind.ForwardedFor:
      case Kind.ForwardedReplaced:
        out.push(name, raw[i + 1]!.toString('latin1'));
        break;
      case Kind.RequestId:
        sawRequestId = true;
        out.push(name, raw[i + 1]!.toString('latin1'));
        break;
      case Kind.Connection:
        connectionTokens = raw[i + 1]!.toString('latin1');
        break;
      default:
        break;
    }
  }
  if (!sawRequestId) out.push('x-request-id', requestId);
  return connectionTokens === undefined ? out : dropNamedByConnection(out, connectionTokens, false);
}

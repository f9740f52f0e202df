/**
 * Parses what a workload asks the egress proxy for: the authority of a `CONNECT host:port`, or
 * the absolute-form URL of a plain request (`GET http://host[:port]/path`). The parse is strict
 * and by hand, not through WHATWG `URL`, because URL "repairs" input (backslashes, tabs, percent
 * escapes in hosts, userinfo) and a proxy must decide on exactly what the client will send
 * upstream. Refused: userinfo (`allowed.test@evil.test`), missing/zero/out-of-range/non-decimal
 * ports, origin-form (`GET /x`), other schemes, fragments, control characters and whitespace
 * anywhere (CRLF injection), and a Host header that names a different authority than the URL.
 *
 * The result is a raw host (still to be checked by the Allowlist, which normalises case,
 * trailing dot and IDN, and recognises IP literals in every notation) and a numeric port.
 */

export interface Target {
  /** Host as written (brackets removed from IPv6 literals), not yet normalised. */
  host: string;
  port: number;
}

export interface HttpTarget extends Target {
  /** Origin-form path and query to send upstream, always starting with '/'. */
  path: string;
}

export type TargetReason = 'bad-target' | 'userinfo' | 'bad-port' | 'scheme' | 'origin-form' | 'host-mismatch';

export type Parsed<T> = { ok: true; target: T } | { ok: false; reason: TargetReason; message: string };

export const MAX_TARGET_LENGTH = 8192;
const HTTP_DEFAULT_PORT = 80;

// Bytes a host may never contain (besides being valid for the Allowlist later): whitespace,
// controls, and URL delimiters a second parser could split on differently.
const FORBIDDEN_IN_HOST = /[\u0000-\u0020\u007f@/\\?#%[\]{}|^`"<>';,]/;
const FORBIDDEN_IN_TARGET = /[\u0000-\u0020\u007f]/;

function fail<T>(reason: TargetReason, message: string): Parsed<T> {
  return { ok: false, reason, message };
}

/** `host:port` with the port required (CONNECT) or optional (`defaultPort`). */
export function parseAuthority(authority: string, defaultPort?: number): Parsed<Target> {
  if (typeof authority !== 'string' || authority.length === 0) return fail('bad-target', 'empty authority');
  if (authority.length > 300) return fail('bad-target', 'authority longer than 300 characters');
  if (FORBIDDEN_IN_TARGET.test(authority)) return fail('bad-target', 'control characters or whitespace in the authority');
  if (authority.includes('@')) return fail('userinfo', 'userinfo (user@host) is not allowed in proxy targets');
  let host: string;
  let portText: string | undefined;
  if (authority.startsWith('[')) {
    const close = authority.indexOf(']');
    if (close < 0) return fail('bad-target', 'unterminated IPv6 literal');
    host = authority.slice(1, close);
    const after = authority.slice(close + 1);
    if (after !== '' && !after.startsWith(':')) return fail('bad-target', 'junk after IPv6 literal');
    portText = after === '' ? undefined : after.slice(1);
    if (!/^[0-9a-fA-F:.]+$/.test(host)) return fail('bad-target', 'IPv6 literal holds characters other than hex digits, ":" and "."');
  } else {
    const colon = authority.lastIndexOf(':');
    if (colon >= 0 && authority.indexOf(':') !== colon) return fail('bad-target', 'IPv6 literals must be in brackets');
    host = colon >= 0 ? authority.slice(0, colon) : authority;
    portText = colon >= 0 ? authority.slice(colon + 1) : undefined;
    if (FORBIDDEN_IN_HOST.test(host)) return fail('bad-target', 'host contains characters no host name has');
  }
  if (host.length === 0) return fail('bad-target', `no host in authority ${JSON.stringify(authority.slice(0, 100))}`);
  let port: number;
  if (portText === undefined) {
    if (defaultPort === undefined) return fail('bad-port', 'a port is required (host:port)');
    port = defaultPort;
  } else {
    if (!/^[0-9]{1,5}$/.test(portText)) return fail('bad-port', `port ${JSON.stringify(portText.slice(0, 20))} is not a decimal number`);
    port = Number(portText);
    if (port < 1 || port > 65535) return fail('bad-port', `port ${port} is not 1-65535`);
  }
  return { ok: true, target: { host, port } };
}

/** The target of a CONNECT request: authority-form, port required. */
export function parseConnectTarget(requestTarget: string): Parsed<Target> {
  return parseAuthority(requestTarget);
}

/**
 * The target of a plain proxied request: `http://authority[/path][?query]` (scheme case-insensitive),
 * checked against the Host header when the client sent one.
 */
export function parseAbsoluteTarget(requestTarget: string, hostHeader: string | undefined): Parsed<HttpTarget> {
  if (typeof requestTarget !== 'string' || requestTarget.length === 0) return fail('bad-target', 'empty request target');
  if (requestTarget.length > MAX_TARGET_LENGTH) return fail('bad-target', `request target longer than ${MAX_TARGET_LENGTH} characters`);
  if (FORBIDDEN_IN_TARGET.test(requestTarget)) return fail('bad-target', 'control characters or whitespace in the request target');
  if (requestTarget.startsWith('/') || requestTarget === '*') {
    return fail('origin-form', 'this is a forward proxy: send absolute-form requests (GET http://host/path), or CONNECT for TLS');
  }
  const m = /^([a-zA-Z][a-zA-Z0-9+.-]*):\/\//.exec(requestTarget);
  if (!m) return fail('bad-target', 'request target is not an absolute http:// URL');
  if (m[1]!.toLowerCase() !== 'http') return fail('scheme', `scheme ${JSON.stringify(m[1]!.slice(0, 20))} is not proxied as a plain request: use http://, or CONNECT for https`);
  if (requestTarget.includes('#')) return fail('bad-target', 'fragments are never sent to a server');
  if (requestTarget.includes('\\')) return fail('bad-target', 'backslash in the request target');
  const rest = requestTarget.slice(m[0].length);
  const end = rest.search(/[/?]/);
  const authority = end < 0 ? rest : rest.slice(0, end);
  let path = end < 0 ? '/' : rest.slice(end);
  if (path.startsWith('?')) path = `/${path}`;
  const a = parseAuthority(authority, HTTP_DEFAULT_PORT);
  if (!a.ok) return a;
  if (hostHeader !== undefined) {
    const h = parseAuthority(hostHeader, HTTP_DEFAULT_PORT);
    if (!h.ok || !sameAuthority(h.target, a.target)) {
      return fail('host-mismatch', `Host header ${JSON.stringify(hostHeader.slice(0, 100))} does not name the URL's authority ${JSON.stringify(authority.slice(0, 100))}`);
    }
  }
  return { ok: true, target: { ...a.target, path } };
}

/** Same host (case and one trailing dot ignored) and same port. */
export function sameAuthority(a: Target, b: Target): boolean {
  const norm = (h: string): string => h.toLowerCase().replace(/\.$/, '');
  return a.port === b.port && norm(a.host) === norm(b.host);
}

/**
 * The egress forwarder's gate: the head of the first request on a connection, parsed just
 * enough to refuse what no forward proxy should carry, before any upstream is opened.
 *
 * Accepted:  CONNECT host:port HTTP/1.x                 (authority-form, port 1-65535)
 *            METHOD http://host[:port]/path HTTP/1.x     (absolute-form, plain http only)
 * Refused:   origin-form (`GET /x`: that is a request for a server, not a proxy), https://
 *            absolute-form (use CONNECT), malformed request lines, bare CR or LF, obs-fold,
 *            bad header names, Content-Length together with Transfer-Encoding, differing or
 *            non-numeric Content-Length, a Transfer-Encoding other than `chunked`, and heads
 *            over MAX_PROXY_HEAD_BYTES or MAX_PROXY_HEADERS.
 *
 * The decision to allow a destination is not made here; the host's egress proxy makes it. The
 * forwarder sends the original bytes on unchanged, so what we checked is what the host reads.
 */

import { isServedHttpVersion } from '../../shared/http-request-line.js';

export const MAX_PROXY_HEAD_BYTES = 16 * 1024;
export const MAX_PROXY_HEADERS = 100;

export type ProxyHead =
  | { kind: 'connect'; host: string; port: number }
  | { kind: 'absolute'; method: string; host: string; port: number; path: string };

export type HeadResult = { state: 'need-more' } | { state: 'ok'; head: ProxyHead; headBytes: number } | { state: 'reject'; reason: string };

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const HOSTNAME = /^(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$/;
const IPV6 = /^\[[0-9A-Fa-f:.]{2,45}\]$/;
const PORT = /^[1-9][0-9]{0,4}$/;
/** Header values: visible ASCII, space, tab and obs-text; never CR, LF or NUL. */
const FIELD_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;

const reject = (reason: string): HeadResult => ({ state: 'reject', reason });

function parseAuthority(text: string, defaultPort: number | undefined): { host: string; port: number } | string {
  let host: string;
  let portText: string | undefined;
  if (text.startsWith('[')) {
    const close = text.indexOf(']');
    if (close < 0) return 'unterminated IPv6 literal';
    host = text.slice(0, close + 1);
    const rest = text.slice(close + 1);
    if (rest !== '' && !rest.startsWith(':')) return 'garbage after IPv6 literal';
    portText = rest === '' ? undefined : rest.slice(1);
    if (!IPV6.test(host)) return `${JSON.stringify(host.slice(0, 60))} is not an IPv6 literal`;
  } else {
    const colon = text.lastIndexOf(':');
    host = colon < 0 ? text : text.slice(0, colon);
    portText = colon < 0 ? undefined : text.slice(colon + 1);
    if (!HOSTNAME.test(host)) return `${JSON.stringify(host.slice(0, 60))} is not a host name or IPv4 address`;
  }
  if (portText === undefined) {
    if (defaultPort === undefined) return 'a port is required';
    return { host: host.toLowerCase(), port: defaultPort };
  }
  if (!PORT.test(portText) || Number(portText) > 65535) return `port ${JSON.stringify(portText.slice(0, 10))} is not 1-65535`;
  return { host: host.toLowerCase(), port: Number(portText) };
}

function parseTarget(method: string, target: string): ProxyHead | string {
  if (method === 'CONNECT') {
    const a = parseAuthority(target, undefined);
    return typeof a === 'string' ? `CONNECT target: ${a}` : { kind: 'connect', ...a };
  }
  if (target.startsWith('/') || target === '*') return 'origin-form request: this is a forward proxy; send absolute-form (http://host/path) or CONNECT';
  const m = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/([^/?#]*)(.*)$/.exec(target);
  if (!m) return `request target ${JSON.stringify(target.slice(0, 60))} is not absolute-form`;
  const scheme = m[1]!.toLowerCase();
  if (scheme !== 'http') return `scheme ${scheme}: only http:// is forwarded in absolute-form; use CONNECT for TLS`;
  if (m[2]!.includes('@')) return 'credentials in the request target are not allowed';
  const a = parseAuthority(m[2]!, 80);
  if (typeof a === 'string') return `request target: ${a}`;
  const path = m[3] === '' ? '/' : m[3]!;
  if (!path.startsWith('/') && !path.startsWith('?')) return 'request target path must start with /';
  return { kind: 'absolute', method, ...a, path };
}

/** Looks at the bytes received so far on a fresh proxy connection. */
export function parseProxyHead(bytes: Buffer): HeadResult {
  const end = bytes.indexOf('\r\n\r\n');
  if (end < 0) return bytes.length >= MAX_PROXY_HEAD_BYTES ? reject(`request head larger than ${MAX_PROXY_HEAD_BYTES} bytes`) : { state: 'need-more' };
  const headBytes = end + 4;
  if (headBytes > MAX_PROXY_HEAD_BYTES) return reject(`request head larger than ${MAX_PROXY_HEAD_BYTES} bytes`);
  const text = bytes.subarray(0, end).toString('latin1');
  const lines = text.split('\r\n');
  if (lines.some((l) => l.includes('\r') || l.includes('\n') || l.includes('\0'))) return reject('bare CR, LF or NUL in the request head');
  const parts = lines[0]!.split(' ');
  if (parts.length !== 3) return reject('request line is not METHOD SP TARGET SP VERSION');
  const [method, target, version] = parts as [string, string, string];
  if (!TOKEN.test(method)) return reject(`method ${JSON.stringify(method.slice(0, 20))} is not a token`);
  if (!isServedHttpVersion(version)) return reject(`version ${JSON.stringify(version.slice(0, 20))} is not HTTP/1.0 or HTTP/1.1`);
  const head = parseTarget(method, target);
  if (typeof head === 'string') return reject(head);
  const headerLines = lines.slice(1);
  if (headerLines.length > MAX_PROXY_HEADERS) return reject(`more than ${MAX_PROXY_HEADERS} header fields`);
  const contentLengths = new Set<string>();
  const transferEncodings: string[] = [];
  for (const line of headerLines) {
    if (line.startsWith(' ') || line.startsWith('\t')) return reject('obsolete line folding in a header');
    const colon = line.indexOf(':');
    if (colon <= 0) return reject(`header line ${JSON.stringify(line.slice(0, 40))} has no name`);
    const name = line.slice(0, colon);
    if (!TOKEN.test(name)) return reject(`header name ${JSON.stringify(name.slice(0, 40))} is not a token (no spaces before the colon)`);
    const value = line.slice(colon + 1).trim();
    if (!FIELD_VALUE.test(value)) return reject(`header ${name} has a control character in its value`);
    const lower = name.toLowerCase();
    if (lower === 'content-length') for (const v of value.split(',')) contentLengths.add(v.trim());
    if (lower === 'transfer-encoding') transferEncodings.push(value.toLowerCase());
  }
  if (contentLengths.size > 0 && transferEncodings.length > 0) return reject('both Content-Length and Transfer-Encoding (request smuggling)');
  if (contentLengths.size > 1) return reject('differing Content-Length values');
  for (const v of contentLengths) if (!/^[0-9]{1,15}$/.test(v)) return reject(`Content-Length ${JSON.stringify(v.slice(0, 20))} is not a number`);
  if (transferEncodings.length > 0 && (transferEncodings.length > 1 || transferEncodings[0] !== 'chunked')) return reject('Transfer-Encoding other than a single "chunked"');
  if (head.kind === 'connect' && (contentLengths.size > 0 || transferEncodings.length > 0)) return reject('CONNECT with a body');
  return { state: 'ok', head, headBytes };
}

/**
 * Who the client is, as the workload hears it: the ingress's forwarding-header policy.
 *
 * The ingress is the edge. Nothing in front of it is trusted, so every header a client could use
 * to claim another address, scheme, host, port, path prefix or client certificate is removed,
 * whatever its spelling: RFC 7239 `Forwarded`, every `X-Forwarded*`, `X-Real-IP`, `X-Client-IP`,
 * `Client-IP`, `True-Client-IP`, `CF-Connecting-IP` and the other CDN spellings, `X-Original-*`
 * and `X-Rewrite-URL` (path overrides), `X-Host`, `X-Url-Scheme`, `Front-End-Https`, client
 * certificate headers, `X-Envoy-*`. Frameworks trust one or another of these when told that a
 * proxy sits in front; here the proxy in front is us.
 *
 * Then the ingress states the facts once, in both spellings frameworks read, always agreeing:
 *
 *   Forwarded: for=<client>;host=<Host>;proto=<http|https>        (RFC 7239; IPv6 quoted)
 *   X-Forwarded-For: <client>   X-Forwarded-Host: <Host>   X-Forwarded-Proto: <http|https>
 *
 * <client> is the peer address of the client connection (an IPv4-mapped address as plain IPv4;
 * `unknown` on a Unix socket); <Host> is the Host header the client sent (absent: no host facts).
 *
 * Pure; the ingress caches the name classification per spelling.
 */

import { isIP } from 'node:net';

/** Exact names (lower case) a client could forge its identity, scheme or target with. */
const FORWARDING_NAMES: ReadonlySet<string> = new Set([
  'forwarded',
  'forwarded-for',
  'client-ip',
  'true-client-ip',
  'cf-connecting-ip',
  'cf-connecting-ipv6',
  'cf-visitor',
  'fastly-client-ip',
  'fly-client-ip',
  'akamai-origin-hop',
  'x-host',
  'x-http-host-override',
  'x-url-scheme',
  'x-scheme',
  'x-rewrite-url',
  'front-end-https',
  'x-arr-ssl',
  'x-arr-clientcert',
  'x-client-cert',
  'x-ssl-client-cert',
  'ssl-client-cert',
  'x-client-verify',
  'x-ssl-client-verify',
  'x-appengine-user-ip',
  'x-appengine-remote-addr',
]);

/** Name prefixes of whole families: X-Forwarded*, X-Original-*, X-Envoy-*, Forwarded-*. */
const FORWARDING_PREFIXES: readonly string[] = ['x-forwarded', 'x-original-', 'x-envoy-', 'forwarded-', 'fly-forwarded-'];

/** `X-Real-IP`, `X-Client-IP`, `X-Cluster-Client-IP`, `X-Remote-Addr`, `X-Originating-IP`, `X-ProxyUser-IP`, … */
const ADDRESS_NAME = /(?:^|-)(?:real|client|connecting|originating|remote|proxyuser|user|socket)-?(?:ip|ipv6|addr|address)$/;

/** Whether a client's header (lower-case name) claims forwarding facts; such headers never reach the guest. */
export function isForwardingHeader(lowerName: string): boolean {
  if (FORWARDING_NAMES.has(lowerName)) return true;
  for (const p of FORWARDING_PREFIXES) if (lowerName.startsWith(p)) return true;
  return ADDRESS_NAME.test(lowerName);
}

export interface ForwardingFacts {
  /** The peer address of the client connection; undefined on a Unix socket. */
  remoteAddress: string | undefined;
  proto: 'http' | 'https';
  /** The Host header the client sent, if any. */
  host: string | undefined;
}

/** The client address as stated to the guest. */
export function clientAddress(remoteAddress: string | undefined): string {
  if (remoteAddress === undefined || remoteAddress === '') return 'unknown';
  return remoteAddress.startsWith('::ffff:') && isIP(remoteAddress.slice(7)) === 4 ? remoteAddress.slice(7) : remoteAddress;
}

/** The last facts and their headers: requests on one connection repeat them (this runs per request). */
let last: { remoteAddress: string | undefined; proto: string; host: string | undefined; headers: readonly string[] } | undefined;

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/** An RFC 7239 value: a token as is, anything else as a quoted-string. */
function forwardedValue(v: string): string {
  return TOKEN.test(v) ? v : `"${v.replace(/["\\]/g, '\\$&')}"`;
}

/** The forwarding headers the ingress adds, as a flat `[name, value, …]` list (do not modify it). */
export function forwardingHeaders(facts: ForwardingFacts): readonly string[] {
  if (last !== undefined && last.remoteAddress === facts.remoteAddress && last.host === facts.host && last.proto === facts.proto) return last.headers;
  const headers = buildForwardingHeaders(facts);
  last = { remoteAddress: facts.remoteAddress, proto: facts.proto, host: facts.host, headers };
  return headers;
}

function buildForwardingHeaders(facts: ForwardingFacts): string[] {
  const client = clientAddress(facts.remoteAddress);
  const forNode = client.includes(':') ? `"[${client}]"` : forwardedValue(client);
  let forwarded = `for=${forNode}`;
  if (facts.host !== undefined) forwarded += `;host=${forwardedValue(facts.host)}`;
  forwarded += `;proto=${facts.proto}`;
  const out = ['forwarded', forwarded, 'x-forwarded-for', client, 'x-forwarded-proto', facts.proto];
  if (facts.host !== undefined) out.push('x-forwarded-host', facts.host);
  return out;
}

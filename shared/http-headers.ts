/**
 * Hop-by-hop headers (RFC 9110 §7.6.1): they describe one connection, not the message, so no
 * proxy of ours passes them on — kestrel's workload proxy, the host's ingress and its egress
 * proxy apply this one rule. Connection, Keep-Alive, TE, Trailer, Transfer-Encoding, Upgrade,
 * HTTP2-Settings, every Proxy-* header, and every header that Connection names.
 *
 * Except: `Connection` can never name an end-to-end header a proxy of ours guarantees (the Host it
 * decided on, the body's length, the forwarding facts and request id it states). A client that
 * lists them (`Connection: host`) would otherwise make the proxy drop what it vouches for.
 */

export const HOP_BY_HOP_HEADERS: ReadonlySet<string> = new Set(['connection', 'keep-alive', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'http2-settings']);

/** End-to-end headers that a `Connection` header cannot remove (lower case). */
export const CONNECTION_CANNOT_REMOVE: ReadonlySet<string> = new Set([
  'host',
  'content-length',
  'forwarded',
  'x-forwarded-for',
  'x-forwarded-host',
  'x-forwarded-proto',
  'x-request-id',
]);

/**
 * The lower-case header names a Connection header value (or values) lists, without the ones it
 * cannot remove. `close`, `keep-alive` and `upgrade` stay in the set: they are hop-by-hop anyway.
 */
export function connectionTokens(value: string | readonly string[] | undefined): Set<string> {
  const out = new Set<string>();
  if (value === undefined) return out;
  for (const v of typeof value === 'string' ? [value] : value) {
    for (const t of v.split(',')) {
      const token = t.trim().toLowerCase();
      if (token !== '' && !CONNECTION_CANNOT_REMOVE.has(token)) out.add(token);
    }
  }
  return out;
}

/** Whether a lower-case header name is hop-by-hop, given the names Connection listed. */
export function isHopByHop(lowerName: string, listed: ReadonlySet<string>): boolean {
  return HOP_BY_HOP_HEADERS.has(lowerName) || lowerName.startsWith('proxy-') || listed.has(lowerName);
}

/**
 * Hop-by-hop headers (RFC 9110 §7.6.1): they describe one connection, not the message, so no
 * proxy of ours passes them on — kestrel's workload proxy, the host's ingress and its egress
 * proxy apply this one rule. Connection, Keep-Alive, TE, Trailer, Transfer-Encoding, Upgrade,
 * HTTP2-Settings, every Proxy-* header, and every header that Connection names.
 */

export const HOP_BY_HOP_HEADERS: ReadonlySet<string> = new Set(['connection', 'keep-alive', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'http2-settings']);

/** The lower-case header names a Connection header value (or values) lists. */
export function connectionTokens(value: string | readonly string[] | undefined): Set<string> {
  const out = new Set<string>();
  if (value === undefined) return out;
  for (const v of typeof value === 'string' ? [value] : value) {
    for (const t of v.split(',')) {
      const token = t.trim().toLowerCase();
      if (token !== '') out.add(token);
    }
  }
  return out;
}

/** Whether a lower-case header name is hop-by-hop, given the names Connection listed. */
export function isHopByHop(lowerName: string, listed: ReadonlySet<string>): boolean {
  return HOP_BY_HOP_HEADERS.has(lowerName) || lowerName.startsWith('proxy-') || listed.has(lowerName);
}

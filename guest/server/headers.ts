/**
 * Header hygiene for the agent's reverse proxy (RFC 9110 §7.6.1). A proxy must not pass on
 * headers that describe one connection rather than the message: Connection and every header it
 * names, Keep-Alive, TE, Trailer, Transfer-Encoding, Upgrade (kept only while forwarding an
 * upgrade, where it is the point) and every Proxy-* header. The same rule serves requests and
 * responses. Forwarding headers are added on requests: X-Forwarded-For gains the peer,
 * X-Forwarded-Proto and X-Forwarded-Host keep what a proxy in front (the host's ingress) set and
 * otherwise describe this hop. Host is dropped: the client sets the workload's own. Expect is
 * dropped too: Node's server has already answered `100-continue` to the client, and undici
 * refuses to send it.
 */

import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';
import { connectionTokens, isHopByHop } from '../../shared/http-headers.js';

export type HeaderMap = Record<string, string | string[] | undefined>;

/** Removes hop-by-hop headers; with `keepUpgrade` the Upgrade header and `Connection: upgrade` stay. */
export function stripHopByHop(headers: HeaderMap, opts: { keepUpgrade?: boolean } = {}): OutgoingHttpHeaders {
  const named = connectionTokens(headers.connection);
  const out: Record<string, string | string[]> = {};
  for (const [rawName, value] of Object.entries(headers)) {
    if (value === undefined) continue;
    const name = rawName.toLowerCase();
    if (opts.keepUpgrade && name === 'upgrade') {
      out[name] = value;
      continue;
    }
    if (isHopByHop(name, named)) continue;
    out[name] = value;
  }
  if (opts.keepUpgrade && out.upgrade !== undefined) out.connection = 'upgrade';
  return out;
}

export interface ForwardContext {
  /** The peer's address, when the transport has one (TCP); vsock and Unix peers have none. */
  remoteAddress?: string;
  /** The scheme this hop was reached by. */
  proto: 'http' | 'https';
  upgrade?: boolean;
}

const first = (v: string | string[] | undefined): string | undefined => (Array.isArray(v) ? v[0] : v);

export function forwardRequestHeaders(headers: IncomingHttpHeaders, ctx: ForwardContext): OutgoingHttpHeaders {
  const out = stripHopByHop(headers, { keepUpgrade: ctx.upgrade === true });
  delete out.host;
  delete out.expect;
  const prior = headers['x-forwarded-for'];
  const priorText = Array.isArray(prior) ? prior.join(', ') : prior;
  const peer = ctx.remoteAddress?.replace(/^::ffff:/, '');
  if (peer) out['x-forwarded-for'] = priorText ? `${priorText}, ${peer}` : peer;
  else if (priorText) out['x-forwarded-for'] = priorText;
  out['x-forwarded-proto'] = first(headers['x-forwarded-proto']) ?? ctx.proto;
  const host = first(headers['x-forwarded-host']) ?? headers.host;
  if (host) out['x-forwarded-host'] = host;
  return out;
}

export function forwardResponseHeaders(headers: HeaderMap): OutgoingHttpHeaders {
  return stripHopByHop(headers);
}

/**
 * Which requests belong to the ingress proxy, and the path the guest sees.
 *
 * `/api/v1/vms/<name>/proxy<rest>` is forwarded to kestrel in VM `<name>` as `<rest>` (or `/`),
 * query included, byte for byte: we never re-encode what the client sent, because the workload
 * may rely on the exact encoding. Safety is decided on the *decoded* form instead: a request is
 * refused (400) when decoding could turn it into something else than a plain path below the
 * VM's proxy prefix, i.e. when it carries
 *  - an encoded or raw backslash, an encoded slash (`%2F`), NUL or control characters,
 *  - a dot segment (`.`/`..`, raw or `%2e`-encoded) anywhere in the path (the workload, a router
 *    or the API itself may normalise it and land on another route or VM),
 *  - a leading `//` (a network-path reference to parsers that follow RFC 3986),
 *  - a VM name that is not a plain name (percent-encoded, dots, slashes),
 *  - absolute-form or authority-form targets that spell the proxy prefix.
 * What does not start with the prefix at all is not ours: `null`, the API routes it.
 */

import { VolantError } from '../../shared/errors.js';
import { isValidVmName } from '../../shared/names.js';

export const PROXY_ROUTE_PREFIX = '/api/v1/vms/';
const PROXY_SEGMENT = '/proxy';

export interface ProxyMatch {
  vmName: string;
  /** The origin-form target for the guest: path and query exactly as the client sent them. */
  upstreamPath: string;
}

function refuse(url: string, why: string): never {
  throw new VolantError('INVALID_ARGUMENT', `proxy path ${JSON.stringify(url.slice(0, 200))} refused: ${why}`);
}

/**
 * Returns the VM and guest path for a proxy request, `null` for URLs that are not proxy requests,
 * and throws `INVALID_ARGUMENT` for proxy requests whose path could escape the VM's prefix.
 */
export function matchProxyPath(url: string): ProxyMatch | null {
  if (!url.startsWith(PROXY_ROUTE_PREFIX)) {
    const q = url.indexOf('?');
    if ((q < 0 ? url : url.slice(0, q)).includes(PROXY_ROUTE_PREFIX)) {
      refuse(url, 'the proxy prefix must begin the request target (no absolute-form, no leading segments)');
    }
    return null;
  }
  const nameEnd = url.indexOf('/', PROXY_ROUTE_PREFIX.length);
  const query = url.indexOf('?');
  if (nameEnd < 0 || (query >= 0 && query < nameEnd) || !url.startsWith(PROXY_SEGMENT, nameEnd)) return maybeDisguised(url);
  const afterProxy = nameEnd + PROXY_SEGMENT.length;
  const next = url.charCodeAt(afterProxy);
  // `/proxy`, `/proxy/...`, `/proxy?...`; `/proxyfoo` is some other route.
  if (!(Number.isNaN(next) || next === 47 || next === 63 /* '?' */)) return maybeDisguised(url);
  const vmName = url.slice(PROXY_ROUTE_PREFIX.length, nameEnd);
  if (!isValidVmName(vmName)) refuse(url, 'the VM name segment is not a plain VM name (letters, digits, "-", "_")');
  const rest = url.slice(afterProxy);
  const upstreamPath = Number.isNaN(next) ? '/' : next === 63 ? `/${rest}` : rest;
  const q = upstreamPath.indexOf('?');
  const path = q < 0 ? upstreamPath : upstreamPath.slice(0, q);
  const problem = pathProblem(path);
  if (problem !== null) refuse(url, problem);
  return { vmName, upstreamPath };
}

/**
 * A URL under `/api/v1/vms/` that is not literally a proxy route but could become one (or move
 * between VMs) after decoding or dot-segment removal is refused, not handed to the API router.
 */
function maybeDisguised(url: string): null {
  const q = url.indexOf('?');
  const path = q < 0 ? url : url.slice(0, q);
  if (pathProblem(path) !== null && /proxy/i.test(safeDecode(path) ?? path)) {
    refuse(url, 'encoded or dot-segment path that resolves near a proxy route');
  }
  return null;
}

function safeDecode(s: string): string | null {
  try {
    return decodeURIComponent(s);
  } catch {
    return null;
  }
}

const PLAIN_PATH = /^[A-Za-z0-9\-._~!$&'()*+,;=:@/]*$/;

/** Why `path` (no query) is unsafe to forward, or `null` when it is a plain path. */
export function pathProblem(path: string): string | null {
  if (path.charCodeAt(0) !== 47) return 'path must start with "/"';
  if (path.charCodeAt(1) === 47) return 'path must not start with "//"';
  // Fast path: no escapes and no dots-only segments.
  if (PLAIN_PATH.test(path) && !hasDotSegment(path)) return null;
  if (path.includes('\\')) return 'backslash in path';
  const decoded = safeDecode(path);
  if (decoded === null) return 'malformed percent-encoding';
  if (/%2f|%5c/i.test(path)) return 'encoded slash or backslash in path';
  if (/[\u0000-\u001f\u007f]/.test(decoded)) return 'control character in path';
  if (hasDotSegment(decoded)) return 'dot segment in path';
  if (/%(2e|2f|5c|25|00)/i.test(decoded)) return 'double percent-encoding in path';
  return null;
}

/** `.` and `..` segments, also with a `;parameter` (servlet containers read `..;x` as `..`). */
function hasDotSegment(path: string): boolean {
  if (!path.includes('.')) return false;
  for (const seg of path.split('/')) {
    if (seg === '.' || seg === '..' || seg.startsWith('.;') || seg.startsWith('..;')) return true;
  }
  return false;
}

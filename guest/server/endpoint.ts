/**
 * Endpoint specs: the one text form kestrel uses for every socket it listens on or dials.
 *
 *   vsock:PORT          listen on any CID (the agent server), or, as an upstream, the host (CID 2)
 *   vsock:CID:PORT      dial a given CID (the egress upstream is `vsock:2:3128`)
 *   tcp:HOST:PORT       HOST is an IPv4 address or `localhost`; PORT 0 asks the kernel for one
 *   unix:PATH           an absolute path that fits sun_path
 *
 * Parsing is pure and strict: a spec that could mean two things is an error naming the forms
 * that are allowed. Opening sockets lives in transports.ts.
 */

import { VolantError } from '../../shared/errors.js';
import { tryParseIPv4 } from '../../shared/ipv4.js';
import type { NetworkMode } from '../../shared/schema/manifest.js';
import { AGENT_RELAY_PORT, AGENT_TCP_PORT, AGENT_VSOCK_PORT, HOST_CID, MAX_UNIX_SOCKET_PATH_BYTES } from '../../shared/vsock.js';

export type Endpoint =
  | { kind: 'vsock'; cid: number; port: number }
  | { kind: 'tcp'; host: string; port: number }
  | { kind: 'unix'; path: string };

const FORMS = 'vsock:PORT, vsock:CID:PORT, tcp:HOST:PORT or unix:/absolute/path';
const DECIMAL = /^(0|[1-9][0-9]{0,9})$/;

function bad(spec: string, why: string): never {
  throw new VolantError('INVALID_ARGUMENT', `endpoint ${JSON.stringify(spec.slice(0, 120))}: ${why} (allowed: ${FORMS})`);
}

function integer(spec: string, text: string, what: string, max: number): number {
  if (!DECIMAL.test(text) || Number(text) > max) bad(spec, `${what} ${JSON.stringify(text)} is not an integer in 0..${max}`);
  return Number(text);
}

/** `defaultCid` is the CID a `vsock:PORT` spec means: any (for listening) or the host (for dialing). */
export function parseEndpoint(spec: string, defaultCid: number = HOST_CID): Endpoint {
  if (typeof spec !== 'string') throw new VolantError('INVALID_ARGUMENT', `endpoint must be a string (allowed: ${FORMS})`);
  const colon = spec.indexOf(':');
  const kind = colon < 0 ? spec : spec.slice(0, colon);
  const rest = colon < 0 ? '' : spec.slice(colon + 1);
  switch (kind) {
    case 'vsock': {
      const parts = rest.split(':');
      if (parts.length === 1) return { kind: 'vsock', cid: defaultCid, port: integer(spec, parts[0]!, 'port', 0xffffffff) };
      if (parts.length === 2) return { kind: 'vsock', cid: integer(spec, parts[0]!, 'CID', 0xffffffff), port: integer(spec, parts[1]!, 'port', 0xffffffff) };
      return bad(spec, 'too many fields');
    }
    case 'tcp': {
      const last = rest.lastIndexOf(':');
      if (last < 0) bad(spec, 'missing :PORT');
      const host = rest.slice(0, last);
      if (host !== 'localhost' && tryParseIPv4(host) === undefined) bad(spec, `host ${JSON.stringify(host)} is not a dotted-quad IPv4 address or localhost`);
      return { kind: 'tcp', host, port: integer(spec, rest.slice(last + 1), 'port', 65535) };
    }
    case 'unix': {
      if (!rest.startsWith('/')) bad(spec, 'the path must be absolute');
      if (rest.includes('\0')) bad(spec, 'the path contains a NUL byte');
      if (Buffer.byteLength(rest) > MAX_UNIX_SOCKET_PATH_BYTES) bad(spec, `the path is longer than ${MAX_UNIX_SOCKET_PATH_BYTES} bytes (sun_path)`);
      return { kind: 'unix', path: rest };
    }
    default:
      return bad(spec, `unknown kind ${JSON.stringify(kind.slice(0, 20))}`);
  }
}

export function formatEndpoint(e: Endpoint): string {
  if (e.kind === 'vsock') return `vsock:${e.cid}:${e.port}`;
  if (e.kind === 'tcp') return `tcp:${e.host}:${e.port}`;
  return `unix:${e.path}`;
}

/** VMADDR_CID_ANY: a vsock listener accepts on every CID. */
export const VSOCK_CID_ANY = 0xffffffff;

/**
 * Where the agent listens in a VM: vsock port 8080 whenever the VM has vsock (the host's way in
 * for every mode), and TCP :8080 when the VM has a network interface (bridged, dhcp).
 */
export function agentEndpoints(mode: NetworkMode, vsockAvailable: boolean): Endpoint[] {
  const out: Endpoint[] = [];
  if (vsockAvailable) out.push({ kind: 'vsock', cid: VSOCK_CID_ANY, port: AGENT_VSOCK_PORT });
  if (mode !== 'vsock') out.push({ kind: 'tcp', host: '0.0.0.0', port: AGENT_TCP_PORT });
  return out;
}

/**
 * Where the raw relay listens (guest/server/relay.ts): vsock port 8081 whenever the VM has vsock
 * (only the host, CID 2, reaches a guest's vsock ports from outside), and TCP :8081 only when the
 * VM knows the host's address on the bridge (`hostAddress`: bridged mode's gateway), so that it
 * admits that one peer. A dhcp VM learns no such address it could trust, so its relay is vsock only.
 */
export function relayEndpoints(mode: NetworkMode, vsockAvailable: boolean, hostAddress: string | undefined): Endpoint[] {
  const out: Endpoint[] = [];
  if (vsockAvailable) out.push({ kind: 'vsock', cid: VSOCK_CID_ANY, port: AGENT_RELAY_PORT });
  if (mode === 'bridged' && hostAddress !== undefined) out.push({ kind: 'tcp', host: '0.0.0.0', port: AGENT_RELAY_PORT });
  return out;
}

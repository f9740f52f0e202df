/**
 * vsock port numbers and the hybrid-vsock handshake that Cloud Hypervisor and Firecracker speak
 * on the Unix socket that stands for a VM's vsock device:
 *
 *   host → guest: connect to the socket, send `CONNECT <port>\n`; the VMM answers
 *                 `OK <hostside_port>\n` and then carries raw bytes both ways. No `OK` (the
 *                 stream closes) means nothing listens on that guest port.
 *   guest → host: the VMM connects to `<socket>_<port>`; no handshake on that side.
 *
 * The VMM reads the command into a 32-byte buffer, so anything longer is malformed.
 */

import { VolantError } from './errors.js';

/** kestrel's HTTP agent (its own API: /healthz, /v1/logs, and the HTTP-aware proxy), on vsock and on TCP. */
export const AGENT_VSOCK_PORT = 8080;
export const AGENT_TCP_PORT = AGENT_VSOCK_PORT;
/**
 * kestrel's raw relay: a connection here is piped byte for byte to the workload's HTTP port
 * (guest/server/relay.ts). Only the host's ingress dials it, for requests it has already parsed
 * and checked; the same number on vsock and TCP (docs/CONTRACTS.md, docs/agent.md).
 */
export const AGENT_RELAY_PORT = 8081;
/**
 * Paths kestrel answers itself on its HTTP port, in front of the workload (guest/server/agent.ts):
 * its status and the workload's log. A proxied request for one of them still goes to kestrel's
 * HTTP port, never the relay, so `…/proxy/healthz` means the same whichever port serves the rest.
 */
export const AGENT_OWN_PATHS: ReadonlySet<string> = new Set(['/healthz', '/v1/logs']);

/** Whether kestrel answers this request target (path with or without `?query`) itself. */
export function isAgentOwnPath(target: string): boolean {
  const q = target.indexOf('?');
  return AGENT_OWN_PATHS.has(q < 0 ? target : target.slice(0, q));
}
export const EGRESS_VSOCK_PORT = 3128;
export const HOST_CID = 2;
/** CIDs 0, 1 and 2 are reserved (hypervisor, loopback, host). */
export const FIRST_GUEST_CID = 3;
/** The largest CID a guest can have (u32, minus the reserved VMADDR_CID_ANY). */
export const MAX_GUEST_CID = 0xfffffffe;
export const HANDSHAKE_MAX_BYTES = 32;
export const HANDSHAKE_TIMEOUT_MS = 2000;
/** `sun_path` holds 108 bytes including the terminating NUL. */
export const MAX_UNIX_SOCKET_PATH_BYTES = 107;

function assertPort(port: number): void {
  if (!Number.isInteger(port) || port < 0 || port > 0xffffffff) {
    throw new VolantError('INVALID_ARGUMENT', `vsock port ${String(port)} is not an integer in 0..4294967295`);
  }
}

export function encodeConnect(port: number): Buffer {
  assertPort(port);
  return Buffer.from(`CONNECT ${port}\n`, 'ascii');
}

const OK_LINE = /^OK ([0-9]{1,10})$/;
const CONNECT_LINE = /^connect ([0-9]{1,10})$/i;

/** Parses the VMM's answer line (without its `\n`); anything but `OK <n>` is a protocol error. */
export function parseOkLine(line: string): number {
  const m = OK_LINE.exec(line);
  const port = m ? Number(m[1]) : Number.NaN;
  if (!m || port > 0xffffffff) {
    throw new VolantError('PROTOCOL_ERROR', `hybrid vsock: expected "OK <port>", got ${JSON.stringify(line.slice(0, 40))}`);
  }
  return port;
}

/** Parses a `CONNECT <port>` command line (without `\n`), as the VMM's muxer does. */
export function parseConnectLine(line: string): number {
  const m = CONNECT_LINE.exec(line);
  const port = m ? Number(m[1]) : Number.NaN;
  if (!m || port > 0xffffffff) {
    throw new VolantError('PROTOCOL_ERROR', `hybrid vsock: expected "CONNECT <port>", got ${JSON.stringify(line.slice(0, 40))}`);
  }
  return port;
}

export type LineResult =
  | { state: 'need-more' }
  | { state: 'line'; line: string; rest: Buffer }
  | { state: 'too-long' };

/**
 * Accumulates bytes until the first `\n` of a handshake line, refusing more than `max` bytes
 * (line included). What follows the line is returned untouched: it already belongs to the stream.
 */
export class HandshakeLineReader {
  private buf: Buffer = Buffer.alloc(0);
  constructor(private readonly max = HANDSHAKE_MAX_BYTES) {}

  push(chunk: Buffer): LineResult {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    const nl = this.buf.indexOf(10);
    if (nl < 0) return this.buf.length >= this.max ? { state: 'too-long' } : { state: 'need-more' };
    if (nl + 1 > this.max) return { state: 'too-long' };
    const line = this.buf.subarray(0, nl).toString('latin1');
    const rest = this.buf.subarray(nl + 1);
    this.buf = Buffer.alloc(0);
    return { state: 'line', line, rest };
  }
}

/** The Unix socket the VMM connects to for guest-initiated connections to `port`. */
export function guestInitiatedSocketPath(vsockSocket: string, port: number): string {
  assertPort(port);
  const p = `${vsockSocket}_${port}`;
  if (Buffer.byteLength(p) > MAX_UNIX_SOCKET_PATH_BYTES) {
    throw new VolantError('INVALID_ARGUMENT', `vsock socket path ${p} is longer than ${MAX_UNIX_SOCKET_PATH_BYTES} bytes (sun_path limit)`);
  }
  return p;
}

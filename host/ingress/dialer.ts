/**
 * Opens a stream to kestrel's agent port in one VM, over the transport the network policy chose
 * for it (the one dialer for the health wait, logs and ingress alike):
 *  - `vsock`: the VM's hybrid-vsock Unix socket, `CONNECT 8080\n`, `OK <n>\n` (host/vsock/hybrid.ts);
 *  - `af-vsock`: the guest's CID over AF_VSOCK through the native addon (QEMU with the host
 *    kernel's vhost-vsock);
 *  - `tcp`: `guest_ip:8080` on the bridge (bridged and dhcp VMs of a VMM without vsock).
 * All resolve only once bytes can flow to kestrel, within `timeoutMs`, or reject with a
 * `VolantError`: `TIMEOUT` (504) or `UPSTREAM_UNREACHABLE` / `PROTOCOL_ERROR` (502).
 */

import { connect, type Socket } from 'node:net';
import { vsockConnect } from '../../native/index.js';
import { VolantError } from '../../shared/errors.js';
import { AGENT_VSOCK_PORT } from '../../shared/vsock.js';
import { dialHybridVsock } from '../vsock/hybrid.js';

export type AgentTransport = { kind: 'vsock'; socketPath: string } | { kind: 'af-vsock'; cid: number } | { kind: 'tcp'; host: string; port: number };
export type IngressTransport = AgentTransport;

/** Opens a stream to (CID, port) over AF_VSOCK; the native addon's `vsockConnect` (tests pass a stand-in). */
export type AfVsockConnect = (cid: number, port: number) => Promise<Socket>;

/** A stable key for a transport: a VM whose key changes gets a fresh connection pool. */
export function transportKey(t: AgentTransport): string {
  if (t.kind === 'vsock') return `vsock:${t.socketPath}`;
  if (t.kind === 'af-vsock') return `af-vsock:${t.cid}`;
  return `tcp:${t.host}:${t.port}`;
}

export function describeTransport(t: AgentTransport): string {
  if (t.kind === 'vsock') return `hybrid vsock ${t.socketPath} port ${AGENT_VSOCK_PORT}`;
  if (t.kind === 'af-vsock') return `AF_VSOCK CID ${t.cid} port ${AGENT_VSOCK_PORT}`;
  return `tcp ${t.host}:${t.port}`;
}

export function dialAgent(t: AgentTransport, timeoutMs: number, afVsock: AfVsockConnect = vsockConnect): Promise<Socket> {
  if (t.kind === 'vsock') return dialHybridVsock(t.socketPath, AGENT_VSOCK_PORT, { timeoutMs });
  if (t.kind === 'af-vsock') return dialAfVsock(afVsock, t.cid, timeoutMs);
  return dialTcp(t.host, t.port, timeoutMs);
}

function dialAfVsock(connectVsock: AfVsockConnect, cid: number, timeoutMs: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    let done = false;
    const timer = setTimeout(() => {
      done = true;
      reject(new VolantError('TIMEOUT', `AF_VSOCK CID ${cid} port ${AGENT_VSOCK_PORT}: not connected within ${timeoutMs} ms`));
    }, timeoutMs);
    connectVsock(cid, AGENT_VSOCK_PORT).then(
      (sock) => {
        clearTimeout(timer);
        if (done) sock.destroy();
        else resolve(sock);
      },
      (err: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        if (!done) reject(new VolantError('UPSTREAM_UNREACHABLE', `AF_VSOCK CID ${cid} port ${AGENT_VSOCK_PORT}: ${err.code ?? err.message}`, undefined, { cause: err }));
      },
    );
  });
}

function dialTcp(host: string, port: number, timeoutMs: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const sock = connect({ host, port, noDelay: true });
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new VolantError('TIMEOUT', `tcp ${host}:${port}: not connected within ${timeoutMs} ms`));
    }, timeoutMs);
    sock.once('connect', () => {
      clearTimeout(timer);
      sock.off('error', onError);
      resolve(sock);
    });
    const onError = (err: NodeJS.ErrnoException): void => {
      clearTimeout(timer);
      reject(new VolantError('UPSTREAM_UNREACHABLE', `tcp ${host}:${port}: ${err.code ?? err.message}`, undefined, { cause: err }));
    };
    sock.once('error', onError);
  });
}

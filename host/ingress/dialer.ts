/**
 * Opens a stream to kestrel's agent port in one VM, over the transport the VM has:
 *  - `vsock`: the VM's hybrid-vsock Unix socket, `CONNECT 8080\n`, `OK <n>\n` (host/vsock/hybrid.ts);
 *  - `tcp`: `guest_ip:8080` on the bridge (bridged and dhcp VMs).
 * Both resolve only once bytes can flow to kestrel, within `timeoutMs`, or reject with a
 * `VolantError`: `TIMEOUT` (504) or `UPSTREAM_UNREACHABLE` / `PROTOCOL_ERROR` (502).
 */

import { connect, type Socket } from 'node:net';
import { VolantError } from '../../shared/errors.js';
import { AGENT_VSOCK_PORT } from '../../shared/vsock.js';
import { dialHybridVsock } from '../vsock/hybrid.js';

export type IngressTransport = { kind: 'vsock'; socketPath: string } | { kind: 'tcp'; host: string; port: number };

/** A stable key for a transport: a VM whose key changes gets a fresh connection pool. */
export function transportKey(t: IngressTransport): string {
  return t.kind === 'vsock' ? `vsock:${t.socketPath}` : `tcp:${t.host}:${t.port}`;
}

export function describeTransport(t: IngressTransport): string {
  return t.kind === 'vsock' ? `hybrid vsock ${t.socketPath} port ${AGENT_VSOCK_PORT}` : `tcp ${t.host}:${t.port}`;
}

export function dialAgent(t: IngressTransport, timeoutMs: number): Promise<Socket> {
  return t.kind === 'vsock' ? dialHybridVsock(t.socketPath, AGENT_VSOCK_PORT, { timeoutMs }) : dialTcp(t.host, t.port, timeoutMs);
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

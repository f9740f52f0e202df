/**
 * Opens a stream to a port of kestrel's in one VM, over the transport the network policy chose
 * for it (the one dialer for the agent client, host/agent/, and the ingress alike):
 *  - `vsock`: the VM's hybrid-vsock Unix socket, `CONNECT <port>\n`, `OK <n>\n` (host/vsock/hybrid.ts);
 *  - `af-vsock`: the guest's CID over AF_VSOCK through the native addon (QEMU with the host
 *    kernel's vhost-vsock);
 *  - `tcp`: `guest_ip:<port>` on the bridge (bridged and dhcp VMs of a VMM without vsock).
 * The port is kestrel's HTTP agent (AGENT_VSOCK_PORT) unless the caller asks for another: the
 * ingress asks `ingressUpstreamPort` and gets the raw relay (AGENT_RELAY_PORT) where the VM has
 * one. All resolve only once bytes can flow to kestrel, within `timeoutMs`, or reject with a
 * `VolantError`: `TIMEOUT` (504) or `UPSTREAM_UNREACHABLE` / `PROTOCOL_ERROR` (502).
 */

import { connect, type Socket } from 'node:net';
import { vsockConnect } from '../../native/index.js';
import { VolantError } from '../../shared/errors.js';
import { AGENT_RELAY_PORT, AGENT_VSOCK_PORT, isAgentOwnPath } from '../../shared/vsock.js';
import { dialHybridVsock } from '../vsock/hybrid.js';

/**
 * How the host reaches one VM's kestrel. `relay`: kestrel runs the raw relay on AGENT_RELAY_PORT
 * on this transport (the orchestrator sets it from the manifest and the network policy, the same
 * facts kestrel decides by: shared/schema/manifest.ts `workloadRelayTarget`, guest/server/endpoint.ts).
 */
export type AgentTransport = ({ kind: 'vsock'; socketPath: string } | { kind: 'af-vsock'; cid: number } | { kind: 'tcp'; host: string; port: number }) & { relay?: boolean };
export type IngressTransport = AgentTransport;

/** Opens a stream to (CID, port) over AF_VSOCK; the native addon's `vsockConnect` (tests pass a stand-in). */
export type AfVsockConnect = (cid: number, port: number) => Promise<Socket>;

/** A stable key for a transport: a VM whose key changes gets a fresh connection pool. */
export function transportKey(t: AgentTransport): string {
  const relay = t.relay ? '+relay' : '';
  if (t.kind === 'vsock') return `vsock:${t.socketPath}${relay}`;
  if (t.kind === 'af-vsock') return `af-vsock:${t.cid}${relay}`;
  return `tcp:${t.host}:${t.port}${relay}`;
}

/** kestrel's HTTP agent port on this transport (its API and its HTTP-aware proxy). */
export function agentPort(t: AgentTransport): number {
  return t.kind === 'tcp' ? t.port : AGENT_VSOCK_PORT;
}

/**
 * The port the ingress dials for one proxied request or upgrade (`upstreamPath`: the target as
 * sent to the guest, query included): kestrel's raw relay where the VM has one (no second HTTP
 * parse in the guest; the ingress has checked the request and checks the response head itself),
 * else, and for the paths kestrel answers itself (/healthz, /v1/logs), kestrel's HTTP agent port.
 */
export function ingressUpstreamPort(t: AgentTransport, upstreamPath: string): number {
  return t.relay && !isAgentOwnPath(upstreamPath) ? AGENT_RELAY_PORT : agentPort(t);
}

export function describeTransport(t: AgentTransport, port: number = agentPort(t)): string {
  if (t.kind === 'vsock') return `hybrid vsock ${t.socketPath} port ${port}`;
  if (t.kind === 'af-vsock') return `AF_VSOCK CID ${t.cid} port ${port}`;
  return `tcp ${t.host}:${port}`;
}

export function dialAgent(t: AgentTransport, timeoutMs: number, afVsock: AfVsockConnect = vsockConnect, port: number = agentPort(t)): Promise<Socket> {
  if (t.kind === 'vsock') return dialHybridVsock(t.socketPath, port, { timeoutMs });
  if (t.kind === 'af-vsock') return dialAfVsock(afVsock, t.cid, port, timeoutMs);
  return dialTcp(t.host, port, timeoutMs);
}

function dialAfVsock(connectVsock: AfVsockConnect, cid: number, port: number, timeoutMs: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    let done = false;
    const timer = setTimeout(() => {
      done = true;
      reject(new VolantError('TIMEOUT', `AF_VSOCK CID ${cid} port ${port}: not connected within ${timeoutMs} ms`));
    }, timeoutMs);
    connectVsock(cid, port).then(
      (sock) => {
        clearTimeout(timer);
        if (done) sock.destroy();
        else resolve(sock);
      },
      (err: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        if (!done) reject(new VolantError('UPSTREAM_UNREACHABLE', `AF_VSOCK CID ${cid} port ${port}: ${err.code ?? err.message}`, undefined, { cause: err }));
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

/**
 * Where kestrel's sockets meet the outside: listen on and dial an Endpoint. TCP and Unix use
 * `node:net`; vsock goes through the native addon, which hands back ordinary `net.Socket`s, so
 * every server above this file sees one kind of connection whatever the transport.
 *
 * A listener feeds connections to a callback (an http.Server is fed with `emit('connection')`),
 * which keeps the servers free of transport branches. A stale Unix socket file is replaced; the
 * path is removed again on close.
 */

import { rmSync } from 'node:fs';
import { connect, createServer, type Socket } from 'node:net';
import { vsockConnect, vsockListen } from '../../native/index.js';
import { VolantError } from '../../shared/errors.js';
import { type Endpoint, formatEndpoint, VSOCK_CID_ANY } from './endpoint.js';

export const DIAL_TIMEOUT_MS = 10_000;

export interface Listener {
  endpoint: Endpoint;
  /** Where it actually listens (a TCP port 0 becomes the kernel's choice). */
  address: string;
  close(): Promise<void>;
}

export async function listen(endpoint: Endpoint, onConnection: (socket: Socket) => void): Promise<Listener> {
  if (endpoint.kind === 'vsock') {
    const l = await vsockListen(endpoint.port, onConnection, endpoint.cid === VSOCK_CID_ANY ? {} : { cid: endpoint.cid });
    return { endpoint, address: `vsock:${l.port}`, close: () => l.close() };
  }
  if (endpoint.kind === 'unix') rmSync(endpoint.path, { force: true });
  const server = createServer({ pauseOnConnect: false }, onConnection);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    if (endpoint.kind === 'unix') server.listen(endpoint.path, resolve);
    else server.listen(endpoint.port, endpoint.host, resolve);
  });
  const addr = server.address();
  const address = typeof addr === 'string' || addr === null ? `unix:${endpoint.kind === 'unix' ? endpoint.path : ''}` : `tcp:${addr.address}:${addr.port}`;
  return {
    endpoint,
    address,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => {
          if (endpoint.kind === 'unix') rmSync(endpoint.path, { force: true });
          resolve();
        });
      }),
  };
}

/** Opens a stream to `endpoint`; errors are VolantError UPSTREAM_UNREACHABLE or TIMEOUT. */
export async function dial(endpoint: Endpoint, timeoutMs = DIAL_TIMEOUT_MS): Promise<Socket> {
  if (endpoint.kind === 'vsock') {
    try {
      return await vsockConnect(endpoint.cid, endpoint.port);
    } catch (e) {
      throw new VolantError('UPSTREAM_UNREACHABLE', `${formatEndpoint(endpoint)}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
  }
  return new Promise((resolve, reject) => {
    const s = endpoint.kind === 'unix' ? connect(endpoint.path) : connect({ host: endpoint.host, port: endpoint.port });
    const timer = setTimeout(() => {
      s.destroy();
      reject(new VolantError('TIMEOUT', `${formatEndpoint(endpoint)}: no connection within ${timeoutMs} ms`));
    }, timeoutMs);
    s.once('connect', () => {
      clearTimeout(timer);
      s.removeAllListeners('error');
      resolve(s);
    });
    s.once('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(new VolantError('UPSTREAM_UNREACHABLE', `${formatEndpoint(endpoint)}: ${e.code ?? e.message}`));
    });
  });
}

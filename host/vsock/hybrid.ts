/**
 * Host side of hybrid vsock (Cloud Hypervisor's and Firecracker's, and our own device's under QEMU;
 * the contract is in docs/vsock.md): a VM's vsock device appears on the host as a Unix socket.
 *
 *  - host → guest: connect to the socket, write `CONNECT <port>\n`, read `OK <n>\n`; the stream is
 *    then raw bytes to the guest listener. A close without `OK` means nothing listens there.
 *  - guest → host: the VMM connects to `<socket>_<port>`, so the host must already listen there.
 *
 * The VMM drops a handshake that takes longer than 2 s, so we time out at the same bound.
 */

import { connect, createServer, type Server, type Socket } from 'node:net';
import { unlinkSync } from 'node:fs';
import { VolantError } from '../../shared/errors.js';
import { encodeConnect, guestInitiatedSocketPath, HANDSHAKE_TIMEOUT_MS, HandshakeLineReader, parseOkLine } from '../../shared/vsock.js';

export interface DialOptions {
  timeoutMs?: number;
}

/** Opens a stream to `port` in the guest; resolves after the `OK` line, with any early bytes unshifted. */
export function dialHybridVsock(socketPath: string, port: number, options: DialOptions = {}): Promise<Socket> {
  const timeoutMs = options.timeoutMs ?? HANDSHAKE_TIMEOUT_MS;
  const command = encodeConnect(port);
  return new Promise((resolve, reject) => {
    const sock = connect({ path: socketPath });
    const reader = new HandshakeLineReader();
    let settled = false;
    const fail = (err: Error): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.destroy();
      reject(err);
    };
    const timer = setTimeout(() => fail(new VolantError('TIMEOUT', `hybrid vsock ${socketPath}: no answer to CONNECT ${port} within ${timeoutMs} ms`)), timeoutMs);
    const onData = (chunk: Buffer): void => {
      const r = reader.push(chunk);
      if (r.state === 'need-more') return;
      if (r.state === 'too-long') {
        fail(new VolantError('PROTOCOL_ERROR', `hybrid vsock ${socketPath}: answer line too long`));
        return;
      }
      try {
        parseOkLine(r.line);
      } catch (e) {
        fail(e as Error);
        return;
      }
      settled = true;
      clearTimeout(timer);
      sock.off('data', onData);
      sock.off('error', onError);
      sock.off('close', onClose);
      sock.pause();
      if (r.rest.length > 0) sock.unshift(r.rest);
      resolve(sock);
    };
    const onError = (err: NodeJS.ErrnoException): void =>
      fail(new VolantError('UPSTREAM_UNREACHABLE', `hybrid vsock ${socketPath}: ${err.code ?? err.message}`, undefined, { cause: err }));
    const onClose = (): void => fail(new VolantError('UPSTREAM_UNREACHABLE', `hybrid vsock ${socketPath}: nothing listens on guest port ${port} (closed without OK)`));
    sock.on('data', onData);
    sock.on('error', onError);
    sock.on('close', onClose);
    sock.on('connect', () => sock.write(command));
  });
}

/**
 * Listens on `<vsockSocket>_<port>` for connections the guest opens to (CID 2, port). A stale
 * socket file from an earlier run is removed first, because bind() would fail on it.
 */
export function listenGuestInitiated(vsockSocket: string, port: number, onConnection: (sock: Socket) => void): Promise<Server> {
  const path = guestInitiatedSocketPath(vsockSocket, port);
  try {
    unlinkSync(path);
  } catch {
    // absent: nothing to remove
  }
  const server = createServer(onConnection);
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => {
      server.off('error', reject);
      resolve(server);
    });
  });
}

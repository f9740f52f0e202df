/**
 * TEST DOUBLE of a VMM's hybrid-vsock muxer (Cloud Hypervisor / Firecracker) for tests that need
 * a VMM's hybrid socket without a VM: Cloud Hypervisor cannot run on the test machines, and our
 * own device (host/vsock/device/, used by every test that boots a guest) needs a guest behind it.
 * It follows the published behaviour in
 * docs/CONTRACTS.md ("vsock"), which summarises
 * Firecracker `docs/vsock.md` and Cloud Hypervisor `virtio-devices/src/vsock/unix/muxer.rs`:
 *
 *  - host → guest: the muxer listens on the VM's Unix socket (it does NOT unlink a stale file,
 *    like CH: bind fails on one). A connecting peer sends `CONNECT <port>\n` (keyword matched
 *    case-insensitively, decimal port), read into a 32-byte buffer: a longer or malformed
 *    command, or EOF before `\n`, closes the stream. When something listens on that guest port
 *    the muxer answers `OK <hostside_port>\n`, with host-side ports allocated from 2^30 upward,
 *    and from then on carries raw bytes both ways (bytes sent after the command line belong to
 *    the stream). When nothing listens (the guest answers RST) the stream closes without `OK`.
 *  - the handshake must complete within 2000 ms; at most 1023 connections per device: past
 *    that the muxer accepts and drops at once.
 *  - guest → host: a guest `connect(CID 2, port P)` makes the VMM connect to `<socket>_P`; the
 *    host must already listen there, else the guest sees a reset. `dialFromGuest(P)` does that.
 *
 * "The guest" here is whatever the test maps guest ports to: a Unix socket (kestrel started
 * with `--listen unix:...`) or a TCP port on loopback.
 */

import { type Server, type Socket, connect, createServer } from 'node:net';
import { guestInitiatedSocketPath, HANDSHAKE_MAX_BYTES, HANDSHAKE_TIMEOUT_MS, HandshakeLineReader, parseConnectLine } from '../../shared/vsock.js';

/** Cloud Hypervisor's first host-side port for host-initiated connections. */
export const MUXER_FIRST_HOST_PORT = 2 ** 30;
/** Connections per vsock device that both VMMs accept. */
export const MUXER_MAX_CONNECTIONS = 1023;

export type GuestListener = { path: string } | { host: string; port: number };

export interface MuxerOptions {
  /** The VM's vsock Unix socket (`--vsock cid=N,socket=PATH`). */
  socketPath: string;
  /** Where the guest listens, per guest vsock port. Unmapped ports refuse like a guest RST. */
  guestPorts: Record<number, GuestListener>;
  handshakeTimeoutMs?: number;
  maxConnections?: number;
}

export interface MuxerStats {
  /** Connections accepted on the socket (also the dropped ones). */
  accepted: number;
  /** Handshakes answered with `OK`. */
  established: number;
  /** Closed without `OK`: malformed, too long, EOF, timeout, nothing listening. */
  refused: number;
  /** Dropped at once because the device had `maxConnections` open. */
  dropped: number;
  /** Open connections right now. */
  active: number;
  /** Each `CONNECT` line as received (for assertions on what the host sent). */
  commands: string[];
}

export interface HybridVsockMuxer {
  readonly socketPath: string;
  readonly stats: MuxerStats;
  /** Remap (or unmap with `undefined`) a guest port, e.g. to simulate kestrel going away. */
  setGuestPort(port: number, listener: GuestListener | undefined): void;
  /** A connection "the guest" opens to (CID 2, port): the VMM dials `<socket>_<port>`. */
  dialFromGuest(port: number): Promise<Socket>;
  close(): Promise<void>;
}

export async function startHybridVsockMuxer(opts: MuxerOptions): Promise<HybridVsockMuxer> {
  const handshakeTimeoutMs = opts.handshakeTimeoutMs ?? HANDSHAKE_TIMEOUT_MS;
  const maxConnections = opts.maxConnections ?? MUXER_MAX_CONNECTIONS;
  const guestPorts = new Map<number, GuestListener>(Object.entries(opts.guestPorts).map(([p, l]) => [Number(p), l]));
  const stats: MuxerStats = { accepted: 0, established: 0, refused: 0, dropped: 0, active: 0, commands: [] };
  const open = new Set<Socket>();
  let nextHostPort = MUXER_FIRST_HOST_PORT;

  const onConnection = (host: Socket): void => {
    stats.accepted++;
    if (open.size >= maxConnections) {
      stats.dropped++;
      host.destroy();
      return;
    }
    open.add(host);
    stats.active = open.size;
    host.once('close', () => {
      open.delete(host);
      stats.active = open.size;
    });
    host.on('error', () => host.destroy());
    const refuse = (): void => {
      stats.refused++;
      clearTimeout(timer);
      host.destroy();
    };
    const timer = setTimeout(refuse, handshakeTimeoutMs);
    const reader = new HandshakeLineReader(HANDSHAKE_MAX_BYTES);
    const onEnd = (): void => refuse();
    const onData = (chunk: Buffer): void => {
      const r = reader.push(chunk);
      if (r.state === 'need-more') return;
      host.off('data', onData);
      host.off('end', onEnd);
      host.pause();
      if (r.state === 'too-long') {
        refuse();
        return;
      }
      let port: number;
      try {
        port = parseConnectLine(r.line);
      } catch {
        refuse();
        return;
      }
      stats.commands.push(r.line);
      const listener = guestPorts.get(port);
      if (listener === undefined) {
        refuse();
        return;
      }
      const guest = 'path' in listener ? connect({ path: listener.path }) : connect({ host: listener.host, port: listener.port, noDelay: true });
      guest.once('error', refuse);
      guest.once('connect', () => {
        clearTimeout(timer);
        guest.off('error', refuse);
        if (host.destroyed) {
          guest.destroy();
          return;
        }
        stats.established++;
        host.write(`OK ${nextHostPort++}\n`);
        if (r.rest.length > 0) guest.write(r.rest);
        guest.on('error', () => host.destroy());
        host.on('error', () => guest.destroy());
        guest.once('close', () => host.destroy());
        host.once('close', () => guest.destroy());
        host.pipe(guest);
        guest.pipe(host);
        host.resume();
      });
    };
    host.on('data', onData);
    host.once('end', onEnd);
  };

  const server: Server = createServer({ pauseOnConnect: false }, onConnection);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.socketPath, () => {
      server.off('error', reject);
      resolve();
    });
  });

  return {
    socketPath: opts.socketPath,
    stats,
    setGuestPort(port, listener) {
      if (listener === undefined) guestPorts.delete(port);
      else guestPorts.set(port, listener);
    },
    dialFromGuest(port) {
      return new Promise((resolve, reject) => {
        const sock = connect({ path: guestInitiatedSocketPath(opts.socketPath, port) });
        sock.once('connect', () => {
          sock.off('error', reject);
          resolve(sock);
        });
        sock.once('error', reject);
      });
    },
    close() {
      for (const s of open) s.destroy();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

/**
 * Dialling an upstream for a CONNECT tunnel: the addresses the address policy checked, in order
 * (IPv4 first), until one answers, within one overall budget. Nothing else is ever dialled, and
 * no name is resolved here (the DNS-rebinding hole is a second lookup).
 *
 * The socket reads through `UpstreamReader` (relay.ts) from its first byte, with a large stream
 * buffer: the tunnel's bulk direction is upstream → VM.
 */

import { isIP, type NetConnectOpts, connect as netConnect, type Socket } from 'node:net';
import { VolantError } from '../../shared/errors.js';
import type { UpstreamReader } from './relay.js';

/**
 * Stream buffer per socket and direction. With Node's default (16 KiB) every 64 KiB read
 * overfills the writer, so each read pauses and resumes the reader (two epoll changes per read);
 * a larger mark keeps bulk tunnels streaming while still bounding memory per connection.
 */
export const TUNNEL_BUFFER_BYTES = 512 * 1024;

export const bracket = (a: string): string => (isIP(a) === 6 ? `[${a}]` : a);

/** Dials the checked addresses in order until one answers; `onTry` names each address tried. */
export function dialFirst(addresses: readonly string[], port: number, timeoutMs: number, reader: UpstreamReader, onTry: (a: string) => void): Promise<Socket> {
  const deadline = performance.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    let i = 0;
    let lastError: Error | undefined;
    const next = (): void => {
      const left = deadline - performance.now();
      const address = addresses[i++];
      if (address === undefined || left <= 0) {
        reject(
          left <= 0
            ? new VolantError('TIMEOUT', `connecting to port ${port} took longer than ${timeoutMs} ms`)
            : new VolantError('UPSTREAM_UNREACHABLE', `cannot connect to ${addresses.join(', ')} port ${port}: ${lastError?.message ?? 'no address'}`),
        );
        return;
      }
      onTry(address);
      // highWaterMark reaches the Duplex constructor; @types/node omits it from the connect options.
      const s = netConnect({ host: address, port, family: isIP(address), highWaterMark: TUNNEL_BUFFER_BYTES, allowHalfOpen: true, onread: reader.onread } as NetConnectOpts);
      reader.attach(s);
      const timer = setTimeout(() => {
        s.destroy();
        lastError = new Error('timeout');
        reject(new VolantError('TIMEOUT', `connecting to ${bracket(address)}:${port} took longer than ${timeoutMs} ms`));
      }, left);
      s.once('connect', () => {
        clearTimeout(timer);
        s.removeAllListeners('error');
        s.setNoDelay(true);
        resolve(s);
      });
      s.once('error', (e) => {
        clearTimeout(timer);
        lastError = e;
        s.destroy();
        next();
      });
    };
    next();
  });
}

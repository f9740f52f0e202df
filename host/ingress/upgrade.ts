/**
 * Upgrade requests (WebSocket) through the proxy: a fresh connection to kestrel per upgrade
 * (upgraded streams are long-lived and never return to a pool), the request head rewritten
 * like any proxied request (guest path, hop-by-hop hygiene, forwarding headers, but `Upgrade`
 * and `Connection: upgrade` kept), the bytes the client already sent after the head, then the
 * two sockets piped both ways. The guest's answer (101 or a refusal) goes back byte for byte.
 *
 * What must hold: either side closing or failing tears down the other; a dial failure or a
 * guest that says nothing within the header timeout is a JSON 502/504 on the client socket.
 */

import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { VolantError } from '../../shared/errors.js';
import { type IngressTransport, dialAgent } from './dialer.js';
import { sendErrorOnSocket, upstreamFailure } from './error-response.js';

export interface UpgradeLimits {
  connectTimeoutMs: number;
  headersTimeoutMs: number;
}

/** The HTTP/1.1 request head for the guest; header values were validated by Node's parser. */
export function requestHead(method: string, path: string, headers: readonly string[]): string {
  let head = `${method} ${path} HTTP/1.1\r\n`;
  for (let i = 0; i < headers.length; i += 2) head += `${headers[i]}: ${headers[i + 1]}\r\n`;
  return `${head}\r\n`;
}

export function tunnelUpgrade(
  client: Duplex,
  clientHead: Buffer,
  transport: IngressTransport,
  head: string,
  requestId: string,
  where: string,
  limits: UpgradeLimits,
): void {
  let upstream: Socket | null = null;
  let answered = false;
  let headersTimer: NodeJS.Timeout | undefined;
  const fail = (err: VolantError): void => {
    clearTimeout(headersTimer);
    upstream?.destroy();
    if (answered) client.destroy();
    else sendErrorOnSocket(client, err, requestId);
  };
  const onClientGone = (): void => {
    clearTimeout(headersTimer);
    upstream?.destroy();
  };
  client.once('close', onClientGone);
  client.on('error', onClientGone);
  dialAgent(transport, limits.connectTimeoutMs).then(
    (sock) => {
      if (client.destroyed) {
        sock.destroy();
        return;
      }
      upstream = sock;
      headersTimer = setTimeout(
        () => fail(new VolantError('TIMEOUT', `${where}: no answer to the upgrade request within ${limits.headersTimeoutMs} ms`)),
        limits.headersTimeoutMs,
      );
      sock.once('data', () => {
        answered = true;
        clearTimeout(headersTimer);
      });
      sock.on('error', (err) => fail(upstreamFailure(err, where)));
      sock.once('close', () => {
        if (answered) client.end();
        else fail(new VolantError('UPSTREAM_UNREACHABLE', `${where}: the guest closed the connection before answering the upgrade`));
      });
      sock.write(head);
      if (clientHead.length > 0) sock.write(clientHead);
      sock.pipe(client);
      client.pipe(sock);
      sock.resume();
    },
    (err: unknown) => fail(upstreamFailure(err, where)),
  );
}

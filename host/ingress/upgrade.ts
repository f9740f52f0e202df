/**
 * Upgrade requests (WebSocket) through the proxy: a fresh connection to kestrel per upgrade
 * (upgraded streams are long-lived and never return to a pool), the request head rewritten like
 * any proxied request (guest path, hop-by-hop hygiene, forwarding headers, but `Upgrade` and
 * `Connection: upgrade` kept), sent by Node's HTTP client so that the guest's answer is parsed
 * and framed like any response.
 *
 * What must hold (upgrade smuggling):
 *  - nothing of the client's reaches the guest before the guest has answered `101`: the bytes the
 *    client sent after its head, and everything after, stay with us until then;
 *  - any other answer is relayed as a normal response (head checked like every response, body
 *    framed by our parser, `Connection: close`) and the client connection is closed, so a second
 *    request on it can never reach the guest unchecked;
 *  - after `101`, the two sockets are piped both ways; either side closing or failing tears down
 *    the other;
 *  - a dial failure, a guest that says nothing within the header timeout, or a head that breaks
 *    shared/http-response-head.ts is a JSON 502/504 on the client socket.
 */

import { type IncomingMessage, request as httpRequest, STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { VolantError } from '../../shared/errors.js';
import { ERROR_LINGER_MS, sendErrorOnSocket } from '../../shared/http-error-response.js';
import { ResponseHeadCheck } from '../../shared/http-response-head.js';
import { dialAgent, type IngressTransport, ingressUpstreamPort } from './dialer.js';
import type { Logger } from '../log/logger.js';
import { badResponseHead, logFailure, upstreamFailure } from './failures.js';
import { RESPONSE_HEAD_SETTLE_MS } from './forward.js';
import { downstreamResponseHeaders } from './headers.js';

export interface UpgradeLimits {
  connectTimeoutMs: number;
  headersTimeoutMs: number;
}

export interface UpgradeRequest {
  method: string;
  /** Origin-form path and query for the guest. */
  path: string;
  /** Flat `[name, value, …]` from `upstreamRequestHead` (with `Connection: upgrade`, `Upgrade`). */
  headers: readonly string[];
  requestId: string;
  /** Who answers, for error messages (`VM web agent via …`). */
  where: string;
  vmName: string;
}

export function tunnelUpgrade(client: Duplex, clientHead: Buffer, transport: IngressTransport, up: UpgradeRequest, limits: UpgradeLimits, log?: Logger): void {
  const errorHeaders = { 'x-request-id': up.requestId };
  let upstream: Socket | null = null;
  let answered = false;
  let headersTimer: NodeJS.Timeout | undefined;
  const fail = (err: VolantError): void => {
    clearTimeout(headersTimer);
    upstream?.destroy();
    logFailure(log, err, { reqId: up.requestId, vm: up.vmName });
    if (answered) client.destroy();
    else {
      answered = true;
      sendErrorOnSocket(client, err, { headers: errorHeaders });
    }
  };
  const onClientGone = (): void => {
    clearTimeout(headersTimer);
    upstream?.destroy();
  };
  client.once('close', onClientGone);
  client.on('error', onClientGone);
  dialAgent(transport, limits.connectTimeoutMs, undefined, ingressUpstreamPort(transport, up.path)).then(
    (sock) => {
      if (client.destroyed) {
        sock.destroy();
        return;
      }
      upstream = sock;
      sock.on('error', () => undefined);
      headersTimer = setTimeout(
        () => fail(new VolantError('TIMEOUT', `${up.where}: no answer to the upgrade request within ${limits.headersTimeoutMs} ms`)),
        limits.headersTimeoutMs,
      );
      const req = httpRequest({ createConnection: () => sock, method: up.method, path: up.path, headers: [...up.headers], setHost: false });
      // The dialer hands the socket over paused; the client's parser is attached when 'socket' fires.
      req.once('socket', () => sock.resume());
      req.on('error', (err) => fail(upstreamFailure(err, up.where)));
      req.on('upgrade', (res: IncomingMessage, upSocket: Socket, upHead: Buffer) => {
        clearTimeout(headersTimer);
        const head = checkedHead(res, up);
        if (head instanceof VolantError) {
          fail(head);
          return;
        }
        if (client.destroyed) {
          upSocket.destroy();
          return;
        }
        answered = true;
        upstream = upSocket;
        upSocket.on('error', () => client.destroy());
        client.on('error', () => upSocket.destroy());
        upSocket.once('close', () => client.end());
        client.once('close', () => upSocket.destroy());
        client.write(head);
        if (upHead.length > 0) client.write(upHead);
        // Only now may the client's bytes flow to the guest.
        if (clientHead.length > 0) upSocket.write(clientHead);
        upSocket.pipe(client);
        client.pipe(upSocket);
        upSocket.resume();
      });
      req.on('response', (res: IncomingMessage) => {
        clearTimeout(headersTimer);
        const head = checkedHead(res, up);
        if (head instanceof VolantError) {
          fail(head);
          return;
        }
        answered = true;
        sock.setTimeout(limits.headersTimeoutMs, () => sock.destroy(new VolantError('TIMEOUT', `${up.where}: the answer to the upgrade request stalled`)));
        relayRefusal(client, res, head, () => upstream?.destroy(), (e) => sendErrorOnSocket(client, e, { headers: errorHeaders }));
      });
      req.end();
    },
    (err: unknown) => fail(upstreamFailure(err, up.where)),
  );
}

/** The guest's head, checked, as the bytes the client gets (hop-by-hop removed), or the error. */
function checkedHead(res: IncomingMessage, up: UpgradeRequest): string | VolantError {
  const status = res.statusCode ?? 0;
  const reason = res.statusMessage ?? '';
  const check = new ResponseHeadCheck();
  const headers = downstreamResponseHeaders(res.rawHeaders, up.requestId, check);
  const problem = check.finish(status, reason);
  if (headers === undefined || problem !== undefined) return badResponseHead(up.where, problem ?? 'invalid header');
  let text = `HTTP/1.1 ${status} ${reason === '' ? (STATUS_CODES[status] ?? '') : reason}\r\n`;
  if (status === 101) {
    // The point of a 101: it names the protocol the connection now speaks.
    const upgrade = headerValue(res.rawHeaders, 'upgrade');
    if (upgrade === undefined) return badResponseHead(up.where, '101 without an Upgrade header');
    text += `connection: upgrade\r\nupgrade: ${upgrade}\r\n`;
  } else {
    text += 'connection: close\r\n';
  }
  // A chunked refusal leaves de-chunked by our parser and close-delimited (Transfer-Encoding is
  // hop-by-hop and gone; the head check guarantees it came without Content-Length).
  for (let i = 0; i < headers.length; i += 2) text += `${headers[i]}: ${headers[i + 1]}\r\n`;
  return `${text}\r\n`;
}

function headerValue(raw: readonly string[], lower: string): string | undefined {
  for (let i = 0; i < raw.length; i += 2) if (raw[i]!.toLowerCase() === lower) return raw[i + 1];
  return undefined;
}

/**
 * The guest declined the upgrade: its answer goes to the client as a normal response, body and
 * all, and the client connection ends with it. The client's own bytes are never read. As on the
 * request path, the head waits for the first body bytes, the end, or RESPONSE_HEAD_SETTLE_MS, so
 * a body the parser refuses at once is still a 502.
 */
function relayRefusal(client: Duplex, res: IncomingMessage, head: string, done: () => void, fail: (e: VolantError) => void): void {
  let headOut = false;
  const sendHead = (): void => {
    if (headOut) return;
    headOut = true;
    clearTimeout(settle);
    client.write(head);
  };
  const settle = setTimeout(sendHead, RESPONSE_HEAD_SETTLE_MS);
  res.on('data', (chunk: Buffer) => {
    sendHead();
    if (!client.write(chunk)) {
      res.pause();
      client.once('drain', () => res.resume());
    }
  });
  res.once('end', () => {
    sendHead();
    done();
    client.end();
    client.resume();
    setTimeout(() => client.destroy(), ERROR_LINGER_MS).unref();
  });
  res.once('error', (err) => {
    clearTimeout(settle);
    done();
    if (headOut) client.destroy();
    else fail(new VolantError('PROTOCOL_ERROR', `the guest's answer to the upgrade request broke off: ${err.message}`));
  });
  client.once('close', () => {
    clearTimeout(settle);
    res.destroy();
  });
}

/**
 * A hostile or scripted "guest" for proxy tests: a raw TCP server that stands where kestrel
 * listens (the ingress's `tcp` transport), reads one request head per connection and answers
 * with exactly the bytes a script gives for its path, so a test can send any malformed or
 * surprising response no real HTTP server would produce. It counts accepted connections and
 * records every byte each connection received (and whether it arrived before or after the
 * guest's answer), so tests can assert that nothing was dialled or that no client byte leaked.
 *
 * A script entry is the raw answer (string, latin1), written and followed by the guest's FIN, or
 * a function that takes the socket over. Unknown paths get `404` with a short body.
 */

import { createServer, type Server, type Socket } from 'node:net';

export interface GuestConnection {
  /** Every byte received, in order. */
  received: Buffer;
  /** Bytes received after the guest wrote its answer. */
  afterAnswer: Buffer;
  /** The first request head (up to and including the blank line), latin1. */
  head: string;
  answered: boolean;
}

export type GuestScript = (socket: Socket, head: string, conn: GuestConnection) => void;

export interface ScriptedGuest {
  port: number;
  connections: GuestConnection[];
  /** Sets what a path (the request target as sent, without query) is answered with. */
  script(path: string, answer: string | Buffer | GuestScript): void;
  close(): Promise<void>;
}

export async function startScriptedGuest(): Promise<ScriptedGuest> {
  const scripts = new Map<string, string | Buffer | GuestScript>();
  const connections: GuestConnection[] = [];
  const sockets = new Set<Socket>();
  const server: Server = createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => undefined);
    const conn: GuestConnection = { received: Buffer.alloc(0), afterAnswer: Buffer.alloc(0), head: '', answered: false };
    connections.push(conn);
    s.on('data', (d: Buffer) => {
      conn.received = Buffer.concat([conn.received, d]);
      if (conn.answered) {
        conn.afterAnswer = Buffer.concat([conn.afterAnswer, d]);
        return;
      }
      if (conn.head !== '') return;
      const end = conn.received.indexOf('\r\n\r\n');
      if (end < 0) return;
      conn.head = conn.received.subarray(0, end + 4).toString('latin1');
      const target = conn.head.split(' ')[1] ?? '/';
      const path = target.split('?')[0]!;
      const answer = scripts.get(path) ?? 'HTTP/1.1 404 Not Found\r\ncontent-length: 9\r\n\r\nnot found';
      conn.answered = true;
      if (typeof answer === 'function') answer(s, conn.head, conn);
      else s.end(typeof answer === 'string' ? Buffer.from(answer, 'latin1') : answer);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as { port: number }).port,
    connections,
    script: (path, answer) => {
      scripts.set(path, answer);
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

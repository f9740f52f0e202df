/**
 * Many client connections held open through a proxy: `connections` keep-alive connections, each
 * sending one request, reading its whole answer, waiting `gapMs`, and again, until `durationS`
 * has passed. Every failure counts (refused or reset connection, a non-2xx status, a connection
 * closed by the server, no answer within `timeoutMs`). Connections are opened in batches, so the
 * accept queue is not the thing measured.
 */

import { connect, type Socket } from 'node:net';

export interface HoldOptions {
  port: number;
  path: string;
  headers?: readonly string[];
  connections: number;
  durationS: number;
  gapMs: number;
  timeoutMs: number;
}

export interface HoldResult {
  connections: number;
  requests: number;
  errors: number;
  /** What the first few errors were. */
  samples: string[];
}

export async function holdConnections(o: HoldOptions): Promise<HoldResult> {
  const request = `GET ${o.path} HTTP/1.1\r\nHost: bench\r\n${(o.headers ?? []).map((h) => `${h}\r\n`).join('')}\r\n`;
  const result: HoldResult = { connections: 0, requests: 0, errors: 0, samples: [] };
  const fail = (why: string): void => {
    result.errors++;
    if (result.samples.length < 5) result.samples.push(why);
  };
  const endAt = Date.now() + o.durationS * 1000;
  const one = (): Promise<void> =>
    new Promise((resolve) => {
      let buf = '';
      let timer: NodeJS.Timeout | undefined;
      let done = false;
      const finish = (s: Socket, why?: string): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        if (why !== undefined) fail(why);
        s.destroy();
        resolve();
      };
      const s = connect({ host: '127.0.0.1', port: o.port });
      const send = (): void => {
        buf = '';
        s.write(request);
        timer = setTimeout(() => finish(s, 'no answer in time'), o.timeoutMs);
      };
      s.on('connect', () => {
        result.connections++;
        send();
      });
      s.on('data', (d: Buffer) => {
        buf += d.toString('latin1');
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const length = Number(/\r\ncontent-length: (\d+)/i.exec(buf.slice(0, end + 2))?.[1] ?? Number.NaN);
        if (!(buf.length >= end + 4 + length)) return;
        clearTimeout(timer);
        result.requests++;
        if (!/^HTTP\/1\.1 2\d\d /.test(buf)) {
          finish(s, buf.slice(0, buf.indexOf('\r\n')));
          return;
        }
        if (Date.now() >= endAt) finish(s);
        else setTimeout(send, o.gapMs);
      });
      s.on('error', (e: NodeJS.ErrnoException) => finish(s, e.code ?? e.message));
      s.on('close', () => finish(s, 'closed by the server'));
    });
  const all: Promise<void>[] = [];
  const BATCH = 100;
  for (let i = 0; i < o.connections; i += BATCH) {
    for (let j = i; j < Math.min(o.connections, i + BATCH); j++) all.push(one());
    await new Promise((r) => setTimeout(r, 20));
  }
  await Promise.all(all);
  return result;
}

/**
 * A real workload for kestrel's integration tests: an HTTP server (PORT from the environment)
 * with the behaviours the agent must carry, plus a WebSocket echo.
 *
 *   GET  /healthz        200 "ok"
 *   POST /echo           streams the request body straight back (full duplex, no buffering)
 *   POST /sink           reads the body, answers {"bytes", "sha256"}
 *   GET  /bytes?n=N      streams N bytes of a fixed pattern (see patternChunk)
 *   GET  /headers        the request headers as JSON
 *   GET  /env?name=X     the value of environment variable X
 *   GET  /log?msg=M      writes M to stdout and `err:M` to stderr
 *   GET  /crash          exits with code 3 (after answering)
 *   GET  /slow           answers headers, then never finishes the body
 *   WS   /ws             echoes every message
 */

import { createHash } from 'node:crypto';
import { createServer } from 'node:http';
import { WebSocketServer } from 'ws';

export const PATTERN_CHUNK_BYTES = 64 * 1024;

/** The fixed 64 KiB block /bytes repeats; tests hash the same blocks to check integrity. */
export function patternChunk(): Buffer {
  const b = Buffer.alloc(PATTERN_CHUNK_BYTES);
  for (let i = 0; i < b.length; i++) b[i] = (i * 31 + 7) & 0xff;
  return b;
}

function main(): void {
  const port = Number(process.env.PORT);
  if (!Number.isInteger(port) || port <= 0) throw new Error('workload-server: set PORT');
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://workload');
    switch (`${req.method} ${url.pathname}`) {
      case 'GET /healthz':
        res.end('ok');
        return;
      case 'POST /echo':
        res.writeHead(200, { 'content-type': 'application/octet-stream' });
        req.pipe(res);
        return;
      case 'POST /sink': {
        const hash = createHash('sha256');
        let bytes = 0;
        req.on('data', (c: Buffer) => {
          bytes += c.length;
          hash.update(c);
        });
        req.on('end', () => res.end(JSON.stringify({ bytes, sha256: hash.digest('hex') })));
        return;
      }
      case 'GET /bytes': {
        let left = Number(url.searchParams.get('n') ?? 0);
        const chunk = patternChunk();
        res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': left });
        const pump = (): void => {
          while (left > 0) {
            const piece = left >= chunk.length ? chunk : chunk.subarray(0, left);
            left -= piece.length;
            if (!res.write(piece)) {
              res.once('drain', pump);
              return;
            }
          }
          res.end();
        };
        pump();
        return;
      }
      case 'GET /headers':
        res.setHeader('content-type', 'application/json');
        res.setHeader('connection', 'close, x-hop-response');
        res.setHeader('x-hop-response', 'must not pass');
        res.end(JSON.stringify(req.headers));
        return;
      case 'GET /env':
        res.end(process.env[url.searchParams.get('name') ?? ''] ?? '');
        return;
      case 'GET /log': {
        const msg = url.searchParams.get('msg') ?? '';
        process.stdout.write(`${msg}\n`);
        process.stderr.write(`err:${msg}\n`);
        res.end('logged');
        return;
      }
      case 'GET /crash':
        res.end('bye', () => process.exit(3));
        return;
      case 'GET /slow':
        res.writeHead(200);
        res.write('partial');
        return;
      default:
        res.writeHead(404);
        res.end('not found');
    }
  });
  const wss = new WebSocketServer({ server, path: '/ws' });
  wss.on('connection', (ws) => ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary })));
  server.listen(port, '127.0.0.1', () => process.stdout.write(`workload listening on ${port}\n`));
}

if (process.argv[1] && import.meta.url.endsWith(process.argv[1].split('/').pop()!)) main();

/**
 * The example workload: a Node HTTP server with no dependencies, so it runs on the Node the image
 * carries. Endpoints (used by the demo and the end-to-end tests):
 *   GET /healthz        → {"ok":true}
 *   GET /hello?...      → {"message":"hello","path":...,"query":{...}}
 *   GET /bytes?n=N      → N bytes streamed; byte i is (i * 31 + 7) mod 256, so a client can verify;
 *                         with &cut=1 the connection is destroyed after them instead of ending
 *                         (a workload that dies mid-response)
 *   GET /fetch?url=URL  → fetches URL through HTTP_PROXY / HTTPS_PROXY (absolute-form request for
 *                         http://, CONNECT tunnel for https://) and answers {status, body}
 *   WS  /ws             → a WebSocket (RFC 6455) that echoes every text and binary frame
 */

import { createHash } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import tls from 'node:tls';

const PORT = Number(process.env.PORT ?? 3000);
const MAX_BYTES = 1024 * 1024 * 1024;
const BYTES_CHUNK = 64 * 1024;
const MAX_FETCH_BODY = 1024 * 1024;
const FETCH_TIMEOUT_MS = 15_000;

export function patternByte(i) {
  return (i * 31 + 7) & 0xff;
}

function json(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

/** The pattern repeats every 256 bytes and BYTES_CHUNK is a multiple of 256: every chunk starts alike. */
const PATTERN_CHUNK = Buffer.from(Array.from({ length: BYTES_CHUNK }, (_, i) => patternByte(i)));

function streamBytes(res, n, cut) {
  // A cut stream announces more than it sends, so a client cannot mistake it for a whole one.
  res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': cut ? n + 1 : n });
  let sent = 0;
  const pump = () => {
    while (sent < n) {
      const len = Math.min(BYTES_CHUNK, n - sent);
      sent += len;
      if (!res.write(len === BYTES_CHUNK ? PATTERN_CHUNK : PATTERN_CHUNK.subarray(0, len))) return res.once('drain', pump);
    }
    if (cut) res.socket?.destroy();
    else res.end();
  };
  pump();
}

const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
const WS_MAX_FRAME = 16 * 1024 * 1024;

/** One WebSocket frame (unmasked, as a server sends it). */
function wsFrame(opcode, payload) {
  const len = payload.length;
  const head = len < 126 ? Buffer.from([0x80 | opcode, len]) : len < 65536 ? Buffer.from([0x80 | opcode, 126, len >> 8, len & 255]) : Buffer.alloc(10);
  if (len >= 65536) {
    head[0] = 0x80 | opcode;
    head[1] = 127;
    head.writeBigUInt64BE(BigInt(len), 2);
  }
  return Buffer.concat([head, payload]);
}

/** Echoes text and binary frames, answers ping with pong and close with close. */
function websocketEcho(req, socket) {
  const key = req.headers['sec-websocket-key'];
  if (req.url !== '/ws' || typeof key !== 'string') return socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n');
  const accept = createHash('sha1').update(key + WS_GUID).digest('base64');
  socket.write(`HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: ${accept}\r\n\r\n`);
  let buf = Buffer.alloc(0);
  socket.on('error', () => socket.destroy());
  socket.on('data', (chunk) => {
    buf = Buffer.concat([buf, chunk]);
    for (;;) {
      if (buf.length < 2) return;
      const opcode = buf[0] & 0x0f;
      let len = buf[1] & 0x7f;
      let at = 2;
      if (len === 126) {
        if (buf.length < 4) return;
        len = buf.readUInt16BE(2);
        at = 4;
      } else if (len === 127) {
        if (buf.length < 10) return;
        len = Number(buf.readBigUInt64BE(2));
        at = 10;
      }
      if (len > WS_MAX_FRAME) return socket.destroy();
      const masked = (buf[1] & 0x80) !== 0;
      const need = at + (masked ? 4 : 0) + len;
      if (buf.length < need) return;
      const payload = Buffer.from(buf.subarray(need - len, need));
      if (masked) for (let i = 0; i < len; i++) payload[i] ^= buf[at + (i & 3)];
      buf = buf.subarray(need);
      if (opcode === 0x8) return socket.end(wsFrame(0x8, payload));
      if (opcode === 0x9) socket.write(wsFrame(0xa, payload));
      else if (opcode <= 0x2) socket.write(wsFrame(opcode, payload));
    }
  });
}

function proxyFor(url) {
  const raw = url.protocol === 'https:' ? (process.env.HTTPS_PROXY ?? process.env.https_proxy) : (process.env.HTTP_PROXY ?? process.env.http_proxy);
  return raw ? new URL(raw) : undefined;
}

/** A socket to url's origin: through a CONNECT tunnel when a proxy is set, else direct. */
function tunnel(proxy, url) {
  return new Promise((resolve, reject) => {
    const port = url.port || (url.protocol === 'https:' ? 443 : 80);
    const req = http.request({ host: proxy.hostname, port: proxy.port || 80, method: 'CONNECT', path: `${url.hostname}:${port}`, headers: { host: `${url.hostname}:${port}` } });
    req.once('connect', (res, socket) => {
      if (res.statusCode !== 200) {
        socket.destroy();
        reject(Object.assign(new Error(`proxy refused CONNECT: ${res.statusCode}`), { status: res.statusCode }));
      } else resolve(socket);
    });
    req.once('error', reject);
    req.end();
  });
}

async function fetchVia(target) {
  const url = new URL(target);
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw Object.assign(new Error('only http and https URLs'), { status: 400 });
  const proxy = proxyFor(url);
  let options;
  if (url.protocol === 'http:' && proxy) {
    // Absolute-form request to the proxy (RFC 9112 §3.2.2).
    options = { host: proxy.hostname, port: proxy.port || 80, path: url.href, headers: { host: url.host } };
  } else if (url.protocol === 'https:' && proxy) {
    const socket = await tunnel(proxy, url);
    options = { path: url.pathname + url.search, headers: { host: url.host }, createConnection: () => tls.connect({ socket, servername: url.hostname }) };
  } else {
    options = { host: url.hostname, port: url.port || undefined, path: url.pathname + url.search };
  }
  const mod = url.protocol === 'https:' ? https : http;
  return new Promise((resolve, reject) => {
    const req = mod.request({ ...options, method: 'GET', agent: false, timeout: FETCH_TIMEOUT_MS }, (res) => {
      const chunks = [];
      let size = 0;
      res.on('data', (c) => {
        size += c.length;
        if (size <= MAX_FETCH_BODY) chunks.push(c);
      });
      res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString('utf8'), truncated: size > MAX_FETCH_BODY }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(Object.assign(new Error('upstream timed out'), { status: 504 })));
    req.on('error', reject);
    req.end();
  });
}

const server = http.createServer(async (req, res) => {
  const url = new URL(req.url ?? '/', 'http://workload');
  // One line per request (health probes aside): the operator sees it in `volar vms logs`.
  if (url.pathname !== '/healthz') console.log(`${req.method} ${req.url}`);
  if (req.method !== 'GET') return json(res, 405, { error: 'only GET' });
  switch (url.pathname) {
    case '/healthz':
      return json(res, 200, { ok: true });
    case '/hello':
      return json(res, 200, { message: 'hello', path: url.pathname, query: Object.fromEntries(url.searchParams) });
    case '/headers':
      // What a workload sees of a request behind Volant's ingress (Host, X-Forwarded-*, X-Request-Id).
      return json(res, 200, req.headers);
    case '/bytes': {
      const n = Number(url.searchParams.get('n') ?? '0');
      if (!Number.isSafeInteger(n) || n < 0 || n > MAX_BYTES) return json(res, 400, { error: `n must be an integer in 0..${MAX_BYTES}` });
      return streamBytes(res, n, url.searchParams.get('cut') === '1');
    }
    case '/fetch': {
      const target = url.searchParams.get('url');
      if (!target) return json(res, 400, { error: 'url query parameter required' });
      try {
        return json(res, 200, await fetchVia(target));
      } catch (e) {
        return json(res, e.status ?? 502, { error: e.message, status: e.status ?? 502 });
      }
    }
    default:
      return json(res, 404, { error: 'not found', path: url.pathname });
  }
});

server.on('upgrade', websocketEcho);
server.listen(PORT, process.env.HOST ?? '0.0.0.0', () => console.log(`hello: listening on :${server.address().port}`));
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => server.close(() => process.exit(0)));

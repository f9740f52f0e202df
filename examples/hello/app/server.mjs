/**
 * The example workload: a Node HTTP server with no dependencies, so it runs on the Node the image
 * carries. Endpoints (used by the demo and the end-to-end tests):
 *   GET /healthz        → {"ok":true}
 *   GET /hello?...      → {"message":"hello","path":...,"query":{...}}
 *   GET /bytes?n=N      → N bytes streamed; byte i is (i * 31 + 7) mod 256, so a client can verify
 *   GET /fetch?url=URL  → fetches URL through HTTP_PROXY / HTTPS_PROXY (absolute-form request for
 *                         http://, CONNECT tunnel for https://) and answers {status, body}
 */

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

function streamBytes(res, n) {
  res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': n });
  let sent = 0;
  const pump = () => {
    while (sent < n) {
      const len = Math.min(BYTES_CHUNK, n - sent);
      const chunk = Buffer.allocUnsafe(len);
      for (let j = 0; j < len; j++) chunk[j] = patternByte(sent + j);
      sent += len;
      if (!res.write(chunk)) return res.once('drain', pump);
    }
    res.end();
  };
  pump();
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
    case '/bytes': {
      const n = Number(url.searchParams.get('n') ?? '0');
      if (!Number.isSafeInteger(n) || n < 0 || n > MAX_BYTES) return json(res, 400, { error: `n must be an integer in 0..${MAX_BYTES}` });
      return streamBytes(res, n);
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

server.listen(PORT, process.env.HOST ?? '0.0.0.0', () => console.log(`hello: listening on :${server.address().port}`));
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => server.close(() => process.exit(0)));

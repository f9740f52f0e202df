// Streaming through the ingress: 100 MB up and 100 MB down through the proxy and the
// hybrid-vsock muxer double, with the proxy in its own process so that its memory can be
// measured (peak RSS), and backpressure checked both ways with a stalled reader.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, request, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { type HybridVsockMuxer, startHybridVsockMuxer } from '../support/hybrid-vsock-muxer.js';

const MB = 1024 * 1024;
const TRANSFER_BYTES = 100 * MB;
const CHUNK_BYTES = 64 * 1024;
/** Peak RSS growth we accept while 100 MB pass through: buffers and JIT, never the body. */
const RSS_GROWTH_LIMIT_BYTES = 48 * MB;
/** How far a writer may get ahead of a stalled reader: socket buffers and stream high-water marks. */
const STALL_SLACK_BYTES = 24 * MB;

const stackModule = fileURLToPath(new URL('../support/ingress-stack.ts', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), `volant-ingress-stream-${process.pid}-`));

/** The proxy process: volantd's API server with the ingress in front (its fast path), in a process of its own. */
const PROXY_PROGRAM = `
import { startIngressStack } from ${JSON.stringify(stackModule)};
const stack = await startIngressStack({ lookup: (vmName) => ({ vmName, transport: { kind: 'vsock', socketPath: process.env.VM_SOCKET } }) });
process.stdout.write('READY ' + stack.port + '\\n');
`;

let proxy: ChildProcess;
let proxyPort = 0;
let workload: Server;
let mux: HybridVsockMuxer;
/** Progress the workload reports, for the stall checks. */
const progress = { uploadReceived: 0, downloadSent: 0 };
let stallUpload: Promise<void> | null = null;

/** Deterministic bytes: chunk i is filled with i mod 251, so a hash proves order and content. */
function chunk(i: number, size: number): Buffer {
  return Buffer.alloc(size, i % 251);
}

function generated(total: number, onChunk?: (sent: number) => void): Readable {
  let sent = 0;
  let i = 0;
  return new Readable({
    read() {
      if (sent >= total) {
        this.push(null);
        return;
      }
      const size = Math.min(CHUNK_BYTES, total - sent);
      sent += size;
      onChunk?.(sent);
      this.push(chunk(i++, size));
    },
  });
}

function expectedSha(total: number): string {
  const h = createHash('sha256');
  for (let sent = 0, i = 0; sent < total; i++) {
    const size = Math.min(CHUNK_BYTES, total - sent);
    h.update(chunk(i, size));
    sent += size;
  }
  return h.digest('hex');
}

/** The proxy process's resident set now and at its peak (VmRSS, VmHWM), in bytes. */
async function memory(): Promise<{ rss: number; maxRss: number }> {
  const status = await readFile(`/proc/${proxy.pid}/status`, 'utf8');
  const kib = (field: string): number => Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(status)?.[1]) * 1024;
  return { rss: kib('VmRSS'), maxRss: kib('VmHWM') };
}

before(async () => {
  workload = createServer((req: IncomingMessage, res) => {
    const url = new URL(req.url!, 'http://guest');
    if (url.pathname === '/upload') {
      const h = createHash('sha256');
      let n = 0;
      progress.uploadReceived = 0;
      req.on('data', (d: Buffer) => {
        h.update(d);
        n += d.length;
        progress.uploadReceived = n;
        if (stallUpload !== null && n >= 10 * MB) {
          req.pause();
          stallUpload.then(() => req.resume());
          stallUpload = null;
        }
      });
      req.on('end', () => res.end(JSON.stringify({ bytes: n, sha256: h.digest('hex') })));
      return;
    }
    if (url.pathname === '/download') {
      progress.downloadSent = 0;
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      generated(Number(url.searchParams.get('bytes')), (sent) => {
        progress.downloadSent = sent;
      }).pipe(res);
      return;
    }
    res.end('ok');
  });
  await new Promise<void>((r) => workload.listen(0, '127.0.0.1', r));
  const socketPath = join(dir, 'vm.sock');
  mux = await startHybridVsockMuxer({ socketPath, guestPorts: { 8080: { host: '127.0.0.1', port: (workload.address() as { port: number }).port } } });
  proxy = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', PROXY_PROGRAM], { env: { ...process.env, VM_SOCKET: socketPath }, stdio: ['ignore', 'pipe', 'inherit'] });
  proxyPort = await new Promise<number>((resolve, reject) => {
    let out = '';
    proxy.stdout!.on('data', (d) => {
      out += d;
      const m = /READY (\d+)/.exec(out);
      if (m) resolve(Number(m[1]));
    });
    proxy.once('exit', (code) => reject(new Error(`proxy exited with ${code}`)));
  });
  // Warm up (JIT, pool) so the baseline RSS is the steady state.
  for (let i = 0; i < 20; i++) await (await fetch(`http://127.0.0.1:${proxyPort}/api/v1/vms/big/proxy/`)).text();
});

after(async () => {
  if (proxy.exitCode === null) proxy.kill('SIGTERM');
  await mux.close();
  workload.closeAllConnections();
  await new Promise((r) => workload.close(r));
  rmSync(dir, { recursive: true, force: true });
});

function upload(total: number): Promise<{ bytes: number; sha256: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port: proxyPort, method: 'POST', path: '/api/v1/vms/big/proxy/upload', headers: { 'content-type': 'application/octet-stream' } }, (res) => {
      let body = '';
      res.on('data', (d) => {
        body += d;
      });
      res.on('end', () => (res.statusCode === 200 ? resolve(JSON.parse(body)) : reject(new Error(`${res.statusCode} ${body}`))));
    });
    req.on('error', reject);
    generated(total, (sent) => {
      clientSent = sent;
    }).pipe(req);
  });
}
let clientSent = 0;

describe('ingress streaming (100 MB, proxy in its own process)', () => {
  it('uploads 100 MB chunked, intact, without holding it in memory; a stalled guest reader stalls the client', async () => {
    const base = await memory();
    let release!: () => void;
    stallUpload = new Promise((r) => {
      release = r;
    });
    const done = upload(TRANSFER_BYTES);
    // While the guest is not reading, the client cannot run far ahead of it.
    while (progress.uploadReceived < 10 * MB) await new Promise((r) => setTimeout(r, 20));
    await new Promise((r) => setTimeout(r, 1000));
    const ahead = clientSent - progress.uploadReceived;
    release();
    const result = await done;
    assert.equal(result.bytes, TRANSFER_BYTES);
    assert.equal(result.sha256, expectedSha(TRANSFER_BYTES));
    assert.ok(ahead < STALL_SLACK_BYTES, `client got ${(ahead / MB).toFixed(1)} MB ahead of a stalled guest`);
    const peak = (await memory()).maxRss;
    assert.ok(peak - base.rss < RSS_GROWTH_LIMIT_BYTES, `proxy peak RSS grew by ${((peak - base.rss) / MB).toFixed(1)} MB`);
  });

  it('downloads 100 MB, intact, without holding it in memory; a stalled client stalls the guest', async () => {
    const base = await memory();
    const { received, sha256, ahead } = await new Promise<{ received: number; sha256: string; ahead: number }>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port: proxyPort, path: `/api/v1/vms/big/proxy/download?bytes=${TRANSFER_BYTES}` }, (res) => {
        const h = createHash('sha256');
        let received = 0;
        let ahead = -1;
        res.on('data', (d: Buffer) => {
          h.update(d);
          received += d.length;
          if (ahead < 0 && received >= 10 * MB) {
            ahead = 0;
            res.pause();
            setTimeout(() => {
              ahead = progress.downloadSent - received;
              res.resume();
            }, 1000);
          }
        });
        res.on('end', () => resolve({ received, sha256: h.digest('hex'), ahead }));
        res.on('error', reject);
      });
      req.on('error', reject);
      req.end();
    });
    assert.equal(received, TRANSFER_BYTES);
    assert.equal(sha256, expectedSha(TRANSFER_BYTES));
    assert.ok(ahead < STALL_SLACK_BYTES, `guest got ${(ahead / MB).toFixed(1)} MB ahead of a stalled client`);
    const peak = (await memory()).maxRss;
    assert.ok(peak - base.rss < RSS_GROWTH_LIMIT_BYTES, `proxy peak RSS grew by ${((peak - base.rss) / MB).toFixed(1)} MB`);
  });
});

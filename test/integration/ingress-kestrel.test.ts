// The whole ingress chain as users hit it, minus the VMM: client → volantd API server with the ingress in front →
// hybrid-vsock muxer (the test double, see its header) → kestrel (guest/main.ts, run outside a
// VM with `--listen unix:...`) → a workload kestrel starts from the plugin manifest.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { WebSocket } from 'ws';
import { eventually } from '../support/eventually.js';
import { type HybridVsockMuxer, startHybridVsockMuxer } from '../support/hybrid-vsock-muxer.js';
import { type IngressStack, startIngressStack } from '../support/ingress-stack.js';

const repo = fileURLToPath(new URL('../..', import.meta.url));
const kestrelMain = join(repo, 'guest', 'main.ts');
const dir = mkdtempSync(join(tmpdir(), `volant-ingress-kestrel-${process.pid}-`));
const MB = 1024 * 1024;
const KESTREL_READY_TIMEOUT_MS = 30_000;

/** The workload: echoes what it was asked, streams bytes, takes uploads, echoes WebSocket frames. */
const WORKLOAD = `
import http from 'node:http';
import { createHash } from 'node:crypto';
import { WebSocketServer } from ${JSON.stringify(join(repo, 'node_modules', 'ws', 'wrapper.mjs'))};
const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://guest');
  if (url.pathname === '/bytes') {
    const n = Number(url.searchParams.get('n'));
    res.writeHead(200, { 'content-length': n });
    let sent = 0;
    const pump = () => { while (sent < n) { const c = Buffer.alloc(Math.min(65536, n - sent), (sent / 65536) % 251); sent += c.length; if (!res.write(c)) return res.once('drain', pump); } res.end(); };
    return pump();
  }
  const h = createHash('sha256'); let bytes = 0;
  req.on('data', (d) => { h.update(d); bytes += d.length; });
  req.on('end', () => res.end(JSON.stringify({ url: req.url, method: req.method, bytes, sha256: h.digest('hex'), headers: req.headers })));
});
new WebSocketServer({ server }).on('connection', (ws) => ws.on('message', (d, b) => ws.send(d, { binary: b })));
server.listen(Number(process.env.PORT), '127.0.0.1');
`;

let kestrel: ChildProcess;
let kestrelLog = '';
let mux: HybridVsockMuxer;
let stack: IngressStack;
let apiPort = 0;

function startKestrel(socketPath: string, manifest: string): Promise<ChildProcess> {
  const child = spawn(process.execPath, ['--import', 'tsx', kestrelMain, '--listen', `unix:${socketPath}`, '--manifest', manifest], { cwd: repo, stdio: ['ignore', 'pipe', 'pipe'] });
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`kestrel not ready within ${KESTREL_READY_TIMEOUT_MS} ms:\n${kestrelLog}`)), KESTREL_READY_TIMEOUT_MS);
    const onData = (d: Buffer): void => {
      kestrelLog += d.toString();
      if (/kestrel: ready/.test(kestrelLog) && /listening on/.test(kestrelLog)) {
        clearTimeout(t);
        resolve(child);
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.once('exit', (code) => reject(new Error(`kestrel exited with ${code}:\n${kestrelLog}`)));
  });
}

before(async () => {
  const workloadPort = 20_000 + ((process.pid * 7) % 20_000);
  writeFileSync(join(dir, 'workload.mjs'), WORKLOAD);
  const manifest = join(dir, 'plugin.json');
  writeFileSync(
    manifest,
    JSON.stringify({
      name: 'web',
      version: '1.0.0',
      workload: { type: 'http', entrypoint: [process.execPath, join(dir, 'workload.mjs')], env: { PORT: String(workloadPort) }, http: { port: workloadPort }, restart: 'always' },
    }),
  );
  const kestrelSock = join(dir, 'kestrel.sock');
  kestrel = await startKestrel(kestrelSock, manifest);
  mux = await startHybridVsockMuxer({ socketPath: join(dir, 'vm.sock'), guestPorts: { 8080: { path: kestrelSock } } });
  stack = await startIngressStack({ lookup: (vmName) => ({ vmName, transport: { kind: 'vsock', socketPath: mux.socketPath } }) });
  apiPort = stack.port;
  // kestrel answers before the workload listens: wait for the workload through the chain.
  await eventually(
    async () => {
      const r = await fetch(`http://127.0.0.1:${apiPort}/api/v1/vms/web/proxy/ready`);
      await r.text();
      return r.status === 200;
    },
    { timeoutMs: KESTREL_READY_TIMEOUT_MS, pollMs: 200, what: 'the workload through kestrel' },
  ).catch((e: Error) => {
    throw new Error(`${e.message}\n${kestrelLog}`);
  });
});

after(async () => {
  await stack?.close();
  await mux?.close();
  if (kestrel?.exitCode === null) kestrel.kill('SIGTERM');
  rmSync(dir, { recursive: true, force: true });
});

const base = (): string => `http://127.0.0.1:${apiPort}/api/v1/vms/web/proxy`;

describe('ingress → muxer → kestrel → workload', () => {
  it('path and query reach the workload unchanged, with forwarding headers', async () => {
    const r = await fetch(`${base()}/hello/a%20b?x=1&y=%2F`, { headers: { 'x-request-id': 'chain-1' } });
    assert.equal(r.status, 200);
    const body = (await r.json()) as { url: string; headers: Record<string, string> };
    assert.equal(body.url, '/hello/a%20b?x=1&y=%2F');
    assert.equal(body.headers['x-request-id'], 'chain-1');
    assert.match(body.headers['x-forwarded-for'] ?? '', /127\.0\.0\.1/);
    assert.ok(mux.stats.commands.includes('CONNECT 8080'));
  });

  it("kestrel's own /healthz answers through the proxy", async () => {
    const r = await fetch(`${base()}/healthz`);
    assert.equal(r.status, 200);
    const h = (await r.json()) as { status: string; workload: { state: string } };
    assert.equal(h.workload.state, 'running');
  });

  it('streams 32 MB down and 32 MB up intact', async () => {
    const n = 32 * MB;
    const down = await fetch(`${base()}/bytes?n=${n}`);
    const buf = Buffer.from(await down.arrayBuffer());
    assert.equal(buf.length, n);
    for (let off = 0; off < n; off += 65536) assert.equal(buf[off], (off / 65536) % 251, `byte ${off}`);
    const up = await fetch(`${base()}/upload`, { method: 'POST', body: buf });
    const echoed = (await up.json()) as { bytes: number; sha256: string };
    assert.equal(echoed.bytes, n);
    assert.equal(echoed.sha256, createHash('sha256').update(buf).digest('hex'));
  });

  it('WebSocket echo', async () => {
    const ws = new WebSocket(`ws://127.0.0.1:${apiPort}/api/v1/vms/web/proxy/ws`);
    await new Promise((resolve, reject) => {
      ws.once('open', resolve);
      ws.once('error', reject);
    });
    const reply = new Promise<string>((resolve) => ws.once('message', (d) => resolve(String(d))));
    ws.send('over the whole chain');
    assert.equal(await reply, 'over the whole chain');
    ws.close();
  });

  it('200 concurrent requests', async () => {
    const rs = await Promise.all(Array.from({ length: 200 }, (_, i) => fetch(`${base()}/c/${i}`).then(async (r) => ({ status: r.status, body: (await r.json()) as { url: string } }))));
    rs.forEach((r, i) => {
      assert.equal(r.status, 200);
      assert.equal(r.body.url, `/c/${i}`);
    });
  });

  it('502 once kestrel is gone (the muxer closes without OK)', async () => {
    kestrel.kill('SIGTERM');
    await new Promise((r) => kestrel.once('exit', r));
    stack.ingress.forget('web');
    const r = await fetch(`${base()}/after`);
    assert.equal(r.status, 502);
    assert.equal(((await r.json()) as { error: { code: string } }).error.code, 'UPSTREAM_UNREACHABLE');
  });
});

/**
 * Volant end to end on a real kernel: volantd runs for real inside a private network namespace
 * (see test/support/e2e-env.ts), boots the example plugin under QEMU (TCG) through its normal API
 * and CLI, and traffic flows host → kestrel → workload and workload → kestrel → egress proxy →
 * an "outside world" namespace with DNS and HTTP servers.
 *
 * Every VM has the vhost-user vsock device (host/vsock/device/, one back-end process per VM), so
 * volantd reaches kestrel over `<run_dir>/vsock.sock` in every mode, and a vsock-mode VM (no NIC
 * at all) reaches its egress listener over `vsock.sock_3128`. The device is also driven directly
 * here: 200 concurrent connections, a client that vanishes mid-stream, a workload that dies
 * mid-response, and kill -9 of the device process.
 *
 * Needs root and qemu-system-x86_64; skips with a message otherwise.
 */

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { cpSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { request } from 'undici';
import { WebSocket } from 'ws';
import { DEFAULT_MEMORY_MB } from '../../host/orchestrator/orchestrator.js';
import { dialHybridVsock } from '../../host/vsock/hybrid.js';
import type { DeviceMetrics } from '../../host/vsock/device/metrics.js';
import { AGENT_RELAY_PORT, AGENT_VSOCK_PORT } from '../../shared/vsock.js';
import { ALLOWED_NAME, DENIED_NAME, type E2eEnv, PRIVATE_NAME, startE2eEnv, WORLD_IP } from '../support/e2e-env.js';
import { eventually } from '../support/eventually.js';
import { REPO_ROOT } from '../support/kernel.js';
import { isRoot, qemuAvailable } from '../support/qemu.js';
import { isAlive, pidsMentioning } from '../support/vmm-procs.js';
import { skipUnlessStrict } from '../support/strict.js';

const SUITE_TIMEOUT_MS = 25 * 60_000;
const CREATE_TIMEOUT_MS = 6 * 60_000;
const BYTES_20MB = 20 * 1024 * 1024;
const CONCURRENT_CONNECTIONS = 200;
/** A device's counters are rewritten every second; its connection table drains within a few guest round trips. */
const DRAIN_TIMEOUT_MS = 30_000;

const skip = skipUnlessStrict(!isRoot() ? 'needs root (network namespaces, bridges, taps, iptables)' : !qemuAvailable() ? 'qemu-system-x86_64 is not installed (scripts/install-deps.sh installs it)' : false);

interface VmView {
  name: string;
  state: string;
  ip?: string;
  tap?: string;
  pid?: number;
  network_mode?: string;
  error?: string;
}

/** sha256 of examples/hello's /bytes stream: byte i is (i * 31 + 7) mod 256. */
function expectedBytesDigest(n: number): string {
  const h = createHash('sha256');
  const chunk = Buffer.alloc(65536);
  for (let off = 0; off < n; off += chunk.length) {
    const len = Math.min(chunk.length, n - off);
    for (let i = 0; i < len; i++) chunk[i] = ((off + i) * 31 + 7) & 255;
    h.update(chunk.subarray(0, len));
  }
  return h.digest('hex');
}

describe('volant end to end (QEMU, real kernel)', { skip, timeout: SUITE_TIMEOUT_MS }, () => {
  let env: E2eEnv;
  let buildDir: string;

  before(async () => {
    env = await startE2eEnv();
    buildDir = join(env.stateDir, 'hello-build');
  });
  after(async () => {
    await env?.dispose();
  });

  async function vm(name: string): Promise<VmView> {
    const r = await env.api('GET', `/api/v1/vms/${name}`);
    assert.equal(r.status, 200, r.text);
    return r.json as VmView;
  }

  function proxy(name: string, pathAndQuery: string): Promise<{ status: number; json: unknown; text: string }> {
    return env.api('GET', `/api/v1/vms/${name}/proxy${pathAndQuery}`);
  }

  const runDir = (name: string): string => join(env.stateDir, 'run', 'vms', name);

  /** GET /bytes?n=N through the ingress proxy: how many bytes came and their sha256. */
  async function download(name: string, n: number): Promise<{ bytes: number; sha256: string }> {
    const res = await request(`http://localhost/api/v1/vms/${name}/proxy/bytes?n=${n}`, { dispatcher: env.dispatcher });
    assert.equal(res.statusCode, 200);
    const hash = createHash('sha256');
    let bytes = 0;
    for await (const chunk of res.body) {
      hash.update(chunk as Buffer);
      bytes += (chunk as Buffer).length;
    }
    return { bytes, sha256: hash.digest('hex') };
  }

  function deviceMetrics(name: string): DeviceMetrics {
    return JSON.parse(readFileSync(join(runDir(name), 'vsock-device.metrics.json'), 'utf8')) as DeviceMetrics;
  }

  /** One HTTP/1.1 request straight through the VM's hybrid socket to kestrel (no volantd in between). */
  async function agentRequest(name: string, path: string): Promise<Socket> {
    const sock = await dialHybridVsock(join(runDir(name), 'vsock.sock'), AGENT_VSOCK_PORT, { timeoutMs: 10_000 });
    sock.write(`GET ${path} HTTP/1.1\r\nhost: kestrel\r\nconnection: close\r\n\r\n`);
    sock.resume();
    return sock;
  }

  /**
   * The raw relay (AGENT_RELAY_PORT) in a real VM, through its real device, and the ingress using
   * it: it answers with the workload's own response; kestrel's own paths still answer from kestrel
   * through the proxy.
   */
  async function assertRelayed(name: string): Promise<void> {
    const sock = await dialHybridVsock(join(runDir(name), 'vsock.sock'), AGENT_RELAY_PORT, { timeoutMs: 10_000 });
    sock.write('GET /headers HTTP/1.1\r\nhost: direct.example\r\nconnection: close\r\n\r\n');
    sock.resume(); // the dialer hands the socket over paused
    const raw = (await readAll(sock)).toString('latin1');
    assert.match(raw, /^HTTP\/1\.1 200 OK\r\n/, `the relay answers with the workload's own response: ${raw.slice(0, 300)}`);
    assert.match(raw, /"host":"direct\.example"/, `the bytes reach the workload as sent (no Host rewriting): ${raw.slice(0, 400)}`);
    // The ingress dials the relay: the workload sees the Host the client sent (kestrel's HTTP path
    // would have put the workload's own) and the ingress's forwarding headers, nothing added in the guest.
    const seen = await proxy(name, '/headers');
    assert.equal(seen.status, 200, seen.text);
    const h = seen.json as Record<string, string>;
    assert.equal(h.host, 'localhost', `the Host the client sent reaches the workload unchanged (relay): ${seen.text}`);
    assert.equal(h['x-forwarded-host'], 'localhost');
    assert.match(h['x-request-id'] ?? '', /^[0-9a-f-]{36}$/);
    const status = await proxy(name, '/healthz');
    assert.equal((status.json as { version?: unknown }).version !== undefined, true, `…/proxy/healthz is kestrel's status: ${status.text}`);
  }

  /** Reads a whole response from `agentRequest` (until the guest closes). */
  async function readAll(sock: Socket): Promise<Buffer> {
    const chunks: Buffer[] = [];
    sock.on('data', (c: Buffer) => chunks.push(c));
    await once(sock, 'close');
    return Buffer.concat(chunks);
  }

  test('1. volar plugins build + install the example plugin; volantd builds the shared runtime it names', { timeout: 600_000 }, async () => {
    const b = await env.buildPlugin(join(REPO_ROOT, 'examples', 'hello'), buildDir, { volantdBuildsRuntime: true });
    assert.equal(b.code, 0, b.stderr + b.stdout);
    assert.ok(existsSync(join(buildDir, 'initramfs.img')));
    const need = (JSON.parse(readFileSync(join(buildDir, 'plugin.json'), 'utf8')) as { image: { layout: string; runtime: { hash: string } } }).image;
    assert.equal(need.layout, 'shared');
    const runtime = join(env.stateDir, 'runtimes', `${need.runtime.hash}.erofs`);
    assert.equal(existsSync(runtime), false, 'not there before install');
    const i = await env.volar(['plugins', 'install', buildDir], { timeoutMs: 300_000 });
    assert.equal(i.code, 0, i.stderr + i.stdout);
    assert.ok(existsSync(runtime), 'install found or built the runtime image the plugin needs');
    const list = await env.volar(['plugins', 'list', '--json']);
    assert.equal(list.code, 0, list.stderr);
    assert.ok((JSON.parse(list.stdout) as { name: string }[]).some((p) => p.name === 'hello'));
  });

  test('1b. memory below what the image needs is refused at create, and nothing is created', async () => {
    const c = await env.volar(['vms', 'create', 'tiny', '--plugin', 'hello', '--memory', '64', '--json'], { timeoutMs: CREATE_TIMEOUT_MS });
    assert.equal(c.code, 2, c.stderr + c.stdout);
    const err = (JSON.parse(c.stdout) as { error: { code: string; message: string; details: { memory_mb: number; min_memory_mb: number } } }).error;
    assert.equal(err.code, 'MEMORY_TOO_SMALL');
    assert.match(err.message, /memory_mb 64 is below the \d+ MiB plugin hello's shared image needs to boot/);
    assert.equal(err.details.memory_mb, 64);
    const vms = await env.volar(['vms', 'list', '--json']);
    assert.deepEqual((JSON.parse(vms.stdout) as { name: string }[]).filter((v) => v.name === 'tiny'), []);
    assert.equal(existsSync(join(env.stateDir, 'vms', 'tiny')), false);
  });

  test('2. bridged VM: leased address from ip=, proxied path and query, 20 MB stream, logs', { timeout: CREATE_TIMEOUT_MS + 120_000 }, async () => {
    const c = await env.volar(['vms', 'create', 'web', '--plugin', 'hello', '--json'], { timeoutMs: CREATE_TIMEOUT_MS });
    assert.equal(c.code, 0, c.stderr + c.stdout);
    const web = await vm('web');
    assert.equal(web.state, 'running', JSON.stringify(web));
    assert.equal(web.ip, '192.168.127.100', 'the first address of the pool');
    if (web.pid) env.track(web.pid);
    // The default memory on the shared runtime, attached read-only as virtio-pmem.
    const argv = readFileSync(`/proc/${web.pid}/cmdline`, 'utf8').split('\0');
    assert.ok(argv.some((a) => new RegExp(`^${DEFAULT_MEMORY_MB}M,slots=1,maxmem=\\d+M$`).test(a)), argv.join(' '));
    assert.ok(argv.some((a) => a.startsWith('memory-backend-file,id=rt0,mem-path=') && a.endsWith(',share=off,readonly=on')), argv.join(' '));
    assert.ok(argv.includes('virtio-pmem-pci,memdev=rt0,id=pmem0'));
    assert.match(argv[argv.indexOf('-append') + 1] ?? '', / volant\.runtime=pmem swiotlb=noforce /);

    const health = await proxy('web', '/healthz');
    assert.equal(health.status, 200, health.text);
    const h = health.json as { network?: { eth0?: { address?: string; prefix?: number } | null }; mode?: string };
    assert.equal(h.network?.eth0?.address, '192.168.127.100', `kestrel reports the address it took from ip=: ${health.text}`);
    assert.equal(h.network?.eth0?.prefix, 24);

    const hello = await proxy('web', '/hello?x=1&y=two');
    assert.equal(hello.status, 200, hello.text);
    const body = hello.json as { path?: string; query?: Record<string, string> };
    assert.equal(body.path, '/hello');
    assert.deepEqual(body.query, { x: '1', y: 'two' });

    assert.deepEqual(await download('web', BYTES_20MB), { bytes: BYTES_20MB, sha256: expectedBytesDigest(BYTES_20MB) }, '20 MB arrive intact');
    await assertRelayed('web');

    const logs = await env.volar(['vms', 'logs', 'web']);
    assert.equal(logs.code, 0, logs.stderr);
    assert.match(logs.stdout, /GET \/hello\?x=1&y=two/, 'the workload log shows the proxied request');

    // A bridged VM's agent traffic went through its vsock device too (the bridge is the guest's own network).
    const m = await eventually(
      () => {
        const now = deviceMetrics('web');
        return now.txBytes >= BYTES_20MB ? now : undefined;
      },
      { what: 'the 20 MB counted by the device' },
    );
    assert.ok(m.hostConnections >= 3, `host connections through the device: ${JSON.stringify(m)}`);
  });

  test('3. outbound: allowed name 200; denied name, IP literal and private resolution 403', async () => {
    // The workload answers {status, body} for what its proxy said; a refused CONNECT comes back as {status: 403}.
    const fetchVia = async (url: string) => {
      const r = await proxy('web', `/fetch?url=${encodeURIComponent(url)}`);
      assert.ok(r.json && typeof (r.json as { status?: unknown }).status === 'number', `the workload answers /fetch: ${r.status} ${r.text}`);
      return r.json as { status: number; body?: string };
    };
    const allowed = await fetchVia(`http://${ALLOWED_NAME}/from-guest`);
    assert.equal(allowed.status, 200, JSON.stringify(allowed));
    assert.match(allowed.body ?? '', /"world":true/);
    assert.match(allowed.body ?? '', /from-guest/);
    for (const url of [`http://${DENIED_NAME}/`, `http://${WORLD_IP}/`, `http://${PRIVATE_NAME}/`, `https://${DENIED_NAME}/`]) {
      const denied = await fetchVia(url);
      assert.equal(denied.status, 403, `${url}: ${JSON.stringify(denied)}`);
      if (url.includes(PRIVATE_NAME)) assert.match(denied.body ?? '', /10\.99\.1\.5/, 'refused for the private address it resolved to, not for its name');
    }
  });

  test('4. vsock VM: no NIC; proxied path and query, 20 MB, WebSocket echo and logs through the device; egress 200/403 over vsock.sock_3128', { timeout: CREATE_TIMEOUT_MS + 120_000 }, async () => {
    const c = await env.volar(['vms', 'create', 'vs', '--plugin', 'hello', '--network', 'vsock', '--json'], { timeoutMs: CREATE_TIMEOUT_MS });
    assert.equal(c.code, 0, c.stderr + c.stdout);
    const vs = await vm('vs');
    if (vs.pid) env.track(vs.pid);
    assert.equal(vs.state, 'running', JSON.stringify(vs));
    assert.equal(vs.network_mode, 'vsock');
    assert.equal(vs.ip ?? undefined, undefined, 'a vsock VM holds no address');

    const health = await proxy('vs', '/healthz');
    assert.equal(health.status, 200, health.text);
    const h = health.json as { mode?: string; network?: { eth0?: unknown }; vsock?: { listening?: boolean } };
    assert.equal(h.mode, 'vsock');
    assert.equal(h.network?.eth0, null, 'the guest has no eth0');
    assert.equal(h.vsock?.listening, true);
    assert.doesNotMatch(readFileSync(join(env.stateDir, 'vms', 'vs', 'serial.log'), 'utf8'), /kestrel: eth0 \d/, 'no eth0 address in vsock mode');

    const hello = await proxy('vs', '/hello?x=1&y=two');
    assert.equal(hello.status, 200, hello.text);
    assert.deepEqual((hello.json as { query?: unknown }).query, { x: '1', y: 'two' });

    assert.deepEqual(await download('vs', BYTES_20MB), { bytes: BYTES_20MB, sha256: expectedBytesDigest(BYTES_20MB) }, '20 MB arrive intact through the device');
    await assertRelayed('vs');

    const ws = new WebSocket(`ws+unix://${env.apiSocket}:/api/v1/vms/vs/proxy/ws`);
    await once(ws, 'open');
    const echoed: Buffer[] = [];
    ws.on('message', (d) => echoed.push(Buffer.from(d as Buffer)));
    const big = Buffer.alloc(300_000, 0x5a);
    ws.send('ping over vsock');
    ws.send(big);
    await eventually(() => echoed.length === 2, { timeoutMs: 60_000, what: 'two echoes' });
    assert.equal(echoed[0]!.toString(), 'ping over vsock');
    assert.ok(echoed[1]!.equals(big), 'a 300 KB binary frame comes back intact');
    ws.close();
    await once(ws, 'close');

    const logs = await env.volar(['vms', 'logs', 'vs']);
    assert.equal(logs.code, 0, logs.stderr);
    assert.match(logs.stdout, /GET \/hello\?x=1&y=two/, 'the logs stream comes through the device');

    // Outbound: the workload → kestrel's forwarder → vsock (CID 2, 3128) → the device → vsock.sock_3128 → egress.
    assert.ok(existsSync(join(runDir('vs'), 'vsock.sock_3128')), 'volantd listens for the guest on vsock.sock_3128');
    const fetchVia = async (url: string) => (await proxy('vs', `/fetch?url=${encodeURIComponent(url)}`)).json as { status: number; body?: string };
    const allowed = await fetchVia(`http://${ALLOWED_NAME}/from-vsock`);
    assert.equal(allowed.status, 200, JSON.stringify(allowed));
    assert.match(allowed.body ?? '', /from-vsock/);
    const denied = await fetchVia(`http://${DENIED_NAME}/`);
    assert.equal(denied.status, 403, JSON.stringify(denied));
    const m = await eventually(
      () => {
        const now = deviceMetrics('vs');
        return now.guestConnections >= 2 ? now : undefined;
      },
      { what: 'guest connections counted' },
    );
    assert.equal(m.guestRefused, 0, JSON.stringify(m));
  });

  test('5. the device: 200 concurrent connections; a client gone mid-stream and a workload dying mid-response leave nothing open', { timeout: 600_000 }, async () => {
    const bodies = await Promise.all(
      Array.from({ length: CONCURRENT_CONNECTIONS }, async (_, i) => (await readAll(await agentRequest('vs', `/hello?i=${i}`))).toString('latin1')),
    );
    bodies.forEach((b, i) => {
      assert.match(b, /^HTTP\/1\.1 200 /, `connection ${i}: ${b.slice(0, 200)}`);
      assert.ok(b.includes(`"i":"${i}"`), `connection ${i} got its own answer`);
    });

    // A host client that reads a little of a long stream and disappears.
    const gone = await agentRequest('vs', `/bytes?n=${500 * 1024 * 1024}`);
    let got = 0;
    await new Promise<void>((resolve) => {
      gone.on('data', (c: Buffer) => {
        got += c.length;
        if (got >= 1024 * 1024) {
          gone.destroy();
          resolve();
        }
      });
    });
    // A workload that dies mid-response: the guest side ends the stream early, and the client sees the end.
    const cut = await readAll(await agentRequest('vs', '/bytes?n=3000000&cut=1'));
    assert.ok(cut.length < 3_000_001 + 1000, `the cut stream ended early (${cut.length} bytes)`);
    assert.ok(cut.length > 1000, 'its head and some bytes came through first');
    const viaIngress = await request('http://localhost/api/v1/vms/vs/proxy/bytes?n=3000000&cut=1', { dispatcher: env.dispatcher });
    await assert.rejects(viaIngress.body.arrayBuffer(), 'through the ingress the body is cut short, not hung');

    await eventually(() => deviceMetrics('vs').connections === 0, { timeoutMs: DRAIN_TIMEOUT_MS, what: 'the device connection table empties' });
    assert.equal((await proxy('vs', '/hello?after=stress')).status, 200, 'the VM still answers');
    const m = deviceMetrics('vs');
    assert.equal(m.creditViolations, 0, JSON.stringify(m));
    assert.equal(m.txRefusedChains, 0, JSON.stringify(m));
  });

  test("5b. DNS: a bridged guest resolves names through the host's resolvers by default", { timeout: CREATE_TIMEOUT_MS + 120_000 }, async () => {
    // The example plugin without its allowlist: plain NAT, no egress proxy, so the workload's
    // fetch resolves the name itself, with the resolv.conf kestrel wrote from volant.dns, which
    // volantd took from its host's resolv.conf (the world's DNS server; nothing in the config).
    const natBuild = join(env.stateDir, 'hello-nat-build');
    cpSync(buildDir, natBuild, { recursive: true });
    const manifest = JSON.parse(readFileSync(join(natBuild, 'plugin.json'), 'utf8')) as { name: string; network: Record<string, unknown> };
    manifest.name = 'hello-nat';
    manifest.network = { mode: 'bridged' };
    writeFileSync(join(natBuild, 'plugin.json'), JSON.stringify(manifest));
    const i = await env.volar(['plugins', 'install', natBuild]);
    assert.equal(i.code, 0, i.stderr + i.stdout);
    const c = await env.volar(['vms', 'create', 'nat', '--plugin', 'hello-nat'], { timeoutMs: CREATE_TIMEOUT_MS });
    assert.equal(c.code, 0, c.stderr + c.stdout);
    const nat = await vm('nat');
    if (nat.pid) env.track(nat.pid);
    try {
      const r = await proxy('nat', `/fetch?url=${encodeURIComponent(`http://${ALLOWED_NAME}/resolved-by-the-guest`)}`);
      const got = r.json as { status?: number; body?: string; error?: string };
      assert.equal(got.status, 200, `the guest resolved ${ALLOWED_NAME} and reached the world directly: ${r.text}`);
      assert.match(got.body ?? '', /resolved-by-the-guest/);
    } finally {
      const d = await env.volar(['vms', 'delete', 'nat', '--force']);
      assert.equal(d.code, 0, d.stderr);
    }
  });

  test('6. life cycle: delete releases the address and the tap; kill -9 of QEMU is noticed; volantd restart re-adopts', { timeout: 2 * CREATE_TIMEOUT_MS }, async () => {
    const before = await vm('web');
    const del = await env.volar(['vms', 'delete', 'web', '--force']);
    assert.equal(del.code, 0, del.stderr);
    assert.equal((await env.api('GET', '/api/v1/vms/web')).status, 404);
    const taps = await env.inHost(['ip', '-j', 'link', 'show']);
    assert.ok(!taps.stdout.includes(`"${before.tap}"`), `tap ${before.tap} removed`);

    const c = await env.volar(['vms', 'create', 'web2', '--plugin', 'hello'], { timeoutMs: CREATE_TIMEOUT_MS });
    assert.equal(c.code, 0, c.stderr + c.stdout);
    const web2 = await vm('web2');
    assert.equal(web2.ip, '192.168.127.100', 'the released address is leased again');
    if (web2.pid) env.track(web2.pid);

    // Restart volantd: the VM keeps running and is re-adopted.
    await env.stopVolantd('SIGTERM');
    await env.startVolantd();
    const again = await vm('web2');
    assert.equal(again.state, 'running');
    assert.equal(again.pid, web2.pid);
    assert.equal((await proxy('web2', '/hello')).status, 200);

    // A graceful stop reaches kestrel as an ACPI power-button press: the workload is stopped and
    // the guest powers off by itself (not killed by the VMM's timeout).
    const stop = await env.volar(['vms', 'stop', 'web2']);
    assert.equal(stop.code, 0, stop.stderr);
    const serial = readFileSync(join(env.stateDir, 'vms', 'web2', 'serial.log'), 'utf8');
    assert.match(serial, /kestrel: [^\n]*stopped on SIGTERM/, 'kestrel shut down cleanly on the power button');
    const restarted = await env.volar(['vms', 'start', 'web2'], { timeoutMs: CREATE_TIMEOUT_MS });
    assert.equal(restarted.code, 0, restarted.stderr);
    const running = await vm('web2');
    if (running.pid) env.track(running.pid);

    // kill -9 of the VMM: volantd notices, the VM is no longer running, its tap goes, its vsock device exits.
    const devicePid = Number(readFileSync(join(runDir('web2'), 'vsock-device.pid'), 'utf8'));
    assert.ok(isAlive(devicePid), 'the vsock device runs beside QEMU');
    process.kill(running.pid!, 'SIGKILL');
    const state = await eventually(
      async () => {
        const now = (await vm('web2')).state;
        return now !== 'running' && now;
      },
      { what: 'volantd noticing the VMM died', timeoutMs: 30_000 },
    );
    assert.ok(state === 'failed' || state === 'stopped', `state after kill -9: ${state}`);
    const links = await env.inHost(['ip', '-j', 'link', 'show']);
    assert.ok(!links.stdout.includes(`"${web2.tap}"`), 'tap removed after the VMM died');
    await eventually(() => !isAlive(devicePid), { what: 'the vsock device exits with its QEMU' });
    assert.deepEqual(pidsMentioning(runDir('web2')), []);
    const d = await env.volar(['vms', 'delete', 'web2', '--force']);
    assert.equal(d.code, 0, d.stderr);
  });

  test('7. kill -9 of a VM\'s vsock device: the VM is marked failed, QEMU and every file go', async () => {
    const before = await vm('vs');
    assert.equal(before.state, 'running');
    const devicePid = Number(readFileSync(join(runDir('vs'), 'vsock-device.pid'), 'utf8'));
    process.kill(devicePid, 'SIGKILL');
    const after = await eventually(
      async () => {
        const v = await vm('vs');
        return v.state !== 'running' ? v : undefined;
      },
      { timeoutMs: 30_000, what: 'the VM leaves running' },
    );
    assert.equal(after.state, 'failed', JSON.stringify(after));
    assert.match(after.error ?? '', /its vsock device \(pid \d+\) exited/, 'the reason names the device (adopted after the restart: its exit status is unknown)');
    await eventually(() => !isAlive(before.pid!), { what: 'QEMU is gone' });
    assert.deepEqual(pidsMentioning(runDir('vs')), [], 'no process of that VM is left');
    assert.equal(existsSync(runDir('vs')), false, 'its run directory (sockets, pid file) is gone');
    const d = await env.volar(['vms', 'delete', 'vs']);
    assert.equal(d.code, 0, d.stderr);
  });
});

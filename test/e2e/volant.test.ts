/**
 * Volant end to end on a real kernel: volantd runs for real inside a private network namespace
 * (see test/support/e2e-env.ts), boots the example plugin under QEMU (TCG) through its normal API
 * and CLI, and traffic flows host → kestrel → workload and workload → kestrel → egress proxy →
 * an "outside world" namespace with DNS and HTTP servers.
 *
 * On this machine QEMU has no vhost-vsock (no /dev/vhost-vsock), so ingress to VMs goes over TCP
 * on the bridge; the vsock half is proven inside a guest: kestrel's AF_VSOCK listener answers a
 * vsock client in the same guest over the kernel's vsock_loopback transport.
 *
 * Needs root and qemu-system-x86_64; skips with a message otherwise.
 */

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { request } from 'undici';
import { ALLOWED_NAME, DENIED_NAME, type E2eEnv, PRIVATE_NAME, startE2eEnv, WORLD_IP } from '../support/e2e-env.js';
import { REPO_ROOT } from '../support/kernel.js';
import { bootQemu, isRoot, qemuAvailable } from '../support/qemu.js';

const SUITE_TIMEOUT_MS = 25 * 60_000;
const CREATE_TIMEOUT_MS = 6 * 60_000;
const BYTES_20MB = 20 * 1024 * 1024;

const skip = !isRoot() ? 'needs root (network namespaces, bridges, taps, iptables)' : !qemuAvailable() ? 'qemu-system-x86_64 is not installed (scripts/install-deps.sh installs it)' : false;

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

  test('1. volar plugins build + install the example plugin', async () => {
    const b = await env.volar(['plugins', 'build', join(REPO_ROOT, 'examples', 'hello'), '-o', buildDir, '--kernel', env.kernel.vmlinuz, '--modules', env.kernel.modulesDir], { timeoutMs: 300_000 });
    assert.equal(b.code, 0, b.stderr + b.stdout);
    assert.ok(existsSync(join(buildDir, 'initramfs.img')));
    const i = await env.volar(['plugins', 'install', buildDir]);
    assert.equal(i.code, 0, i.stderr + i.stdout);
    const list = await env.volar(['plugins', 'list', '--json']);
    assert.equal(list.code, 0, list.stderr);
    assert.ok((JSON.parse(list.stdout) as { name: string }[]).some((p) => p.name === 'hello'));
  });

  test('2. bridged VM: leased address from ip=, proxied path and query, 20 MB stream, logs', { timeout: CREATE_TIMEOUT_MS + 120_000 }, async () => {
    const c = await env.volar(['vms', 'create', 'web', '--plugin', 'hello', '--json'], { timeoutMs: CREATE_TIMEOUT_MS });
    assert.equal(c.code, 0, c.stderr + c.stdout);
    const web = await vm('web');
    assert.equal(web.state, 'running', JSON.stringify(web));
    assert.equal(web.ip, '192.168.127.100', 'the first address of the pool');
    if (web.pid) env.track(web.pid);

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

    const res = await request(`http://localhost/api/v1/vms/web/proxy/bytes?n=${BYTES_20MB}`, { dispatcher: env.dispatcher });
    assert.equal(res.statusCode, 200);
    const hash = createHash('sha256');
    let n = 0;
    for await (const chunk of res.body) {
      hash.update(chunk as Buffer);
      n += (chunk as Buffer).length;
    }
    assert.equal(n, BYTES_20MB);
    assert.equal(hash.digest('hex'), expectedBytesDigest(BYTES_20MB), '20 MB arrive intact');

    const logs = await env.volar(['vms', 'logs', 'web']);
    assert.equal(logs.code, 0, logs.stderr);
    assert.match(logs.stdout, /GET \/hello\?x=1&y=two/, 'the workload log shows the proxied request');
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

  test('4. vsock: a vsock-mode guest has no eth0 address and kestrel answers over vsock_loopback', async () => {
    const image = join(buildDir, 'initramfs.img');
    const guest = await bootQemu({
      kernel: env.kernel.vmlinuz,
      initrd: image,
      append: 'console=ttyS0 panic=-1 volant.mode=vsock volant.name=vs volant.selftest=vsock',
      memoryMb: 1024,
    });
    env.track(guest.pid);
    try {
      const out = await guest.waitForConsole(/kestrel: selftest vsock: (ok|failed)[^\n]*/, 240_000);
      const line = /kestrel: selftest vsock: (ok|failed)[^\n]*/.exec(out)![0];
      assert.match(line, /selftest vsock: ok/, line);
      assert.doesNotMatch(out, /kestrel: eth0 \d/, 'no eth0 address in vsock mode');
      console.log('  (this host has no /dev/vhost-vsock: ingress over vsock is proven with the muxer double; AF_VSOCK itself ran in the guest over vsock_loopback)');
    } finally {
      await guest.stop();
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

    // kill -9 of the VMM: volantd notices, the VM is no longer running, its tap goes.
    process.kill(running.pid!, 'SIGKILL');
    const deadline = Date.now() + 30_000;
    let state = 'running';
    while (Date.now() < deadline) {
      state = (await vm('web2')).state;
      if (state !== 'running') break;
      await new Promise((r) => setTimeout(r, 250));
    }
    assert.ok(state === 'failed' || state === 'stopped', `state after kill -9: ${state}`);
    const links = await env.inHost(['ip', '-j', 'link', 'show']);
    assert.ok(!links.stdout.includes(`"${web2.tap}"`), 'tap removed after the VMM died');
    const d = await env.volar(['vms', 'delete', 'web2', '--force']);
    assert.equal(d.code, 0, d.stderr);
  });
});

/**
 * volantd as a whole: auth decided at start-up (token file, configured token), the Unix-socket
 * listener, the ingress seam (proxy route after auth), streaming logs, and `volantd` argument
 * and start-up errors. Real store; the VMM is the FakeVmmLauncher TEST DOUBLE.
 */

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { type Harness, startHarness } from '../support/volantd-harness.js';

const MAIN = fileURLToPath(new URL('../../host/daemon/main.ts', import.meta.url));
const CLI = fileURLToPath(new URL('../../host/cli/main.ts', import.meta.url));

function run(file: string, args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', file, ...args], { env: { PATH: process.env.PATH ?? '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c) => (stdout += c));
    child.stderr.on('data', (c) => (stderr += c));
    child.once('close', (code) => resolve({ code, stdout, stderr }));
  });
}

function unixGet(socketPath: string, path: string): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    request({ socketPath, path }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    })
      .once('error', reject)
      .end();
  });
}

/** Sends a WebSocket upgrade without a token and returns the first bytes of the answer. */
function rawUpgrade(url: string, path: string): Promise<string> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const s = connect({ host: hostname, port: Number(port) }, () => {
      s.write(`GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`);
    });
    let out = '';
    s.on('data', (c) => {
      out += c;
    });
    s.on('close', () => resolve(out));
    s.on('error', reject);
  });
}

describe('volantd serving', () => {
  const cleanups: (() => Promise<void> | void)[] = [];
  after(async () => {
    for (const c of cleanups.reverse()) await c();
  });

  it('TCP needs the token on every route but health, loopback included: no token and a wrong token are 401', async () => {
    const h1 = await startHarness({ tag: 'daemon-token' });
    assert.ok(h1.daemon.token, 'a token is made for the loopback TCP listener');
    assert.equal(readFileSync(join(h1.stateDir, 'api-token'), 'utf8').trim(), h1.daemon.token, 'kept in <state_dir>/api-token');
    assert.equal(statSync(join(h1.stateDir, 'api-token')).mode & 0o777, 0o600);
    assert.equal((await h1.api('/api/v1/health', { token: '' })).status, 200);
    for (const path of ['/api/v1/vms', '/api/v1/plugins', '/metrics', '/openapi.json', '/api/v1/events', '/api/v1/debug/ipam', '/api/v1/vms/x/proxy/y', '/api/v1/nope']) {
      for (const token of ['', `${h1.daemon.token}X`]) {
        const res = await h1.api(path, { token });
        assert.equal(res.status, 401, `${path} with ${token ? 'a wrong' : 'no'} token`);
        assert.equal(((await res.json()) as { error: { code: string } }).error.code, 'UNAUTHORIZED');
      }
    }
    assert.equal((await h1.api('/api/v1/vms')).status, 200);
    // The upgrade path (WebSocket ingress) checks the token too.
    const upgrade = await rawUpgrade(h1.url, '/api/v1/vms/x/proxy/ws');
    assert.match(upgrade, /^HTTP\/1\.1 401 /);

    // An existing token file is kept (and tightened to 0600) on the next start.
    const stateDir = h1.stateDir;
    await h1.daemon.close();
    writeFileSync(join(stateDir, 'api-token'), 'file-token-0123456789abcdef\n', { mode: 0o644 });
    const again = await startHarness({ tag: 'daemon-token2', stateDir });
    cleanups.push(() => again.close());
    assert.equal(again.daemon.token, 'file-token-0123456789abcdef');
    assert.equal(statSync(join(stateDir, 'api-token')).mode & 0o777, 0o600, 'the token file is tightened to 0600');

    // volar over TCP reads the token from the state dir.
    const r = await run(CLI, ['vms', 'list', '--json', '--state-dir', stateDir], { VOLANT_API: again.url });
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), []);
  });

  it('the Unix socket needs no token (mode 0660); volar uses it when it is there', async () => {
    const h = await startHarness({ tag: 'daemon-sock' });
    cleanups.push(() => h.close());
    const sock = h.daemon.socket!;
    assert.equal(sock, `unix:${join(h.stateDir, 'run', 'volantd.sock')}`, 'under the runtime dir of a --state-dir run');
    const path = sock.slice('unix:'.length);
    assert.equal(statSync(path).mode & 0o777, 0o660);
    assert.equal(await unixGet(path, '/api/v1/vms'), 200, 'no token on the socket');
    assert.equal(await unixGet(path, '/api/v1/vms/none/proxy/x'), 404, 'ingress over the socket is reached without a token (404: no such VM)');
    const r = await run(CLI, ['plugins', 'list', '--state-dir', h.stateDir]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), 'no plugins');
  });

  it('api.unsafe_loopback_without_token opens loopback TCP only; api.socket "" serves no socket', async () => {
    const h = await startHarness({ tag: 'daemon-waiver', env: { VOLANT_API_UNSAFE_LOOPBACK_WITHOUT_TOKEN: 'true', VOLANT_API_SOCKET: '' } });
    cleanups.push(() => h.close());
    assert.equal(h.daemon.token, undefined);
    assert.equal(h.daemon.socket, undefined);
    assert.equal((await h.api('/api/v1/vms', { token: '' })).status, 200);
  });

  it('serves on a Unix socket, and volar reaches it with --api unix:/path', async () => {
    const dir = mkdtempSync(join(tmpdir(), `volant-daemon-${process.pid}-`));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const sock = join(dir, 'api.sock');
    const h = await startHarness({ tag: 'daemon-unix', listen: `unix:${sock}` });
    cleanups.push(() => h.close());
    assert.equal(h.daemon.address, `unix:${sock}`);
    const status = await new Promise<number>((resolve, reject) => {
      request({ socketPath: sock, path: '/api/v1/health' }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      })
        .once('error', reject)
        .end();
    });
    assert.equal(status, 200);
    const r = await run(CLI, ['plugins', 'list', '--api', `unix:${sock}`]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), 'no plugins');
  });

  let h: Harness;
  it('proxies /api/v1/vms/:name/proxy/* to the VM through ingress, after auth, without the API token', async () => {
    h = await startHarness({ tag: 'daemon-ingress', env: { VOLANT_API_TOKEN: 'ingress-token-0123456789' } });
    cleanups.push(() => h.close());
    assert.equal((await h.api('/api/v1/plugins', { method: 'POST', json: { path: h.pluginDir('web') } })).status, 201);
    assert.equal((await h.api('/api/v1/vms', { method: 'POST', json: { name: 'px', plugin: 'web' } })).status, 201);
    let res = await h.api('/api/v1/vms/px/proxy/hello?x=1', { token: '' });
    assert.equal(res.status, 401, 'ingress is only reached after auth');
    res = await h.api('/api/v1/vms/px/proxy/hello?x=1');
    assert.equal(res.status, 200);
    const echo = (await res.json()) as { echo: string; authorization: string | null };
    assert.equal(echo.echo, '/hello?x=1');
    assert.equal(echo.authorization, null, 'the API bearer token is not forwarded to the workload');
    res = await h.api('/api/v1/vms/nope/proxy/x');
    assert.equal(res.status, 404);
  });

  it('streams logs with follow until the client leaves', async () => {
    const ac = new AbortController();
    const res = await h.api('/api/v1/vms/px/logs?follow=1', { signal: ac.signal });
    assert.equal(res.status, 200);
    const reader = res.body!.getReader();
    let text = '';
    while (!/workload\| tick \d+\n[\s\S]*workload\| tick \d+\n/.test(text)) {
      const { value, done } = await reader.read();
      if (done) break;
      text += Buffer.from(value).toString();
    }
    ac.abort();
    assert.match(text, /^serial\| kestrel: listening on vsock:8080$/m);
    assert.match(text, /^workload\| workload started$/m);
  });
});

describe('volantd command line', () => {
  it('refuses unknown flags with usage (exit 2) and a missing kernel with a clear error (exit 1), logged as a fatal JSON line', async () => {
    let r = await run(MAIN, ['--bogus']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /usage: volantd/);
    const fatal = (stderr: string): { level: string; msg: string; err: { code: string; message: string } } => {
      const lines = stderr.trim().split('\n');
      assert.equal(lines.length, 1, stderr);
      return JSON.parse(lines[0]!);
    };
    const dir = mkdtempSync(join(tmpdir(), `volant-daemon-${process.pid}-`));
    try {
      r = await run(MAIN, ['--state-dir', dir, '--listen', '127.0.0.1:0', '--kernel', join(dir, 'no-such-vmlinuz')], { VOLANT_CONFIG: join(dir, 'none.yaml') });
      assert.equal(r.code, 1);
      let line = fatal(r.stderr);
      assert.equal(line.level, 'fatal');
      assert.match(line.err.code, /^(NOT_FOUND|INVALID_ARGUMENT)$/);
      assert.match(line.msg, /^cannot start: (NOT_FOUND|INVALID_ARGUMENT): /);
      r = await run(MAIN, ['--state-dir', dir, '--listen', 'nonsense', '--kernel', '/dev/null']);
      assert.equal(r.code, 1);
      line = fatal(r.stderr);
      assert.match(line.msg, /listen/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

/**
 * The HTTP API against a real volantd: real SQLite store file, real API server on loopback, and
 * the FakeVmmLauncher TEST DOUBLE (real processes speaking hybrid vsock; no VMM can run here).
 * Every route's happy path and its bad inputs, errors always `{ error: { code, message } }`.
 */

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Registry } from 'prom-client';
import { createApiServer } from '../../host/api/server.js';
import { PluginImages } from '../../host/orchestrator/plugin-images.js';
import { eventually } from '../support/eventually.js';
import { type Harness, startHarness } from '../support/volantd-harness.js';

async function errorOf(res: Response): Promise<{ code: string; message: string; details?: unknown }> {
  const body = (await res.json()) as { error: { code: string; message: string; details?: unknown } };
  assert.ok(body.error, `expected an error body, got ${JSON.stringify(body)}`);
  return body.error;
}

describe('API routes (real store, fake VMM double)', () => {
  let h: Harness;
  before(async () => {
    h = await startHarness({ tag: 'api' });
  });
  after(async () => {
    await h?.close();
  });

  it('health answers without a token', async () => {
    const res = await h.api('/api/v1/health');
    assert.equal(res.status, 200);
    const body = (await res.json()) as { status: string };
    assert.equal(body.status, 'ok');
  });

  it('unknown routes are 404 NOT_FOUND in the error shape', async () => {
    const res = await h.api('/api/v1/nope');
    assert.equal(res.status, 404);
    assert.equal((await errorOf(res)).code, 'NOT_FOUND');
  });

  it('installs, lists, shows a plugin; refuses bad install bodies with paths', async () => {
    const dir = h.pluginDir('web');
    let res = await h.api('/api/v1/plugins', { method: 'POST', json: { path: dir } });
    assert.equal(res.status, 201, await res.clone().text());
    const p = (await res.json()) as { name: string; initramfs_path: string; network_mode: string };
    assert.equal(p.name, 'web');
    assert.equal(p.network_mode, 'vsock');
    assert.ok(p.initramfs_path.startsWith(h.stateDir), 'the image is copied under the state dir');

    res = await h.api('/api/v1/plugins');
    assert.deepEqual(((await res.json()) as { plugins: { name: string }[] }).plugins.map((x) => x.name), ['web']);
    res = await h.api('/api/v1/plugins/web');
    assert.equal(res.status, 200);
    res = await h.api('/api/v1/plugins/nope');
    assert.equal(res.status, 404);

    res = await h.api('/api/v1/plugins', { method: 'POST', json: { path: 'relative/dir' } });
    assert.equal(res.status, 400);
    let e = await errorOf(res);
    assert.equal(e.code, 'VALIDATION_FAILED');
    assert.equal((e.details as { path: string }[])[0]!.path, '/path');

    res = await h.api('/api/v1/plugins', { method: 'POST', json: { path: '/tmp', extra: 1 } });
    e = await errorOf(res);
    assert.equal(res.status, 400);
    assert.ok((e.details as { path: string }[]).some((d) => d.path === '/extra'), JSON.stringify(e));

    res = await h.api('/api/v1/plugins', { method: 'POST', json: { path: `${h.dir}/does-not-exist` } });
    assert.equal(res.status, 400);
    assert.match((await errorOf(res)).message, /plugin\.json does not exist/);

    res = await h.api('/api/v1/plugins', { method: 'POST', body: '{"path": ', headers: { 'content-type': 'application/json' } });
    assert.equal(res.status, 400);
    assert.equal((await errorOf(res)).code, 'INVALID_ARGUMENT');
  });

  it('creates a VM that becomes running, lists, gets, stops, starts and deletes it', async () => {
    let res = await h.api('/api/v1/vms', { method: 'POST', json: { name: 'vm1', plugin: 'web', env: { A: 'b' } } });
    assert.equal(res.status, 201, await res.clone().text());
    const vm = (await res.json()) as { name: string; state: string; cid: number; pid: number; network_mode: string };
    assert.equal(vm.state, 'running');
    assert.equal(vm.network_mode, 'vsock');
    assert.ok(vm.cid >= 3);
    assert.ok(vm.pid > 0);

    res = await h.api('/api/v1/vms');
    assert.deepEqual(((await res.json()) as { vms: { name: string }[] }).vms.map((v) => v.name), ['vm1']);
    res = await h.api('/api/v1/vms/vm1');
    assert.equal(((await res.json()) as { state: string }).state, 'running');

    res = await h.api('/api/v1/vms', { method: 'POST', json: { name: 'vm1', plugin: 'web' } });
    assert.equal(res.status, 409);
    assert.equal((await errorOf(res)).code, 'NAME_TAKEN');

    res = await h.api('/api/v1/plugins/web', { method: 'DELETE' });
    assert.equal(res.status, 409, 'a plugin in use cannot be removed');

    res = await h.api('/api/v1/vms/vm1', { method: 'DELETE' });
    assert.equal(res.status, 409, 'a running VM needs force');
    assert.equal((await errorOf(res)).code, 'INVALID_STATE');

    res = await h.api('/api/v1/vms/vm1/stop', { method: 'POST' });
    assert.equal(res.status, 200);
    assert.equal(((await res.json()) as { state: string }).state, 'stopped');
    assert.throws(() => process.kill(vm.pid, 0), 'the VMM process is gone after stop');

    res = await h.api('/api/v1/vms/vm1/start', { method: 'POST' });
    assert.equal(res.status, 200);
    const restarted = (await res.json()) as { state: string; cid: number };
    assert.equal(restarted.state, 'running');
    assert.equal(restarted.cid, vm.cid, 'the CID belongs to the VM for its life');

    res = await h.api('/api/v1/vms/vm1/logs');
    assert.equal(res.status, 200);
    const logs = await res.text();
    assert.match(logs, /^serial\| kestrel: booting/m);
    assert.match(logs, /^workload\| hello from the workload$/m);

    res = await h.api('/api/v1/vms/vm1?force=1', { method: 'DELETE' });
    assert.equal(res.status, 204);
    res = await h.api('/api/v1/vms/vm1');
    assert.equal(res.status, 404);
  });

  it('refuses bad create bodies with every problem located by path', async () => {
    const cases: [unknown, string[]][] = [
      [{ plugin: 'web' }, ['/name']],
      [{ name: 'bad name!', plugin: 'web' }, ['/name']],
      [{ name: 'ok', plugin: 'web', cpus: 'two' }, ['/cpus']],
      [{ name: 'ok', plugin: 'web', cpus: 100000 }, ['/cpus']],
      [{ name: 'ok', plugin: 'web', memory_mb: 1 }, ['/memory_mb']],
      [{ name: 'ok', plugin: 'web', env: { '1BAD': 'x' } }, ['/env']],
      [{ name: 'ok', plugin: 'web', network: { mode: 'wifi' } }, ['/network/mode']],
      [{ name: 'ok', plugin: 'web', unknown: true }, ['/unknown']],
      [{ name: '../../etc', plugin: 'web' }, ['/name']],
      [[1, 2], ['/']],
    ];
    for (const [body, paths] of cases) {
      const res = await h.api('/api/v1/vms', { method: 'POST', json: body });
      assert.equal(res.status, 400, JSON.stringify(body));
      const e = await errorOf(res);
      assert.equal(e.code, 'VALIDATION_FAILED');
      const got = (e.details as { path: string }[]).map((d) => d.path);
      for (const p of paths) assert.ok(got.some((g) => g.startsWith(p)), `${JSON.stringify(body)}: expected a problem at ${p}, got ${JSON.stringify(got)}`);
    }
    assert.equal(h.daemon.orchestrator.list().length, 0, 'refused requests change nothing');
  });

  it('unknown plugin is 404; an explicit IP on a vsock plugin is 400', async () => {
    let res = await h.api('/api/v1/vms', { method: 'POST', json: { name: 'x1', plugin: 'nope' } });
    assert.equal(res.status, 404);
    res = await h.api('/api/v1/vms', { method: 'POST', json: { name: 'x1', plugin: 'web', ip: '192.168.127.150' } });
    assert.equal(res.status, 400);
    assert.match((await errorOf(res)).message, /needs network mode bridged/);
  });

  it('unknown VM is 404 on every VM route; bad names are 400', async () => {
    for (const [method, path] of [
      ['GET', '/api/v1/vms/ghost'],
      ['DELETE', '/api/v1/vms/ghost'],
      ['POST', '/api/v1/vms/ghost/start'],
      ['POST', '/api/v1/vms/ghost/stop'],
      ['GET', '/api/v1/vms/ghost/logs'],
      ['GET', '/api/v1/vms/ghost/proxy/x'],
    ] as const) {
      const res = await h.api(path, { method });
      assert.equal(res.status, 404, `${method} ${path}`);
      assert.equal((await errorOf(res)).code, 'NOT_FOUND');
    }
    const res = await h.api('/api/v1/vms/bad%20name');
    assert.equal(res.status, 400);
  });

  it('a VMM that fails to launch answers 502 and leaves nothing behind', async () => {
    h.launcher.behaviour.set('broken', 'launch-fails');
    const before = h.daemon.store.db.prepare('SELECT count(*) AS n FROM ip_leases').get() as { n: number };
    const res = await h.api('/api/v1/vms', { method: 'POST', json: { name: 'broken', plugin: 'web' } });
    assert.equal(res.status, 502);
    const e = await errorOf(res);
    assert.equal(e.code, 'VMM_FAILED');
    assert.match(e.message, /launch VMM/);
    assert.equal((await h.api('/api/v1/vms/broken')).status, 404, 'a failed create removes the row (and its lease and CID)');
    const afterN = h.daemon.store.db.prepare('SELECT count(*) AS n FROM ip_leases').get() as { n: number };
    assert.equal(afterN.n, before.n);
  });

  it('serves the IPAM report, metrics and an OpenAPI document naming every route', async () => {
    let res = await h.api('/api/v1/debug/ipam');
    assert.equal(res.status, 200);
    res = await h.api('/metrics');
    const text = await res.text();
    assert.match(text, /^# TYPE volant_api_requests_total counter$/m);
    assert.match(text, /^volant_ip_leases \d+$/m);
    res = await h.api('/openapi.json');
    const doc = (await res.json()) as { openapi: string; paths: Record<string, unknown> };
    assert.match(doc.openapi, /^3\./);
    for (const p of ['/api/v1/health', '/api/v1/vms', '/api/v1/vms/{name}', '/api/v1/vms/{name}/start', '/api/v1/vms/{name}/logs', '/api/v1/plugins', '/api/v1/events', '/metrics']) {
      assert.ok(doc.paths[p], `openapi lacks ${p}: ${Object.keys(doc.paths).join(' ')}`);
    }
  });

  it('streams VM state changes as server-sent events', async () => {
    const ac = new AbortController();
    const res = await h.api('/api/v1/events', { signal: ac.signal });
    assert.equal(res.headers.get('content-type')?.split(';')[0], 'text/event-stream');
    const reader = res.body!.getReader();
    const created = h.api('/api/v1/vms', { method: 'POST', json: { name: 'ev1', plugin: 'web' } });
    let text = '';
    while (!/"state":"running"/.test(text)) {
      const { value, done } = await reader.read();
      if (done) break;
      text += Buffer.from(value).toString();
    }
    ac.abort();
    assert.equal((await created).status, 201);
    assert.match(text, /event: vm\.state\ndata: \{[^\n]*"vm":"ev1"[^\n]*"state":"creating"/);
    assert.doesNotMatch(text, /"vm":"ev1","state":"starting"/, "a create goes creating → running");
    // Between the two, the boot steps it entered, in order.
    const phases = [...text.matchAll(/event: vm\.phase\ndata: (\{[^\n]*\})/g)].map((m) => (JSON.parse(m[1]!) as { vm: string; phase: string })).filter((e) => e.vm === 'ev1').map((e) => e.phase);
    assert.deepEqual(phases, ['create run directory', 'launch VMM', 'wait for kestrel /healthz', 'record running']);
    await h.api('/api/v1/vms/ev1?force=true', { method: 'DELETE' });
  });

  it('create with wait=0 answers 202 once the VM is recorded; a bad wait value is 400 and creates nothing', async () => {
    let res = await h.api('/api/v1/vms?wait=0', { method: 'POST', json: { name: 'nw1', plugin: 'web' } });
    assert.equal(res.status, 202);
    assert.equal(((await res.json()) as { state: string }).state, 'creating');
    await eventually(async () => ((await (await h.api('/api/v1/vms/nw1')).json()) as { state: string }).state === 'running', { what: 'nw1 running' });
    res = await h.api('/api/v1/vms?wait=0', { method: 'POST', json: { name: 'nw1', plugin: 'web' } });
    assert.equal(res.status, 409, 'an error before the VM is recorded is the answer');
    res = await h.api('/api/v1/vms?wait=maybe', { method: 'POST', json: { name: 'nw2', plugin: 'web' } });
    assert.equal(res.status, 400);
    assert.equal(((await res.json()) as { error: { code: string } }).error.code, 'VALIDATION_FAILED');
    assert.equal((await h.api('/api/v1/vms/nw2')).status, 404);
    await h.api('/api/v1/vms/nw1?force=true', { method: 'DELETE' });
  });

  it('without ingress, the proxy route exists and answers 501 NOT_SUPPORTED (after auth and the VM lookup)', async () => {
    await h.api('/api/v1/vms', { method: 'POST', json: { name: 'seam', plugin: 'web' } });
    const api = await createApiServer({
      orchestrator: h.daemon.orchestrator,
      plugins: new PluginImages(h.daemon.store.plugins, `${h.stateDir}/plugins`),
      ipamReport: () => ({}),
      metrics: new Registry(),
      version: 'test',
      startedAt: Date.now(),
      token: 'seam-token-0123456789',
    });
    try {
      const address = await api.listen({ kind: 'tcp', host: '127.0.0.1', port: 0 });
      const get = (path: string, token?: string) => fetch(`http://${address}${path}`, { headers: token ? { authorization: `Bearer ${token}` } : {} });
      assert.equal((await get('/api/v1/vms/seam/proxy/x')).status, 401);
      const res = await get('/api/v1/vms/seam/proxy/x', 'seam-token-0123456789');
      assert.equal(res.status, 501);
      assert.equal(((await res.json()) as { error: { code: string } }).error.code, 'NOT_SUPPORTED');
      assert.equal((await get('/api/v1/vms/ghost/proxy/x', 'seam-token-0123456789')).status, 404);
    } finally {
      await api.close();
      await h.api('/api/v1/vms/seam?force=1', { method: 'DELETE' });
    }
  });
});

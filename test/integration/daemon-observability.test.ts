/**
 * What an operator reads when something goes wrong: volantd's log (JSON lines, levels from the
 * config, request ids shared with the client and the guest, causes under `err`). The VMM is the
 * FakeVmmLauncher TEST DOUBLE; logs are captured in memory (test/support/logs.ts), never printed.
 */

import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { createApiServer } from '../../host/api/server.js';
import { createLogger } from '../../host/log/logger.js';
import type { Orchestrator } from '../../host/orchestrator/orchestrator.js';
import type { PluginImages } from '../../host/orchestrator/plugin-images.js';
import { VolantError } from '../../shared/errors.js';
import { startIngressStack } from '../support/ingress-stack.js';
import { captureLogs, type LogRecord } from '../support/logs.js';
import { startHarness } from '../support/volantd-harness.js';
import { MetricsRegistry } from '../../host/api/metrics.js';

const cleanups: (() => Promise<unknown>)[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

describe('volantd log', () => {
  it('a 500 from the API logs its cause under the request id the client is told', async () => {
    const logs = captureLogs('info');
    const orchestrator = {
      list: () => {
        throw new Error('the store is on fire');
      },
    } as unknown as Orchestrator;
    const api = await createApiServer({
      orchestrator,
      plugins: { list: () => [] } as unknown as PluginImages,
      ipamReport: () => ({}),
      metrics: new MetricsRegistry(),
      version: 'test',
      startedAt: Date.now(),
      log: logs.logger.child({ module: 'api' }),
    });
    cleanups.push(() => api.close());
    const address = await api.listen({ kind: 'tcp', host: '127.0.0.1', port: 0 });

    for (const given of ['trace-42.a/b', undefined, 'has spaces, commas; and is not an id']) {
      const res = await fetch(`http://${address}/api/v1/vms`, { headers: given ? { 'x-request-id': given } : {} });
      assert.equal(res.status, 500);
      const reqId = res.headers.get('x-request-id')!;
      if (given === 'trace-42.a/b') assert.equal(reqId, given, "the client's id is kept");
      else assert.match(reqId, /^[0-9a-f-]{36}$/, 'a missing or unusable id is replaced by a UUID');
      const body = (await res.json()) as { error: { code: string; message: string } };
      assert.equal(body.error.code, 'INTERNAL');
      assert.doesNotMatch(body.error.message, /fire/, 'the cause stays in the log');
      assert.match(body.error.message, new RegExp(`see the volantd log, reqId ${reqId.replace(/[.]/g, '\\.')}`));
      const failed = logs.records().filter((r) => r.reqId === reqId && r.level === 'error');
      assert.equal(failed.length, 1, JSON.stringify(logs.records()));
      const line = failed[0] as LogRecord & { err: { message: string; stack: string }; module: string };
      assert.equal(line.err.message, 'the store is on fire');
      assert.match(line.err.stack, /the store is on fire\n\s+at /);
      assert.equal(line.module, 'api');
      assert.match(line.msg, /^GET \/api\/v1\/vms failed: the store is on fire$/);
    }
  });

  it('ingress failures are logged under the X-Request-Id the client and the guest see', async () => {
    const logs = captureLogs('debug');
    const stack = await startIngressStack({
      log: logs.logger.child({ module: 'ingress' }),
      lookup: (vmName) => {
        if (vmName === 'lost') throw new VolantError('UPSTREAM_UNREACHABLE', 'VM lost runs, but its bridged address has not been seen on the bridge');
        throw new VolantError('NOT_FOUND', `no VM named ${vmName}`);
      },
    });
    cleanups.push(() => stack.close());
    const url = `http://127.0.0.1:${stack.port}/api/v1/vms`;

    let res = await fetch(`${url}/lost/proxy/x`, { headers: { 'x-request-id': 'ing-1' } });
    assert.equal(res.status, 502);
    assert.equal(res.headers.get('x-request-id'), 'ing-1');
    res = await fetch(`${url}/ghost/proxy/x`, { headers: { 'x-request-id': 'ing-2' } });
    assert.equal(res.status, 404);

    const byId = (id: string) => logs.records().find((r) => r.reqId === id) as (LogRecord & { vm: string; module: string; err?: { code: string } }) | undefined;
    const lost = byId('ing-1');
    assert.ok(lost, JSON.stringify(logs.records()));
    assert.deepEqual([lost.level, lost.vm, lost.module, lost.err?.code], ['warn', 'lost', 'ingress', 'UPSTREAM_UNREACHABLE'], 'what volantd could not do is a warning');
    const ghost = byId('ing-2');
    assert.deepEqual([ghost?.level, ghost?.vm, ghost?.code], ['debug', 'ghost', 'NOT_FOUND'], "the client's own mistake is debug");
  });

  it('log.level (here VOLANT_LOG_LEVEL) decides what volantd writes; each line names its module', async () => {
    const lines: Record<'warn' | 'debug', LogRecord[]> = { warn: [], debug: [] };
    for (const level of ['warn', 'debug'] as const) {
      const out: string[] = [];
      const h = await startHarness({ tag: `log-${level}`, env: { VOLANT_LOG_LEVEL: level }, logger: undefined, logDestination: { write: (l: string) => void out.push(l) } });
      assert.equal((await h.api('/api/v1/vms')).status, 200);
      await h.close();
      lines[level] = out.map((l) => JSON.parse(l) as LogRecord);
    }
    assert.deepEqual(
      lines.warn.filter((r) => r.level === 'info' || r.level === 'debug'),
      [],
      'nothing below warn at warn',
    );
    const listening = lines.debug.find((r) => r.module === 'daemon' && /^listening on 127\.0\.0\.1:\d+/.test(r.msg));
    assert.ok(listening, 'start-up lines at info');
    assert.equal(listening.name, 'volantd');
    assert.match(String(listening.time), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    const read = lines.debug.find((r) => r.module === 'api' && r.msg === 'request done');
    assert.ok(read, 'a read request is one debug line');
    assert.deepEqual([read.level, read.method, read.route, read.status], ['debug', 'GET', '/api/v1/vms', 200]);
    assert.equal(typeof read.reqId, 'string');
  });

  it('a logger writes JSON lines with the level by name (the format docs/logging.md documents)', () => {
    const out: string[] = [];
    const log = createLogger({ name: 'volantd', level: 'info' }, { write: (l: string) => void out.push(l) });
    log.child({ module: 'orchestrator', vm: 'web' }).error({ err: new VolantError('VMM_FAILED', 'boom') }, 'create failed');
    log.debug('not written');
    assert.equal(out.length, 1);
    assert.ok(out[0]!.endsWith('\n'));
    const r = JSON.parse(out[0]!);
    assert.deepEqual(
      { level: r.level, name: r.name, module: r.module, vm: r.vm, msg: r.msg, code: r.err.code, type: r.err.type },
      { level: 'error', name: 'volantd', module: 'orchestrator', vm: 'web', msg: 'create failed', code: 'VMM_FAILED', type: 'VolantError' },
    );
    assert.equal(r.pid, process.pid);
  });
});

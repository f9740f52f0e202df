/**
 * kestrel's agent server (the guest side of the ingress) holds the same rules as volantd's front:
 * only HTTP/1.0 and 1.1 request lines with a Host, the HTTP parser's refusals and every error in
 * the one JSON shape, and a workload's malformed response head turned into a 502 instead of an
 * exception. The agent server and workload proxy run here on loopback exactly as in a VM (they
 * are transport-agnostic); the workload is test/support/scripted-guest.ts, which can answer with
 * bytes no HTTP library would send.
 */

import assert from 'node:assert/strict';
import type { Server } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { createAgentServer } from '../../guest/server/agent.js';
import { createWorkloadProxy, type WorkloadProxy } from '../../guest/server/proxy.js';
import { LogRing } from '../../guest/logs/ring.js';
import { parseRawResponse, rawExchange } from '../support/ingress-stack.js';
import { type ScriptedGuest, startScriptedGuest } from '../support/scripted-guest.js';

let workload: ScriptedGuest;
let proxy: WorkloadProxy;
let agent: Server;
let port = 0;

before(async () => {
  workload = await startScriptedGuest();
  proxy = createWorkloadProxy({
    baseUrl: `http://127.0.0.1:${workload.port}`,
    workload: () => ({ state: 'running', pid: 1, restarts: 0, last_exit: null }),
  });
  agent = createAgentServer({ health: () => ({ ok: true }), logs: new LogRing(), proxy });
  await new Promise<void>((r) => agent.listen(0, '127.0.0.1', r));
  port = (agent.address() as { port: number }).port;
});

after(async () => {
  agent.closeAllConnections();
  await new Promise((r) => agent.close(r));
  await proxy.close();
  await workload.close();
});

function assertError(text: string, status: number, code: string): void {
  const r = parseRawResponse(text);
  assert.equal(r.status, status, JSON.stringify(text.slice(0, 200)));
  assert.match(r.headers.get('content-type')?.[0] ?? '', /^application\/json/);
  const body = JSON.parse(r.body.slice(0, Number(r.headers.get('content-length')?.[0] ?? r.body.length))) as { error: { code: string; message: string } };
  assert.equal(body.error.code, code);
  assert.ok(body.error.message.length > 5);
}

describe('kestrel: the request-line rule and the one error shape', () => {
  for (const [name, bytes] of [
    ['HTTP/0.9-style line', 'GET /app\r\n\r\n'],
    ['HTTP/2.0 as text', 'GET /app HTTP/2.0\r\nHost: a\r\n\r\n'],
    ['HTTP/1.1 without Host', 'GET /app HTTP/1.1\r\n\r\n'],
    ['HTTP/0.9-style upgrade', 'GET /ws\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n'],
    ['garbage', '\x01\x02\x03\r\n\r\n'],
  ] as const) {
    it(`${name} → 400 JSON, nothing reaches the workload`, async () => {
      const mark = workload.connections.length;
      assertError(await rawExchange(port, bytes), 400, 'INVALID_ARGUMENT');
      assert.equal(workload.connections.length, mark);
    });
  }

  it('501 for CONNECT, which the agent never serves', async () => {
    assertError(await rawExchange(port, 'CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n'), 501, 'NOT_SUPPORTED');
  });

  it('431 for a head over the limit', async () => {
    assertError(await rawExchange(port, `GET /app HTTP/1.1\r\nHost: a\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`), 431, 'HEADERS_TOO_LARGE');
  });
});

describe('kestrel: a workload’s malformed response head is a 502, not an exception', () => {
  for (const [name, answer] of [
    ['status 999', 'HTTP/1.1 999 Weird\r\ncontent-length: 2\r\n\r\nok'],
    ['Transfer-Encoding gzip', 'HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\nabc'],
    ['204 with Transfer-Encoding', 'HTTP/1.1 204 No Content\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n'],
  ] as const) {
    it(name, async () => {
      const path = `/bad-${name.replace(/[^a-z0-9]+/gi, '-')}`;
      workload.script(path, answer);
      assertError(await rawExchange(port, `GET ${path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n`), 502, 'PROTOCOL_ERROR');
    });
  }

  it('the agent keeps serving after them', async () => {
    workload.script('/ok', 'HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok');
    const r = parseRawResponse(await rawExchange(port, 'GET /ok HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n'));
    assert.equal(r.status, 200);
    assert.equal(r.body, 'ok');
  });
});

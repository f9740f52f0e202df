/**
 * The host's one HTTP client per VM for kestrel (host/agent/client.ts) against kestrel as a real
 * process from source, reached over TCP through the one dialer: the health wait, a followed log
 * stream that `close()` cuts (no socket left in kestrel), and typed errors for what cannot answer.
 */

import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { AgentClient } from '../../host/agent/client.js';
import { isVolantError } from '../../shared/errors.js';
import { eventually } from '../support/eventually.js';
import { freePort, type KestrelRun, startKestrel } from '../support/workload-kestrel.js';

describe('agent client against kestrel', () => {
  let k: KestrelRun;
  let port: number;
  before(async () => {
    port = await freePort();
    k = await startKestrel({ name: 'agent-client', args: ['--listen', `tcp:127.0.0.1:${port}`] });
  });
  after(async () => {
    await k?.stop();
  });

  test('the health wait resolves once the workload runs; a log follower is cut by close(), leaving no socket in kestrel', async () => {
    const client = new AgentClient({ kind: 'tcp', host: '127.0.0.1', port });
    await client.waitForHealthy({ timeoutMs: 20_000 });
    const fds = (): number => readdirSync(`/proc/${k.child.pid}/fd`).length;
    const res = await client.request('/v1/logs?follow=1', { timeoutMs: 200 });
    assert.equal(res.statusCode, 200);
    const during = fds();
    // Well past the head's deadline: the bound is on the head, not on a body that streams on.
    await new Promise<void>((resolve) => setTimeout(resolve, 500));
    const ended = new Promise<string>((resolve) => {
      res.body.on('error', (e: NodeJS.ErrnoException) => resolve(e.name));
      res.body.on('close', () => resolve('closed'));
    });
    assert.equal(res.body.destroyed, false, 'the follower is still streaming');
    await client.close();
    await ended;
    await eventually(
      () => {
        if (fds() >= during) throw new Error(`kestrel holds ${fds()} fds, as many as with the follower (${during})`);
        return true;
      },
      { what: "kestrel closing the follower's connection" },
    );
    await assert.rejects(client.request('/healthz', { timeoutMs: 1000 }), (e: unknown) => isVolantError(e) && e.code === 'UPSTREAM_UNREACHABLE' && /closed/.test(e.message));
  });
});

describe('agent client errors', () => {
  let silent: Server;
  let silentPort: number;
  const held = new Set<Socket>();
  before(async () => {
    // Accepts and never answers: a guest that hangs.
    silent = createServer((s) => held.add(s));
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    silentPort = (silent.address() as { port: number }).port;
  });
  after(async () => {
    for (const s of held) s.destroy();
    await new Promise<void>((r) => silent.close(() => r()));
  });

  test('nothing listening is UPSTREAM_UNREACHABLE, no answer is TIMEOUT, and a probe says false for both', async () => {
    const refused = new AgentClient({ kind: 'tcp', host: '127.0.0.1', port: await freePort() });
    await assert.rejects(refused.request('/healthz', { timeoutMs: 2000 }), (e: unknown) => isVolantError(e) && e.code === 'UPSTREAM_UNREACHABLE' && /ECONNREFUSED/.test(e.message));
    assert.equal(await refused.probeHealth(1000), false);
    await refused.close();
    const hanging = new AgentClient({ kind: 'tcp', host: '127.0.0.1', port: silentPort });
    await assert.rejects(hanging.request('/healthz', { timeoutMs: 200 }), (e: unknown) => isVolantError(e) && e.code === 'TIMEOUT' && /no answer within 200 ms/.test(e.message));
    assert.equal(await hanging.probeHealth(200), false);
    await assert.rejects(hanging.waitForHealthy({ timeoutMs: 500 }), (e: unknown) => isVolantError(e) && e.code === 'TIMEOUT');
    await hanging.close();
  });
});

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { workloadEnv } from '../../guest/workload/env.js';
import { backoffDelayMs, decideAfterExit, RESTART_BACKOFF_INITIAL_MS, RESTART_BACKOFF_MAX_MS, STABLE_RUN_MS } from '../../guest/workload/policy.js';

const crash = { code: 1, signal: null };
const clean = { code: 0, signal: null };
const killed = { code: null, signal: 'SIGKILL' };

describe('restart policy after an exit', () => {
  const cases: [string, Parameters<typeof decideAfterExit>, ReturnType<typeof decideAfterExit>][] = [
    ['default is always: restart after a crash', [undefined, crash, 0, 100], { action: 'restart', delayMs: RESTART_BACKOFF_INITIAL_MS, streak: 1 }],
    ['always restarts a clean exit too', ['always', clean, 0, 100], { action: 'restart', delayMs: RESTART_BACKOFF_INITIAL_MS, streak: 1 }],
    ['on-failure restarts on a signal', ['on-failure', killed, 0, 100], { action: 'restart', delayMs: RESTART_BACKOFF_INITIAL_MS, streak: 1 }],
    ['on-failure restarts on non-zero', ['on-failure', crash, 2, 100], { action: 'restart', delayMs: RESTART_BACKOFF_INITIAL_MS * 4, streak: 3 }],
    ['on-failure leaves a clean exit down', ['on-failure', clean, 0, 100], { action: 'stay-down', reason: 'workload exited cleanly (code 0) and its restart policy is on-failure' }],
    ['exit powers off on success', ['exit', clean, 0, 100], { action: 'power-off', reason: 'workload exited (code 0) and its restart policy is exit' }],
    ['exit powers off on a crash', ['exit', killed, 5, 100], { action: 'power-off', reason: 'workload exited (signal SIGKILL) and its restart policy is exit' }],
    ['quick crashes double the delay', ['always', crash, 3, 10], { action: 'restart', delayMs: RESTART_BACKOFF_INITIAL_MS * 8, streak: 4 }],
    ['the delay is capped', ['always', crash, 40, 10], { action: 'restart', delayMs: RESTART_BACKOFF_MAX_MS, streak: 41 }],
    ['a stable run resets the streak', ['always', crash, 40, STABLE_RUN_MS], { action: 'restart', delayMs: RESTART_BACKOFF_INITIAL_MS, streak: 1 }],
    ['just short of stable keeps it', ['always', crash, 1, STABLE_RUN_MS - 1], { action: 'restart', delayMs: RESTART_BACKOFF_INITIAL_MS * 2, streak: 2 }],
  ];
  for (const [name, args, expected] of cases) test(name, () => assert.deepEqual(decideAfterExit(...args), expected));

  test('backoff is monotonic and never exceeds the cap, even for absurd streaks', () => {
    let prev = 0;
    for (const n of [0, 1, 2, 3, 5, 8, 13, 50, 1000, Number.MAX_SAFE_INTEGER]) {
      const d = backoffDelayMs(n);
      assert.ok(d >= prev && d <= RESTART_BACKOFF_MAX_MS && Number.isFinite(d), `streak ${n} → ${d}`);
      prev = d;
    }
  });
});

describe('workload environment layering', () => {
  const base = { PATH: '/bin', HOME: '/' };
  test('manifest ← volant.env', () => {
    assert.deepEqual(workloadEnv({ base, manifest: { A: 'm', B: 'm' }, vm: { B: 'vm' } }), { PATH: '/bin', HOME: '/', A: 'm', B: 'vm' });
  });
  test('no proxy variables when outbound is not allowed', () => {
    const env = workloadEnv({ base, manifest: { HTTP_PROXY: 'http://mine:1' } });
    assert.equal(env.HTTP_PROXY, 'http://mine:1');
    assert.equal(env.NO_PROXY, undefined);
  });
  test('proxy variables win over manifest and VM env, both spellings, NO_PROXY local', () => {
    const env = workloadEnv({ base, manifest: { HTTP_PROXY: 'http://evil:1', no_proxy: '*' }, vm: { https_proxy: 'http://evil:2' }, proxyUrl: 'http://127.0.0.1:3128' });
    for (const k of ['HTTP_PROXY', 'HTTPS_PROXY', 'http_proxy', 'https_proxy']) assert.equal(env[k], 'http://127.0.0.1:3128', k);
    assert.equal(env.NO_PROXY, 'localhost,127.0.0.1');
    assert.equal(env.no_proxy, 'localhost,127.0.0.1');
  });
});

/**
 * kestrel's workload life cycle as real processes: restart policies, stop signals, per-VM env
 * from the command line, and fatal start-up errors. Outside a VM "power off" is "exit", so the
 * exit code and the console lines are what the tests read.
 */

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { REPO_ROOT, startKestrel, waitForWorkloadState } from '../support/workload-kestrel.js';
import { eventually } from '../support/eventually.js';

const node = process.execPath;

function zombieChildrenOf(parent: number): number[] {
  const out: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (fields[0] === 'Z' && Number(fields[1]) === parent) out.push(Number(entry));
    } catch {
      // gone while we looked
    }
  }
  return out;
}
const b64 = (v: unknown): string => Buffer.from(JSON.stringify(v)).toString('base64url');
const exited = (k: { child: { exitCode: number | null; once(e: 'exit', f: (code: number | null) => void): void } }): Promise<number | null> =>
  k.child.exitCode !== null ? Promise.resolve(k.child.exitCode) : new Promise((r) => k.child.once('exit', r));

function manifestRunning(script: string, extra: Record<string, unknown> = {}, port = 0) {
  return {
    name: 'life',
    version: '1.0.0',
    workload: { type: 'http', entrypoint: [node, '-e', script], http: { port: port || 1 }, ...extra },
  };
}

/** Runs kestrel to completion (for start-up failures): exit code and everything it printed. */
function runToEnd(args: string[]): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    const child = spawn(node, ['--import', 'tsx', path.join(REPO_ROOT, 'guest', 'main.ts'), ...args], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (c) => {
      output += c;
    });
    child.stderr.on('data', (c) => {
      output += c;
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
  });
}

describe('kestrel workload life cycle', () => {
  test('policy exit: the workload exiting ends kestrel with its code', async () => {
    const k = await startKestrel({ name: 'exit', manifest: () => manifestRunning('setTimeout(() => process.exit(7), 300)', { restart: 'exit' }) });
    try {
      assert.equal(await exited(k), 7);
      assert.match(k.output(), /kestrel: workload exited \(code 7\) and its restart policy is exit/);
    } finally {
      await k.stop();
    }
  });

  test('policy on-failure: a clean exit stays down, and the proxy says so', async () => {
    const k = await startKestrel({ name: 'onfail', manifest: () => manifestRunning('setTimeout(() => process.exit(0), 200)', { restart: 'on-failure' }) });
    try {
      const h = (await waitForWorkloadState(k, 'stopped')) as { workload: { restarts: number; last_exit: { code: number } } };
      assert.equal(h.workload.restarts, 0);
      assert.equal(h.workload.last_exit.code, 0);
      const r = await k.get('/x');
      assert.equal(r.status, 502);
      assert.deepEqual(JSON.parse(r.body), { error: { code: 'UPSTREAM_UNREACHABLE', message: 'the workload is stopped' } });
    } finally {
      await k.stop();
    }
  });

  test('a missing entrypoint is retried with backoff and reported as exit 127', async () => {
    const k = await startKestrel({ name: 'enoent', manifest: () => ({ name: 'x', version: '1', workload: { type: 'exec', entrypoint: ['/nonexistent/kestrel-test-binary'] } }) });
    try {
      const h = (await waitForWorkloadState(k, 'backoff', 1)) as { workload: { last_exit: { code: number }; restart_in_ms: number } };
      assert.equal(h.workload.last_exit.code, 127);
      assert.ok(h.workload.restart_in_ms >= 0);
      assert.match(k.output(), /kestrel: workload: cannot start "\/nonexistent\/kestrel-test-binary": ENOENT/);
      const r = await k.get('/anything');
      assert.equal(r.status, 404, 'an exec workload serves no HTTP');
    } finally {
      await k.stop();
    }
  });

  test('SIGTERM stops the workload with SIGTERM first, then kestrel exits 0', async () => {
    const script = "process.on('SIGTERM', () => { console.log('workload got SIGTERM'); process.exit(0); }); console.log('armed'); setInterval(() => {}, 1000);";
    const k = await startKestrel({ name: 'term', manifest: () => manifestRunning(script) });
    try {
      await k.waitForOutput(/^armed$/m);
      await waitForWorkloadState(k, 'running');
      k.child.kill('SIGTERM');
      assert.equal(await exited(k), 0);
      assert.match(k.output(), /workload got SIGTERM/);
      assert.match(k.output(), /kestrel: stopped on SIGTERM/);
    } finally {
      await k.stop();
    }
  });

  test('a workload that ignores SIGTERM is killed after the grace period', async () => {
    const script = "process.on('SIGTERM', () => console.log('ignoring SIGTERM')); console.log('armed'); setInterval(() => {}, 1000);";
    const k = await startKestrel({ name: 'kill', manifest: () => manifestRunning(script) });
    try {
      await k.waitForOutput(/^armed$/m);
      const h = (await waitForWorkloadState(k, 'running')) as { workload: { pid: number } };
      k.child.kill('SIGTERM');
      assert.equal(await exited(k), 0);
      assert.match(k.output(), /ignoring SIGTERM/);
      assert.match(k.output(), /kestrel: workload: exited \(signal SIGKILL\)/);
      assert.throws(() => process.kill(h.workload.pid, 0), /ESRCH/);
    } finally {
      await k.stop();
    }
  });

  test('volant.env from the command line wins over the manifest env', async () => {
    const script = "require('http').createServer((q, s) => s.end(process.env.A + '/' + process.env.B)).listen(Number(process.env.PORT), '127.0.0.1');";
    let port = 0;
    const k = await startKestrel({
      name: 'env',
      manifest: (p) => {
        port = p;
        return { ...manifestRunning(script, { env: { A: 'manifest', B: 'manifest', PORT: String(p) } }, p), health_check: { endpoint: '/' } };
      },
      args: ['--cmdline', `console=ttyS0 volant.mode=vsock volant.name=env-vm volant.env=${b64({ B: 'vm' })}`],
    });
    try {
      await waitForWorkloadState(k, 'running');
      assert.ok(port > 0);
      assert.equal((await k.get('/')).body, 'manifest/vm');
      assert.equal(JSON.parse((await k.get('/healthz')).body).hostname, 'env-vm');
    } finally {
      await k.stop();
    }
  });

  test('--reap-orphans: orphaned grandchildren are reaped, the workload keeps its own exit status', async () => {
    const script = [
      "const cp = require('child_process');",
      "require('http').createServer((q, s) => {",
      "  if (q.url === '/orphans') { cp.spawn('sh', ['-c', '(sleep 0.2) & (sleep 0.3) & exit 0'], { stdio: 'ignore' }); s.end('spawned'); }",
      "  else if (q.url === '/crash') s.end('bye', () => process.exit(5));",
      "  else s.end('ok');",
      "}).listen(Number(process.env.PORT), '127.0.0.1');",
    ].join('\n');
    const k = await startKestrel({
      name: 'reap',
      manifest: (p) => ({ ...manifestRunning(script, { env: { PORT: String(p) } }, p), health_check: { endpoint: '/' } }),
      args: ['--reap-orphans'],
    });
    try {
      await waitForWorkloadState(k, 'running');
      assert.equal((await k.get('/orphans')).body, 'spawned');
      await eventually(async () => (JSON.parse((await k.get('/healthz')).body) as { orphans_reaped: number }).orphans_reaped >= 2, { what: 'both orphans reaped' });
      assert.deepEqual(zombieChildrenOf(k.child.pid!), [], 'no zombie may stay behind');
      assert.equal((await k.get('/crash')).body, 'bye');
      const h = (await waitForWorkloadState(k, 'running', 1)) as { workload: { last_exit: { code: number } } };
      assert.equal(h.workload.last_exit.code, 5, 'the reaper must not steal the exit status of the workload');
    } finally {
      await k.stop();
    }
  });

  describe('start-up errors are one clear fatal line and a non-zero exit', () => {
    const dir = mkdtempSync(path.join(tmpdir(), `kestrel-fatal-${process.pid}-`));
    const bad = path.join(dir, 'bad.json');
    writeFileSync(bad, JSON.stringify({ name: 'x', version: '1', workload: { type: 'http', entrypoint: [] } }));
    const good = path.join(dir, 'good.json');
    writeFileSync(good, JSON.stringify(manifestRunning('setInterval(() => {}, 1000)')));
    const cases: [string, string[], RegExp][] = [
      ['invalid manifest', ['--listen', `unix:${dir}/a.sock`, '--manifest', bad], /kestrel: fatal: manifest .*bad\.json: \/workload\/entrypoint/],
      ['missing manifest', ['--listen', `unix:${dir}/a.sock`, '--manifest', `${dir}/none.json`], /kestrel: fatal: manifest .*none\.json: ENOENT/],
      ['bad listen spec', ['--listen', 'http://0.0.0.0:80', '--manifest', good], /kestrel: fatal: endpoint "http:\/\/0\.0\.0\.0:80": unknown kind/],
      ['no listen spec', ['--manifest', good], /kestrel: fatal: nothing to listen on/],
      ['contradictory command line', ['--listen', `unix:${dir}/a.sock`, '--manifest', good, '--cmdline', 'volant.mode=bridged'], /kestrel: fatal: kernel command line volant.mode: bridged needs ip=/],
      ['unknown flag', ['--listen', `unix:${dir}/a.sock`, '--manifest', good, '--evil'], /kestrel: fatal: Unknown option '--evil'/],
    ];
    for (const [name, args, re] of cases) {
      test(name, async () => {
        const r = await runToEnd(args);
        assert.equal(r.code, 1, r.output);
        assert.match(r.output, re);
        assert.equal((r.output.match(/kestrel: fatal:/g) ?? []).length, 1);
      });
    }
    test('a fatal error after the workload started takes the workload down too', async () => {
      const pidFile = path.join(dir, 'workload.pid');
      const m = path.join(dir, 'pidfile.json');
      writeFileSync(m, JSON.stringify(manifestRunning(`require('fs').writeFileSync(${JSON.stringify(pidFile)}, String(process.pid)); setInterval(() => {}, 1000);`)));
      // Listening fails (no such directory), after the workload has been started.
      const r = await runToEnd(['--listen', `unix:${dir}/missing-dir/a.sock`, '--manifest', m]);
      assert.equal(r.code, 1, r.output);
      assert.match(r.output, /kestrel: fatal: listen E[A-Z]+/);
      const deadline = Date.now() + 5000;
      while (!existsSync(pidFile) && Date.now() < deadline) await new Promise((res) => setTimeout(res, 50));
      if (!existsSync(pidFile)) return; // the workload never got as far as writing: nothing can be left
      const pid = Number(readFileSync(pidFile, 'utf8'));
      await new Promise((res) => setTimeout(res, 300));
      assert.throws(() => process.kill(pid, 0), /ESRCH/, `workload ${pid} outlived kestrel`);
    });
    after(() => rmSync(dir, { recursive: true, force: true }));
  });
});

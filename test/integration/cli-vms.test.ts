/**
 * volar against a running volantd (real store, API on loopback, FakeVmmLauncher TEST DOUBLE for
 * the VMM): exit codes by kind of failure, human output, global --json (results and errors),
 * create's progress from the events feed and --no-wait, the API's error code and message on
 * stderr, token from the state dir. volar runs as a child process from source
 * (host/cli/main.ts, the module bin/volar.js loads once built).
 */

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { EXIT } from '../../host/cli/exit-codes.js';
import { eventually } from '../support/eventually.js';
import { type Harness, startHarness } from '../support/volantd-harness.js';

const CLI = fileURLToPath(new URL('../../host/cli/main.ts', import.meta.url));

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function volar(args: string[], env: Record<string, string> = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', CLI, ...args], {
      env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/root', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c) => (stdout += c));
    child.stderr.on('data', (c) => (stderr += c));
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, stdout, stderr }));
  });
}

describe('volar vms/plugins against volantd', () => {
  let h: Harness;
  let env: Record<string, string>;
  before(async () => {
    // A configured token makes volantd require auth even on loopback.
    h = await startHarness({ tag: 'cli', env: { VOLANT_API_TOKEN: 'cli-test-token-0123456789' } });
    env = { VOLANT_API: h.url, VOLANT_TOKEN: 'cli-test-token-0123456789' };
  });
  after(async () => {
    await h?.close();
  });

  it('installs and lists plugins, creates, lists, gets, stops, starts, logs and deletes a VM', async () => {
    let r = await volar(['plugins', 'install', h.pluginDir('web')], env);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^installed web 1\.0\.0/);

    r = await volar(['plugins', 'list', '--json'], env);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual((JSON.parse(r.stdout) as { name: string }[]).map((p) => p.name), ['web']);

    r = await volar(['vms', 'create', 'c1', '--plugin', 'web', '--env', 'GREETING=hi=there', '--cpus', '2', '--memory', '256'], env);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^state +running$/m);
    assert.match(r.stdout, /^memory +256 MiB$/m);

    r = await volar(['vms', 'list'], env);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^NAME +PLUGIN +STATE +MODE +IP +CID +PID$/m);
    assert.match(r.stdout, /^c1 +web +running +vsock +- +\d+ +\d+$/m);

    r = await volar(['vms', 'get', 'c1', '--json'], env);
    const vm = JSON.parse(r.stdout) as { name: string; state: string; cpus: number };
    assert.deepEqual([vm.name, vm.state, vm.cpus], ['c1', 'running', 2]);

    r = await volar(['vms', 'logs', 'c1'], env);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^serial\| kestrel: booting/m);
    r = await volar(['vms', 'logs', 'c1', '--json'], env);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as { source: string; line: string });
    assert.ok(lines.some((l) => l.source === 'serial' && /^kestrel: booting/.test(l.line)), r.stdout);

    r = await volar(['vms', 'stop', 'c1'], env);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), 'c1 stopped');
    r = await volar(['vms', 'start', 'c1'], env);
    assert.equal(r.stdout.trim(), 'c1 running');

    r = await volar(['vms', 'delete', 'c1'], env);
    assert.equal(r.code, EXIT.CONFLICT, 'a running VM is not deleted without --force');
    assert.match(r.stderr, /^volar: INVALID_STATE: VM c1 is running; stop it first/m);
    r = await volar(['vms', 'delete', 'c1', '--force'], env);
    assert.equal(r.code, 0, r.stderr);

    r = await volar(['plugins', 'remove', 'web'], env);
    assert.equal(r.code, 0, r.stderr);
  });

  it('create shows the state changes and boot phases on stderr, and the VM on stdout', async () => {
    let r = await volar(['plugins', 'install', h.pluginDir('prog')], env);
    assert.equal(r.code, 0, r.stderr);
    r = await volar(['vms', 'create', 'p1', '--plugin', 'prog'], env);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^state +running$/m);
    const lines = r.stderr.split('\n').filter((l) => l.startsWith('volar: p1: '));
    assert.deepEqual(
      lines.filter((l) => /: (creating|running|phase: (launch VMM|wait for kestrel \/healthz))$/.test(l)),
      ['volar: p1: creating', 'volar: p1: phase: launch VMM', 'volar: p1: phase: wait for kestrel /healthz', 'volar: p1: running'],
      r.stderr,
    );
    // Under --json stdout holds the VM alone; the progress is JSON lines on stderr.
    r = await volar(['--json', 'vms', 'create', 'p2', '--plugin', 'prog'], env);
    assert.equal(r.code, 0, r.stderr);
    assert.equal((JSON.parse(r.stdout) as { state: string }).state, 'running');
    const events = r.stderr.trim().split('\n').map((l) => JSON.parse(l) as { type: string; vm: string; state?: string; phase?: string });
    assert.ok(events.some((e) => e.type === 'vm.phase' && e.phase === 'launch VMM' && e.vm === 'p2'), r.stderr);
    assert.equal(events.at(-1)?.state, 'running');
  });

  it('create --no-wait returns once the VM is recorded; the boot goes on', async () => {
    let r = await volar(['plugins', 'install', h.pluginDir('nowait')], env);
    assert.equal(r.code, 0, r.stderr);
    r = await volar(['vms', 'create', 'n1', '--plugin', 'nowait', '--no-wait', '--json'], env);
    assert.equal(r.code, 0, r.stderr);
    assert.equal((JSON.parse(r.stdout) as { state: string }).state, 'creating');
    assert.equal(r.stderr, '', 'no progress is shown without waiting');
    await eventually(async () => (await h.api('/api/v1/vms/n1').then((x) => x.json() as Promise<{ state: string }>)).state === 'running', { what: 'n1 running' });
    // A request volantd refuses before recording anything still fails, with its exit code.
    r = await volar(['vms', 'create', 'n1', '--plugin', 'nowait', '--no-wait'], env);
    assert.equal(r.code, EXIT.CONFLICT);
    assert.match(r.stderr, /^volar: NAME_TAKEN: /m);
  });

  it('exits with the status of the kind of failure, and the API code and message', async () => {
    let r = await volar(['vms', 'get', 'ghost'], env);
    assert.equal(r.code, EXIT.NOT_FOUND);
    assert.match(r.stderr, /^volar: NOT_FOUND: no VM named "ghost"/m);

    r = await volar(['vms', 'create', 'x', '--plugin', 'web', '--cpus', 'many'], env);
    assert.equal(r.code, EXIT.USAGE);
    assert.match(r.stderr, /VALIDATION_FAILED: .*\/cpus/);

    r = await volar(['vms', 'create', 'x', '--plugin', 'web', '--env', 'NOEQUALS'], env);
    assert.equal(r.code, EXIT.USAGE);
    assert.match(r.stderr, /INVALID_ARGUMENT: --env "NOEQUALS": use NAME=VALUE/);

    r = await volar(['vms', 'frobnicate'], env);
    assert.equal(r.code, EXIT.USAGE);
    assert.match(r.stderr, /unknown command 'frobnicate'/);
  });

  it('under --json an error is one JSON document on stdout, whatever its kind', async () => {
    const cases: [string[], number, string][] = [
      [['vms', 'get', 'ghost', '--json'], EXIT.NOT_FOUND, 'NOT_FOUND'],
      [['--json', 'vms', 'get'], EXIT.USAGE, 'INVALID_ARGUMENT'],
      [['vms', 'list', '--json', '--api', 'http://127.0.0.1:1'], EXIT.UNREACHABLE, 'UPSTREAM_UNREACHABLE'],
    ];
    for (const [args, exit, code] of cases) {
      const r = await volar(args, env);
      assert.equal(r.code, exit, args.join(' '));
      const body = JSON.parse(r.stdout) as { error: { code: string; message: string } };
      assert.equal(body.error.code, code, args.join(' '));
      assert.ok(body.error.message.length > 0);
    }
  });

  it('--version prints the package version', async () => {
    const r = await volar(['--version']);
    assert.equal(r.code, 0);
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
    assert.equal(r.stdout.trim(), pkg.version);
  });

  it('without a token, or with a wrong one, the API refuses', async () => {
    let r = await volar(['vms', 'list'], { VOLANT_API: h.url });
    assert.equal(r.code, EXIT.DENIED);
    assert.match(r.stderr, /^volar: UNAUTHORIZED:/m);

    r = await volar(['vms', 'list', '--token', 'wrong-token-wrong-token'], { VOLANT_API: h.url });
    assert.match(r.stderr, /UNAUTHORIZED: the bearer token is not valid/);
  });

  it('an unreachable daemon is a clear error', async () => {
    const r = await volar(['vms', 'list'], { VOLANT_API: 'http://127.0.0.1:1' });
    assert.equal(r.code, EXIT.UNREACHABLE);
    assert.match(r.stderr, /UPSTREAM_UNREACHABLE: cannot reach volantd at http:\/\/127\.0\.0\.1:1: ECONNREFUSED/);
  });
});

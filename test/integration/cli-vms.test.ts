/**
 * volar against a running volantd (real store, API on loopback, FakeVmmLauncher TEST DOUBLE for
 * the VMM): exit codes, human output, --json, the API's error code and message on stderr, token
 * from the state dir. volar runs as a child process from source (host/cli/main.ts, the module
 * bin/volar.js loads once built).
 */

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
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

    r = await volar(['vms', 'stop', 'c1'], env);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), 'c1 stopped');
    r = await volar(['vms', 'start', 'c1'], env);
    assert.equal(r.stdout.trim(), 'c1 running');

    r = await volar(['vms', 'delete', 'c1'], env);
    assert.notEqual(r.code, 0, 'a running VM is not deleted without --force');
    assert.match(r.stderr, /^volar: INVALID_STATE: VM c1 is running; stop it first/m);
    r = await volar(['vms', 'delete', 'c1', '--force'], env);
    assert.equal(r.code, 0, r.stderr);

    r = await volar(['plugins', 'remove', 'web'], env);
    assert.equal(r.code, 0, r.stderr);
  });

  it('exits non-zero with the API code and message', async () => {
    let r = await volar(['vms', 'get', 'ghost'], env);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^volar: NOT_FOUND: no VM named "ghost"/m);

    r = await volar(['vms', 'create', 'x', '--plugin', 'web', '--cpus', 'many'], env);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /VALIDATION_FAILED: .*\/cpus/);

    r = await volar(['vms', 'create', 'x', '--plugin', 'web', '--env', 'NOEQUALS'], env);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /INVALID_ARGUMENT: --env "NOEQUALS": use NAME=VALUE/);
  });

  it('without a token, or with a wrong one, the API refuses', async () => {
    let r = await volar(['vms', 'list'], { VOLANT_API: h.url });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^volar: UNAUTHORIZED:/m);

    r = await volar(['vms', 'list', '--token', 'wrong-token-wrong-token'], { VOLANT_API: h.url });
    assert.match(r.stderr, /UNAUTHORIZED: the bearer token is not valid/);
  });

  it('an unreachable daemon is a clear error', async () => {
    const r = await volar(['vms', 'list'], { VOLANT_API: 'http://127.0.0.1:1' });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /UPSTREAM_UNREACHABLE: cannot reach volantd at http:\/\/127\.0\.0\.1:1: ECONNREFUSED/);
  });
});

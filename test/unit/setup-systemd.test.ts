/**
 * `volar setup` and the volantd unit: where systemd runs, the unit is written and enabled (and
 * started once a kernel is there); `--no-systemd` skips it; without systemd nothing is enabled.
 * The network manager is the no-op one and systemctl goes to a recording runner, so this host's
 * network and init system are never touched.
 */

import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { runSetup, type SetupOptions } from '../../host/cli/commands/setup.js';
import { NoopNetworkManager } from '../../host/network/manager.js';
import { DryRunRunner } from '../../host/network/runner.js';

const dir = mkdtempSync(join(tmpdir(), `volant-setup-systemd-${process.pid}-`));
after(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;

async function setup(o: Partial<SetupOptions>, systemdRunning: boolean) {
  const root = join(dir, `r${n++}`);
  const runner = new DryRunRunner();
  const lines: string[] = [];
  const units = join(root, 'units');
  const result = await runSetup({ config: '/dev/null', stateDir: join(root, 'state'), unitDir: units, ...o }, (l) => lines.push(l), {
    runner,
    network: new NoopNetworkManager(),
    systemd: { inCharge: systemdRunning, unitPath: [units] },
  });
  return { root, result, commands: runner.commands.map((c) => c.join(' ')), lines, unit: join(root, 'units', 'volantd.service') };
}

describe('volar setup and the systemd unit', () => {
  test('where systemd runs: the unit is written and enabled; without a kernel it is not started yet', async () => {
    const r = await setup({}, true);
    assert.deepEqual(r.commands, ['systemctl daemon-reload', 'systemctl enable volantd.service']);
    assert.match(readFileSync(r.unit, 'utf8'), /^ExecStart=\S+ \S+\/bin\/volantd\.js --config \/dev\/null --state-dir \S+\/state$/m);
    assert.deepEqual([r.result.systemd.enabled, r.result.systemd.started], [true, false]);
    assert.ok(r.lines.some((l) => /volar kernel fetch/.test(l)), r.lines.join('\n'));
  });

  test('with a fetched kernel it is also started', async () => {
    const root = join(dir, `r${n}`);
    const kernels = join(root, 'state', 'kernels');
    mkdirSync(join(kernels, 'mods'), { recursive: true });
    writeFileSync(join(kernels, 'vmlinuz'), 'k');
    writeFileSync(join(kernels, 'current.json'), JSON.stringify({ version: '6.1.0-1-cloud-amd64', vmlinuz: join(kernels, 'vmlinuz'), modulesDir: join(kernels, 'mods') }));
    const r = await setup({}, true);
    assert.deepEqual(r.commands, ['systemctl daemon-reload', 'systemctl enable --now volantd.service']);
    assert.equal(r.result.systemd.started, true);
  });

  test('--no-systemd: no unit, no systemctl', async () => {
    const r = await setup({ systemd: false }, true);
    assert.deepEqual(r.commands, []);
    assert.equal(existsSync(r.unit), false);
  });

  test('without systemd: nothing is installed, and it says so; --systemd still writes the unit', async () => {
    const r = await setup({}, false);
    assert.deepEqual(r.commands, []);
    assert.equal(existsSync(r.unit), false);
    assert.ok(r.lines.some((l) => /systemd is not in charge here/.test(l)));
    const forced = await setup({ systemd: true }, false);
    assert.deepEqual(forced.commands, []);
    assert.ok(existsSync(forced.unit));
    assert.equal(forced.result.systemd.enabled, false);
  });

  test('a unit folder systemd does not load from: written, not enabled', async () => {
    const r = await setup({ unitDir: join(dir, 'elsewhere') }, true);
    assert.deepEqual(r.commands, []);
    assert.ok(existsSync(join(dir, 'elsewhere', 'volantd.service')));
    assert.match(r.result.systemd.note ?? '', /does not load units from/);
  });
});

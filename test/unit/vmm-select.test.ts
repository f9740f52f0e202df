import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { assertBootFiles } from '../../host/vmm/run-dir.js';
import { chooseVmm, findOnPath, selectLauncher, type VmmAvailability, type VmmPreference } from '../../host/vmm/select.js';
import { VolantError } from '../../shared/errors.js';

const all: VmmAvailability = { cloudHypervisor: true, qemu: true, kvm: true };

describe('chooseVmm', () => {
  const table: [VmmPreference, Partial<VmmAvailability>, string][] = [
    ['auto', {}, 'cloud-hypervisor'],
    ['auto', { cloudHypervisor: false }, 'qemu'],
    ['auto', { kvm: false }, 'qemu'],
    ['auto', { qemu: false }, 'cloud-hypervisor'],
    ['auto', { qemu: false, cloudHypervisor: false }, 'NOT_FOUND'],
    ['auto', { qemu: false, kvm: false }, 'NOT_FOUND'],
    ['qemu', {}, 'qemu'],
    ['qemu', { qemu: false }, 'NOT_FOUND'],
    ['cloud-hypervisor', { qemu: false }, 'cloud-hypervisor'],
    ['cloud-hypervisor', { cloudHypervisor: false }, 'NOT_FOUND'],
    ['cloud-hypervisor', { kvm: false }, 'NOT_SUPPORTED'],
    ['firecracker' as VmmPreference, {}, 'INVALID_ARGUMENT'],
  ];
  for (const [prefer, over, expect] of table) {
    it(`${prefer} with ${JSON.stringify(over)} → ${expect}`, () => {
      const available = { ...all, ...over };
      if (expect === 'qemu' || expect === 'cloud-hypervisor') assert.equal(chooseVmm(prefer, available), expect);
      else assert.throws(() => chooseVmm(prefer, available), (e: unknown) => e instanceof VolantError && e.code === expect && e.message.length > 20);
    });
  }
});

describe('PATH lookup and boot files (real files in a temp dir)', () => {
  const dir = mkdtempSync(join(tmpdir(), `volant-vmm-select-${process.pid}-`));
  after(() => rmSync(dir, { recursive: true, force: true }));
  mkdirSync(join(dir, 'bin'));
  mkdirSync(join(dir, 'other'));
  writeFileSync(join(dir, 'bin', 'qemu-system-x86_64'), '#!/bin/sh\n');
  chmodSync(join(dir, 'bin', 'qemu-system-x86_64'), 0o755);
  writeFileSync(join(dir, 'other', 'cloud-hypervisor'), 'not executable');
  mkdirSync(join(dir, 'other', 'qemu-dir'));

  it('finds executables only, in PATH order, ignoring relative entries', () => {
    const path = ['relative', join(dir, 'other'), join(dir, 'bin')].join(':');
    assert.equal(findOnPath('qemu-system-x86_64', path), join(dir, 'bin', 'qemu-system-x86_64'));
    assert.equal(findOnPath('cloud-hypervisor', path), undefined, 'a file without the execute bit is not a VMM');
    assert.equal(findOnPath('qemu-dir', path), undefined, 'a directory is not a VMM');
  });

  it('selectLauncher: QEMU when it is the only VMM; a clear error when there is none', () => {
    const kernel = join(dir, 'vmlinuz');
    writeFileSync(kernel, 'k');
    assert.equal(selectLauncher({ prefer: 'auto', accel: 'tcg', kernelPath: kernel, searchPath: join(dir, 'bin') }).kind, 'qemu');
    assert.throws(() => selectLauncher({ prefer: 'auto', accel: 'tcg', searchPath: join(dir, 'other') }), (e: unknown) => e instanceof VolantError && e.code === 'NOT_FOUND' && /no VMM found/.test(e.message));
  });

  it('a missing kernel or initramfs is NOT_FOUND naming the path and the fix', () => {
    assert.throws(
      () => selectLauncher({ prefer: 'auto', accel: 'tcg', kernelPath: join(dir, 'nope'), searchPath: join(dir, 'bin') }),
      (e: unknown) => e instanceof VolantError && e.code === 'NOT_FOUND' && e.message.includes(join(dir, 'nope')) && /volar kernel fetch/.test(e.message),
    );
    assert.throws(() => assertBootFiles({ kernelPath: dir }), /kernel .* is not a file/);
    writeFileSync(join(dir, 'k2'), 'k');
    assert.throws(() => assertBootFiles({ kernelPath: join(dir, 'k2'), initramfsPath: join(dir, 'none.img') }), /initramfs .*volar plugins build/);
  });
});

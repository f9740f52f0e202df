import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { needsIPAllocation, needsTapDevice, type PluginManifest, resolveNetworkConfig, type VmConfig } from '../../shared/index.js';

describe('needsTapDevice / needsIPAllocation', () => {
  const cases: [string | undefined, boolean, boolean][] = [
    ['bridged', true, true],
    ['dhcp', true, false],
    ['vsock', false, false],
    [undefined, true, true],
  ];
  for (const [mode, tap, ip] of cases) {
    test(`mode ${mode ?? '(empty)'}`, () => {
      const cfg = mode === undefined ? {} : { mode: mode as 'bridged' };
      assert.equal(needsTapDevice(cfg), tap);
      assert.equal(needsIPAllocation(cfg), ip);
    });
  }
  test('an absent config means bridged', () => {
    assert.equal(needsTapDevice(undefined), true);
    assert.equal(needsIPAllocation(undefined), true);
  });
});

describe('resolveNetworkConfig: the VM config wins', () => {
  const manifest: Pick<PluginManifest, 'network'> = {
    network: { mode: 'vsock', subnet: '10.1.0.0/24', proxy: { allow_outbound: true, allowed_domains: ['a.example'] } },
  };
  test('manifest alone', () => {
    assert.deepEqual(resolveNetworkConfig(manifest), { mode: 'vsock', subnet: '10.1.0.0/24', allowOutbound: true, allowedDomains: ['a.example'] });
  });
  test('VM override of mode keeps the rest', () => {
    const vm: Pick<VmConfig, 'network'> = { network: { mode: 'bridged' } };
    assert.deepEqual(resolveNetworkConfig(manifest, vm), { mode: 'bridged', subnet: '10.1.0.0/24', allowOutbound: true, allowedDomains: ['a.example'] });
  });
  test('VM override of proxy fields field by field', () => {
    const vm: Pick<VmConfig, 'network'> = { network: { proxy: { allowed_domains: ['b.example'] } } };
    const r = resolveNetworkConfig(manifest, vm);
    assert.equal(r.allowOutbound, true);
    assert.deepEqual(r.allowedDomains, ['b.example']);
    const off = resolveNetworkConfig(manifest, { network: { proxy: { allow_outbound: false } } });
    assert.equal(off.allowOutbound, false);
  });
  test('nothing anywhere: bridged defaults, no outbound', () => {
    const r = resolveNetworkConfig(undefined, undefined);
    assert.equal(needsIPAllocation(r), true);
    assert.deepEqual(r, { allowOutbound: false, allowedDomains: [] });
  });
});

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { assertVmName, guestHostname, isValidVmName, macAddress, tapName, VolantError } from '../../shared/index.js';

describe('VM names', () => {
  const good = ['web', 'a', 'A1', 'web-1', 'db_primary', '0', 'x'.repeat(63)];
  const bad: unknown[] = ['', '-web', '_x', 'x'.repeat(64), 'a/b', '../etc', 'a b', 'a;rm -rf', '$(id)', 'a`b`', 'é', 'web.1', 'a\nb', 'a\u0000', null, 42, {}, ['web']];
  for (const n of good) test(`accepts ${JSON.stringify(n)}`, () => assert.equal(isValidVmName(n), true));
  for (const n of bad) {
    test(`rejects ${JSON.stringify(n)}`, () => {
      assert.equal(isValidVmName(n), false);
      assert.throws(() => assertVmName(n), (e: unknown) => e instanceof VolantError && e.code === 'INVALID_ARGUMENT' && /letters, digits/.test(e.message));
    });
  }
});

describe('tapName', () => {
  test('fits IFNAMSIZ, uses only [a-z0-9-], is stable', () => {
    for (const n of ['web', 'x'.repeat(63), 'A_B-c_D', '0', 'Web']) {
      const t = tapName(n);
      assert.ok(Buffer.byteLength(t) <= 15, `${t} is ${t.length} bytes`);
      assert.match(t, /^[a-z0-9-]+$/);
      assert.equal(tapName(n), t);
    }
  });
  test('names differing only in case or punctuation get different taps', () => {
    const groups = [
      ['web', 'Web', 'WEB', 'w-eb', 'we_b', 'web-', 'web_'],
      ['a-b', 'a_b', 'ab', 'A-B'],
    ];
    for (const g of groups) assert.equal(new Set(g.map(tapName)).size, g.length, g.join(','));
  });
  test('10,000 distinct names give 10,000 distinct taps', () => {
    const taps = new Set<string>();
    for (let i = 0; i < 10_000; i++) taps.add(tapName(`vm-${i}`));
    assert.equal(taps.size, 10_000);
  });
  test('refuses invalid names before deriving anything', () => {
    assert.throws(() => tapName('a/b'), VolantError);
  });
});

describe('macAddress', () => {
  test('stable, locally administered, unicast, distinct', () => {
    const seen = new Set<string>();
    for (const n of ['web', 'Web', 'db', 'x'.repeat(63)]) {
      const m = macAddress(n);
      assert.match(m, /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/);
      const first = Number.parseInt(m.slice(0, 2), 16);
      assert.equal(first & 0x02, 0x02, 'locally administered bit');
      assert.equal(first & 0x01, 0, 'unicast bit');
      assert.equal(macAddress(n), m);
      seen.add(m);
    }
    assert.equal(seen.size, 4);
  });
});

describe('guestHostname', () => {
  test('a valid DNS label', () => {
    assert.equal(guestHostname('Web_1'), 'web-1');
    assert.equal(guestHostname('a_'), 'a');
    assert.equal(guestHostname('x'.repeat(63)), 'x'.repeat(63));
  });
});

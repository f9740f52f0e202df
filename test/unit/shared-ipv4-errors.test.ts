import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  cidrContains,
  ErrorCodes,
  formatCidr,
  formatIPv4,
  httpStatusFor,
  parseCidr,
  parseIPv4,
  prefixFromMask,
  tryParseCidr,
  tryParseIPv4,
  ValidationError,
  VolantError,
  validateManifest,
} from '../../shared/index.js';

describe('strict dotted-quad IPv4', () => {
  const good: [string, number][] = [
    ['0.0.0.0', 0],
    ['255.255.255.255', 0xffffffff],
    ['192.168.127.1', 0xc0a87f01],
    ['10.0.0.9', 0x0a000009],
  ];
  for (const [t, n] of good) {
    test(t, () => {
      assert.equal(parseIPv4(t), n);
      assert.equal(formatIPv4(n), t);
    });
  }
  const bad = ['', '1.2.3', '1.2.3.4.5', '256.0.0.1', '01.2.3.4', '0x1.2.3.4', '1.2.3.-4', ' 1.2.3.4', '1.2.3.4 ', '1.2.3.4\n', '2130706433', '1..3.4', '１.2.3.4', '1.2.3.4/24'];
  for (const t of bad) {
    test(`rejects ${JSON.stringify(t)}`, () => {
      assert.equal(tryParseIPv4(t), undefined);
      assert.throws(() => parseIPv4(t), (e: unknown) => e instanceof VolantError && e.code === 'INVALID_ARGUMENT');
    });
  }
});

describe('CIDR', () => {
  test('parse, contain, format', () => {
    const c = parseCidr('192.168.127.1/24');
    assert.equal(formatIPv4(c.address), '192.168.127.1');
    assert.equal(formatIPv4(c.network), '192.168.127.0');
    assert.equal(formatIPv4(c.broadcast), '192.168.127.255');
    assert.equal(formatCidr(c), '192.168.127.0/24');
    assert.equal(cidrContains(c, parseIPv4('192.168.127.254')), true);
    assert.equal(cidrContains(c, parseIPv4('192.168.128.1')), false);
    const big = parseCidr('10.200.0.0/16');
    assert.equal(formatIPv4(big.broadcast), '10.200.255.255');
    assert.equal(parseCidr('0.0.0.0/0').mask, 0);
    assert.equal(parseCidr('1.2.3.4/32').broadcast, parseIPv4('1.2.3.4'));
  });
  for (const t of ['10.0.0.0', '10.0.0.0/', '10.0.0.0/33', '10.0.0.0/-1', '10.0.0.0/08', 'x/24', '10.0.0.0/24/1']) {
    test(`rejects ${t}`, () => {
      assert.equal(tryParseCidr(t), undefined);
      assert.throws(() => parseCidr(t), VolantError);
    });
  }
  test('netmask to prefix', () => {
    assert.equal(prefixFromMask(parseIPv4('255.255.255.0')), 24);
    assert.equal(prefixFromMask(parseIPv4('255.255.255.255')), 32);
    assert.equal(prefixFromMask(0), 0);
    assert.equal(prefixFromMask(parseIPv4('255.0.255.0')), undefined);
  });
});

describe('errors', () => {
  test('every code has an HTTP status', () => {
    for (const c of ErrorCodes) assert.ok(httpStatusFor(c) >= 400 && httpStatusFor(c) < 600, c);
    assert.equal(httpStatusFor('NOT_FOUND'), 404);
    assert.equal(httpStatusFor('POOL_EXHAUSTED'), 503);
    assert.equal(httpStatusFor('NAME_TAKEN'), 409);
    assert.equal(httpStatusFor('VALIDATION_FAILED'), 400);
  });
  test('serialises as the API error body', () => {
    const e = new VolantError('IP_TAKEN', '192.168.127.100 is leased to web', { ip: '192.168.127.100' });
    assert.deepEqual(JSON.parse(JSON.stringify(e)), { code: 'IP_TAKEN', message: '192.168.127.100 is leased to web', details: { ip: '192.168.127.100' } });
  });
  test('ValidationError summarises and keeps every problem', () => {
    const r = validateManifest({ name: '!', version: '1', workload: { type: 'http', entrypoint: ['x'], http: { port: 1 }, env: { 'A=B': '1' } } });
    assert.equal(r.ok, false);
    if (!r.ok) {
      const e = new ValidationError('plugin manifest', r.problems);
      assert.equal(e.code, 'VALIDATION_FAILED');
      assert.match(e.message, /^invalid plugin manifest: \/name/);
      assert.match(e.message, /and 1 more/);
      assert.ok(r.problems.some((p) => p.path === '/workload/env/A=B' && /must match/.test(p.message)), JSON.stringify(r.problems));
    }
  });
});

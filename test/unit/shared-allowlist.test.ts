import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Allowlist, canonicalIpLiteral, normalizeHostName, VolantError } from '../../shared/index.js';

const list = new Allowlist([
  'api.example.com',
  '*.cdn.example.net',
  '.squid.example.org',
  'pinned.example.com:443',
  'bücher.example',
  '203.0.113.7',
  '[2001:db8::1]:443',
]);

describe('Allowlist.allows', () => {
  const cases: [string, number | undefined, boolean][] = [
    ['api.example.com', 443, true],
    ['api.example.com', undefined, true],
    ['API.Example.COM', 80, true],
    ['api.example.com.', 443, true],
    ['api.example.com..', 443, false],
    ['x.api.example.com', 443, false],
    ['example.com', 443, false],
    ['api.example.com.evil.test', 443, false],
    ['evilapi.example.com', 443, false],
    ['img.cdn.example.net', 443, true],
    ['a.b.cdn.example.net', 443, true],
    ['cdn.example.net', 443, false],
    ['xcdn.example.net', 443, false],
    ['squid.example.org', 80, true],
    ['deep.sub.squid.example.org', 80, true],
    ['pinned.example.com', 443, true],
    ['pinned.example.com', 80, false],
    ['pinned.example.com', undefined, false],
    ['bücher.example', 443, true],
    ['BÜCHER.example', 443, true],
    ['xn--bcher-kva.example', 443, true],
    ['203.0.113.7', 80, true],
    ['203.0.113.8', 80, false],
    ['[2001:db8::1]', 443, true],
    ['[2001:db8:0:0:0:0:0:1]', 443, true],
    ['[2001:db8::1]', 80, false],
    ['allowed.test@api.example.com', 443, false],
    ['api.example.com@evil.test', 443, false],
    ['api.example.com/path', 443, false],
    ['api.example.com\\evil.test', 443, false],
    ['api.example.com%2eevil.test', 443, false],
    ['api.example.com ', 443, false],
    [' api.example.com', 443, false],
    ['api.example.com\r\nHost: evil', 443, false],
    ['api.example.com\u0000', 443, false],
    ['аpi.example.com', 443, false],
    ['', 443, false],
    ['*.cdn.example.net', 443, false],
    ['api.example.com', 0, false],
    ['api.example.com', 70000, false],
    ['api.example.com', 1.5, false],
    ['a'.repeat(300), 443, false],
    ['127.0.0.1', 80, false],
    ['localhost', 80, false],
  ];
  for (const [host, port, expected] of cases) {
    test(`${JSON.stringify(host)}:${port} → ${expected}`, () => {
      assert.equal(list.allows(host, port), expected);
    });
  }

  test('a denial says why; an allow names its rule', () => {
    const d = list.decide('evil.test', 443);
    assert.equal(d.allowed, false);
    assert.match(d.reason!, /matches no allowlist rule/);
    const a = list.decide('img.cdn.example.net', 443);
    assert.deepEqual(a, { allowed: true, rule: '*.cdn.example.net' });
    assert.equal(list.decide('pinned.example.com', 443).rule, 'pinned.example.com:443');
  });
});

describe('IP literals never match name rules', () => {
  const names = new Allowlist(['localhost', '*.example.com', 'example.com']);
  const literals = ['127.0.0.1', '2130706433', '0177.0.0.1', '0x7f.1', '0x7f000001', '127.1', '017700000001', '[::1]', '[::ffff:127.0.0.1]', '[::ffff:7f00:1]', '[64:ff9b::7f00:1]', '10.0.0.1', '0'];
  for (const host of literals) {
    test(host, () => {
      const d = names.decide(host, 80);
      assert.equal(d.allowed, false);
      assert.match(d.reason!, /IP literal/);
    });
  }
  test('canonical forms', () => {
    assert.equal(canonicalIpLiteral('2130706433'), '127.0.0.1');
    assert.equal(canonicalIpLiteral('0x7f.1'), '127.0.0.1');
    assert.equal(canonicalIpLiteral('0177.0.0.1'), '127.0.0.1');
    assert.equal(canonicalIpLiteral('[::FFFF:127.0.0.1]'), '::ffff:7f00:1');
    assert.equal(canonicalIpLiteral('example.com'), undefined);
    assert.equal(canonicalIpLiteral('1.example'), undefined);
    assert.equal(canonicalIpLiteral('deadbeef.com'), undefined);
  });
  test('an IP rule allows exactly that address in any notation', () => {
    const ips = new Allowlist(['127.0.0.1:8080']);
    assert.equal(ips.allows('2130706433', 8080), true);
    assert.equal(ips.allows('127.0.0.1', 8081), false);
  });
});

describe('invalid rules are rejected at construction, naming the rule', () => {
  const bad = ['', '   ', 'api.*.example.com', '*example.com', 'example.*', '*', '*.com', '.com', 'http://example.com', 'example.com/path', 'user@example.com', 'example.com:0', 'example.com:65536', 'example.com:http', 'exa mple.com', '-bad.example.com', 'bad-.example.com', `${'a'.repeat(64)}.com`, '0x7f.1', '2130706433', 'example..com', '*.*.example.com'];
  for (const rule of bad) {
    test(JSON.stringify(rule), () => {
      assert.throws(
        () => new Allowlist(['ok.example.com', rule]),
        (e: unknown) => e instanceof VolantError && e.code === 'INVALID_ARGUMENT' && e.message.includes('allowlist rule'),
      );
    });
  }
  test('non-string rules and non-array input', () => {
    assert.throws(() => new Allowlist([42 as unknown as string]), VolantError);
    assert.throws(() => new Allowlist('example.com' as unknown as string[]), VolantError);
  });
  test('check() reports every invalid rule with its index', () => {
    assert.deepEqual(
      Allowlist.check(['ok.com', 'bad rule', '*.com']).map((p) => p.index),
      [1, 2],
    );
  });
});

describe('normalizeHostName', () => {
  const cases: [string, string | undefined][] = [
    ['Example.COM.', 'example.com'],
    ['bücher.example', 'xn--bcher-kva.example'],
    ['ｅｘａｍｐｌｅ．ｃｏｍ', 'example.com'],
    ['a@b', undefined],
    ['a b', undefined],
    ['.', undefined],
    ['a..b', undefined],
    ['a_b.com', undefined],
  ];
  for (const [input, out] of cases) test(JSON.stringify(input), () => assert.equal(normalizeHostName(input), out));
});

describe('scales by labels, not rules', () => {
  test('10,000 rules build and decide correctly', () => {
    const rules = Array.from({ length: 10_000 }, (_, i) => (i % 2 ? `host${i}.example.com` : `*.zone${i}.example.net`));
    const big = new Allowlist(rules);
    assert.equal(big.size, 10_000);
    assert.equal(big.allows('host9999.example.com', 443), true);
    assert.equal(big.allows('a.zone9998.example.net', 443), true);
    assert.equal(big.allows('host9998.example.com', 443), false);
  });
});

describe('rule options', () => {
  const withOptions = new Allowlist(['legacy.example.com:8443 sni=optional', '*.old.example sni=optional', 'plain.example.com', '  spaced.example   sni=optional  ']);
  test('an option rides on the decision of the rule that allowed the target', () => {
    assert.deepEqual([...(withOptions.decide('legacy.example.com', 8443).options ?? [])], ['sni=optional']);
    assert.deepEqual([...(withOptions.decide('a.old.example', 443).options ?? [])], ['sni=optional']);
    assert.deepEqual([...(withOptions.decide('spaced.example', 443).options ?? [])], ['sni=optional']);
    assert.equal(withOptions.decide('plain.example.com', 443).options, undefined);
    assert.equal(withOptions.decide('legacy.example.com', 8443).rule, 'legacy.example.com:8443 sni=optional');
    assert.equal(withOptions.allows('legacy.example.com', 8443), true);
    assert.equal(withOptions.allows('legacy.example.com', 443), false);
  });
  test('options of identical targets add up', () => {
    const twice = new Allowlist(['dup.example', 'dup.example sni=optional']);
    assert.deepEqual([...(twice.decide('dup.example', 443).options ?? [])], ['sni=optional']);
  });
  test('unknown options and options that smuggle a second target are refused, naming the allowed ones', () => {
    for (const bad of ['a.example sni=off', 'a.example sni-optional', 'a.example b.example', 'a.example\nsni=optional']) {
      assert.throws(() => new Allowlist([bad]), (e: unknown) => e instanceof VolantError && e.code === 'INVALID_ARGUMENT', bad);
    }
    assert.match(Allowlist.check(['a.example sni=off'])[0]!.message, /options: sni=optional/);
  });
});

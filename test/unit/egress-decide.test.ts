import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Allowlist } from '../../shared/allowlist.js';
import { AddressPolicy } from '../../host/egress/address-policy.js';
import { type AllowedTarget, decideAddresses, decideAllowlist, decideTunnelPayload, denialError, ruleNamesPort } from '../../host/egress/decide.js';
import { errorBody } from '../../shared/http-error-response.js';

const allowlist = new Allowlist(['api.example.com', '*.cdn.example.com', 'db.example.com:5432', '203.0.113.7', 'xn--bcher-kva.example', 'legacy.example.com:8443 sni=optional']);

describe('decideAllowlist', () => {
  const table: [string, number, string | undefined, string?][] = [
    ['api.example.com', 443, 'api.example.com'],
    ['API.Example.COM.', 443, 'api.example.com'],
    ['a.cdn.example.com', 443, 'a.cdn.example.com'],
    ['bücher.example', 443, 'xn--bcher-kva.example'],
    ['db.example.com', 5432, 'db.example.com'],
    ['db.example.com', 5433, undefined, 'not-allowlisted'],
    ['cdn.example.com', 443, undefined, 'not-allowlisted'],
    ['api.example.com.evil.com', 443, undefined, 'not-allowlisted'],
    ['аpi.example.com', 443, undefined, 'not-allowlisted'],
    ['203.0.113.7', 443, '203.0.113.7'],
    ['3405803783', 443, '203.0.113.7'],
    ['127.0.0.1', 443, undefined, 'ip-literal'],
    ['0x7f.1', 443, undefined, 'ip-literal'],
    ['::1', 443, undefined, 'ip-literal'],
    ['-bad-.example', 443, undefined, 'invalid-host'],
    ['a..b', 443, undefined, 'invalid-host'],
  ];
  for (const [host, port, expectHost, reason] of table) {
    it(`${host}:${port} → ${expectHost ?? reason}`, () => {
      const d = decideAllowlist(allowlist, { host, port });
      if (expectHost) {
        assert.ok(!('status' in d), JSON.stringify(d));
        assert.equal((d as AllowedTarget).host, expectHost);
      } else {
        assert.ok('status' in d);
        assert.equal(d.status, 403);
        assert.equal(d.reason, reason);
      }
    });
  }
  it('marks rules that name the port', () => {
    assert.equal((decideAllowlist(allowlist, { host: 'db.example.com', port: 5432 }) as AllowedTarget).ruleNamesPort, true);
    assert.equal((decideAllowlist(allowlist, { host: 'api.example.com', port: 5432 }) as AllowedTarget).ruleNamesPort, false);
    assert.equal(ruleNamesPort('[2001:db8::1]:443'), true);
    assert.equal(ruleNamesPort('2001:db8::1'), false);
    assert.equal(ruleNamesPort('example.com'), false);
    assert.equal(ruleNamesPort('legacy.example.com:8443 sni=optional'), true);
    assert.equal(ruleNamesPort('legacy.example.com sni=optional'), false);
  });
  it('carries the sni=optional option of the matching rule', () => {
    assert.equal((decideAllowlist(allowlist, { host: 'legacy.example.com', port: 8443 }) as AllowedTarget).sniOptional, true);
    assert.equal((decideAllowlist(allowlist, { host: 'api.example.com', port: 443 }) as AllowedTarget).sniOptional, false);
  });
});

describe('decideAddresses', () => {
  const policy = new AddressPolicy({ allowPrivate: ['10.9.0.0/16'] });
  const target: AllowedTarget = { host: 'api.example.com', literal: false, port: 443, rule: 'api.example.com', ruleNamesPort: false, sniOptional: false };
  it('refuses when any address is bad and names it', () => {
    const d = decideAddresses(policy, target, ['93.184.216.34', '2606:2800::1', '10.0.0.5']);
    assert.ok('status' in d);
    assert.equal(d.address, '10.0.0.5');
    const body = JSON.parse(errorBody(denialError(d)));
    assert.match(body.error.message, /10\.0\.0\.5 \(private\)/);
    assert.deepEqual(body.error.details, { reason: 'blocked-address', rule: 'api.example.com', address: '10.0.0.5' });
  });
  it('orders IPv4 first and keeps only checked addresses', () => {
    assert.deepEqual(decideAddresses(policy, target, ['2606:2800::1', '93.184.216.34', '10.9.1.1']), ['93.184.216.34', '10.9.1.1', '2606:2800::1']);
  });
  it('no addresses → 502', () => assert.equal((decideAddresses(policy, target, []) as { status: number }).status, 502));
});

describe('decideTunnelPayload', () => {
  const anyPort: AllowedTarget = { host: 'api.example.com', literal: false, port: 443, rule: 'api.example.com', ruleNamesPort: false, sniOptional: false };
  const sniOptional: AllowedTarget = { ...anyPort, rule: 'api.example.com sni=optional', sniOptional: true };
  const withPort: AllowedTarget = { ...anyPort, port: 5432, rule: 'api.example.com:5432', ruleNamesPort: true };
  const table: [string, AllowedTarget, Parameters<typeof decideTunnelPayload>[1], string][] = [
    ['matching SNI', anyPort, { state: 'done', serverName: 'api.example.com' }, 'allow'],
    ['SNI in other case with dot', anyPort, { state: 'done', serverName: 'API.example.com.' }, 'allow'],
    ['no SNI for a name target', anyPort, { state: 'done', serverName: undefined }, 'sni-missing'],
    ['no SNI under a port rule', withPort, { state: 'done', serverName: undefined }, 'sni-missing'],
    ['no SNI where the rule says sni=optional', sniOptional, { state: 'done', serverName: undefined }, 'allow'],
    ['wrong SNI where the rule says sni=optional', sniOptional, { state: 'done', serverName: 'evil.com' }, 'sni-mismatch'],
    ['no SNI to an IP-literal target', { ...anyPort, host: '203.0.113.7', literal: true }, { state: 'done', serverName: undefined }, 'allow'],
    ['other SNI', anyPort, { state: 'done', serverName: 'evil.com' }, 'sni-mismatch'],
    ['subdomain SNI', anyPort, { state: 'done', serverName: 'x.api.example.com' }, 'sni-mismatch'],
    ['other SNI under a port rule', withPort, { state: 'done', serverName: 'evil.com' }, 'sni-mismatch'],
    ['non-TLS under an any-port rule', anyPort, { state: 'not-tls' }, 'non-tls-tunnel'],
    ['non-TLS under a port rule', withPort, { state: 'not-tls' }, 'allow'],
    ['malformed hello under an any-port rule', anyPort, { state: 'invalid', reason: 'x' }, 'client-hello-invalid'],
    ['need more', anyPort, { state: 'need-more' }, 'need-more'],
    ['SNI to an IP-literal target', { ...anyPort, host: '203.0.113.7', literal: true }, { state: 'done', serverName: '203.0.113.7' }, 'sni-mismatch'],
  ];
  for (const [name, target, hello, expected] of table) {
    it(`${name} → ${expected}`, () => {
      const v = decideTunnelPayload(target, hello);
      const got = v.state === 'deny' ? v.denial.reason : v.state;
      assert.equal(got, expected);
    });
  }
});

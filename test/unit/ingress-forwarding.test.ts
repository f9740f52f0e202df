// The ingress's forwarding-header policy (pure): which client headers claim forwarding facts,
// and the facts the ingress states instead.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { clientAddress, forwardingHeaders, isForwardingHeader } from '../../host/ingress/forwarding.js';

describe('isForwardingHeader', () => {
  const forged = [
    'forwarded', 'x-forwarded-for', 'x-forwarded-host', 'x-forwarded-proto', 'x-forwarded-port', 'x-forwarded-prefix', 'x-forwarded-ssl',
    'x-forwarded-scheme', 'x-forwarded-server', 'x-forwarded-client-cert', 'x-forwarded', 'forwarded-for', 'x-real-ip', 'x-client-ip', 'client-ip',
    'true-client-ip', 'cf-connecting-ip', 'cf-connecting-ipv6', 'cf-visitor', 'fastly-client-ip', 'fly-client-ip', 'fly-forwarded-port',
    'x-cluster-client-ip', 'x-original-forwarded-for', 'x-original-url', 'x-original-host', 'x-rewrite-url', 'x-host', 'x-http-host-override',
    'x-url-scheme', 'front-end-https', 'x-remote-addr', 'x-remote-ip', 'x-originating-ip', 'x-proxyuser-ip', 'x-envoy-external-address',
    'x-envoy-original-path', 'x-ssl-client-cert', 'x-client-cert', 'x-arr-clientcert', 'x-appengine-user-ip', 'x-azure-clientip', 'x-azure-socketip',
  ];
  for (const name of forged) it(`${name} is dropped`, () => assert.equal(isForwardingHeader(name), true));
  for (const name of ['host', 'accept', 'authorization', 'x-request-id', 'user-agent', 'x-custom', 'x-ip-hint', 'cookie', 'via', 'referer']) {
    it(`${name} passes`, () => assert.equal(isForwardingHeader(name), false));
  }
});

describe('forwardingHeaders', () => {
  const table: [string, Parameters<typeof forwardingHeaders>[0], string[]][] = [
    ['IPv4 client, host with a port', { remoteAddress: '10.0.0.9', proto: 'http', host: 'api.test:8080' }, ['forwarded', 'for=10.0.0.9;host="api.test:8080";proto=http', 'x-forwarded-for', '10.0.0.9', 'x-forwarded-proto', 'http', 'x-forwarded-host', 'api.test:8080']],
    ['IPv4-mapped client', { remoteAddress: '::ffff:10.0.0.9', proto: 'https', host: 'api.test' }, ['forwarded', 'for=10.0.0.9;host=api.test;proto=https', 'x-forwarded-for', '10.0.0.9', 'x-forwarded-proto', 'https', 'x-forwarded-host', 'api.test']],
    ['IPv6 client', { remoteAddress: '2001:db8::1', proto: 'http', host: 'a' }, ['forwarded', 'for="[2001:db8::1]";host=a;proto=http', 'x-forwarded-for', '2001:db8::1', 'x-forwarded-proto', 'http', 'x-forwarded-host', 'a']],
    ['Unix socket, no Host', { remoteAddress: undefined, proto: 'http', host: undefined }, ['forwarded', 'for=unknown;proto=http', 'x-forwarded-for', 'unknown', 'x-forwarded-proto', 'http']],
    ['a Host with a quote', { remoteAddress: '10.0.0.9', proto: 'http', host: 'a"b' }, ['forwarded', 'for=10.0.0.9;host="a\\"b";proto=http', 'x-forwarded-for', '10.0.0.9', 'x-forwarded-proto', 'http', 'x-forwarded-host', 'a"b']],
  ];
  for (const [name, facts, expected] of table) it(name, () => assert.deepEqual(forwardingHeaders(facts), expected));
  it('clientAddress', () => {
    assert.equal(clientAddress('::ffff:1.2.3.4'), '1.2.3.4');
    assert.equal(clientAddress('::ffff:abcd'), '::ffff:abcd');
    assert.equal(clientAddress(''), 'unknown');
  });
});

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { forwardRequestHeaders, forwardResponseHeaders, stripHopByHop } from '../../guest/server/headers.js';

describe('hop-by-hop headers are dropped', () => {
  const cases: [string, Record<string, string | string[]>, Record<string, string | string[]>, boolean?][] = [
    ['plain end-to-end headers pass', { accept: '*/*', 'content-type': 'text/plain', 'set-cookie': ['a=1', 'b=2'] }, { accept: '*/*', 'content-type': 'text/plain', 'set-cookie': ['a=1', 'b=2'] }],
    [
      'the fixed list',
      { connection: 'keep-alive', 'keep-alive': 'timeout=5', te: 'trailers', trailer: 'x', 'transfer-encoding': 'chunked', upgrade: 'websocket', accept: 'a' },
      { accept: 'a' },
    ],
    ['every Proxy-* header', { 'proxy-authorization': 'Basic x', 'proxy-connection': 'keep-alive', 'proxy-foo': '1', 'x-proxy': 'kept' }, { 'x-proxy': 'kept' }],
    ['headers named by Connection, any case and spacing', { connection: 'close, X-Secret ,x-other', 'x-secret': 's', 'x-other': 'o', 'x-keep': 'k' }, { 'x-keep': 'k' }],
    ['Connection given twice', { connection: ['x-a', 'X-B'], 'x-a': '1', 'x-b': '2', 'x-c': '3' }, { 'x-c': '3' }],
    ['upgrade kept while forwarding an upgrade', { connection: 'Upgrade, x-hop', upgrade: 'websocket', 'x-hop': '1', 'sec-websocket-key': 'k' }, { upgrade: 'websocket', connection: 'upgrade', 'sec-websocket-key': 'k' }, true],
  ];
  for (const [name, input, expected, keepUpgrade] of cases) {
    test(name, () => assert.deepEqual(stripHopByHop(input, { keepUpgrade }), expected));
  }
  test('responses lose the same set', () => {
    assert.deepEqual(forwardResponseHeaders({ 'transfer-encoding': 'chunked', connection: 'x-a', 'x-a': '1', 'content-type': 'a/b' }), { 'content-type': 'a/b' });
  });
});

describe('forwarding headers', () => {
  test('first hop: X-Forwarded-* describe the peer, Host is replaced', () => {
    const out = forwardRequestHeaders({ host: 'web.example', accept: 'x' }, { remoteAddress: '::ffff:10.0.0.9', proto: 'http' });
    assert.deepEqual(out, { accept: 'x', 'x-forwarded-for': '10.0.0.9', 'x-forwarded-proto': 'http', 'x-forwarded-host': 'web.example' });
  });
  test('behind the host ingress: its values are kept, the peer appended', () => {
    const out = forwardRequestHeaders(
      { host: 'kestrel', 'x-forwarded-for': '203.0.113.7', 'x-forwarded-proto': 'https', 'x-forwarded-host': 'api.example' },
      { remoteAddress: '192.168.127.1', proto: 'http' },
    );
    assert.equal(out['x-forwarded-for'], '203.0.113.7, 192.168.127.1');
    assert.equal(out['x-forwarded-proto'], 'https');
    assert.equal(out['x-forwarded-host'], 'api.example');
    assert.equal(out.host, undefined);
  });
  test('Expect is answered by kestrel itself, never forwarded', () => {
    const out = forwardRequestHeaders({ expect: '100-continue', 'content-length': '3000000' }, { proto: 'http' });
    assert.equal(out.expect, undefined);
    assert.equal(out['content-length'], '3000000');
  });
  test('vsock/unix peers have no address: existing X-Forwarded-For is kept as is', () => {
    const out = forwardRequestHeaders({ 'x-forwarded-for': '203.0.113.7' }, { proto: 'http' });
    assert.equal(out['x-forwarded-for'], '203.0.113.7');
  });
  test('a client cannot hide X-Forwarded-For by naming it in Connection', () => {
    const out = forwardRequestHeaders({ connection: 'x-forwarded-for', 'x-forwarded-for': '1.2.3.4' }, { remoteAddress: '10.0.0.1', proto: 'http' });
    assert.equal(out['x-forwarded-for'], '1.2.3.4, 10.0.0.1');
  });
});

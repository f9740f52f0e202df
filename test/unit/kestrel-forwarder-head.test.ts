import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { MAX_PROXY_HEAD_BYTES, MAX_PROXY_HEADERS, parseProxyHead } from '../../guest/egress/head.js';

const head = (s: string): Buffer => Buffer.from(s, 'latin1');

describe('forwarder accepts proxy requests', () => {
  const cases: [string, string, unknown][] = [
    ['CONNECT', 'CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n', { kind: 'connect', host: 'example.com', port: 443 }],
    ['CONNECT IPv4', 'CONNECT 93.184.216.34:8443 HTTP/1.1\r\n\r\n', { kind: 'connect', host: '93.184.216.34', port: 8443 }],
    ['CONNECT IPv6', 'CONNECT [2001:db8::1]:443 HTTP/1.1\r\n\r\n', { kind: 'connect', host: '[2001:db8::1]', port: 443 }],
    ['absolute-form GET', 'GET http://Example.COM/a?b=c HTTP/1.1\r\nHost: example.com\r\n\r\n', { kind: 'absolute', method: 'GET', host: 'example.com', port: 80, path: '/a?b=c' }],
    ['absolute-form with port, no path', 'GET http://example.com:8080 HTTP/1.0\r\n\r\n', { kind: 'absolute', method: 'GET', host: 'example.com', port: 8080, path: '/' }],
    ['absolute-form POST with a body length', 'POST http://api.example/x HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello', { kind: 'absolute', method: 'POST', host: 'api.example', port: 80, path: '/x' }],
    ['chunked POST', 'POST http://api.example/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n', { kind: 'absolute', method: 'POST', host: 'api.example', port: 80, path: '/x' }],
    ['repeated equal Content-Length', 'PUT http://a.example/ HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n', { kind: 'absolute', method: 'PUT', host: 'a.example', port: 80, path: '/' }],
  ];
  for (const [name, text, expected] of cases) {
    test(name, () => {
      const r = parseProxyHead(head(text));
      assert.equal(r.state, 'ok', JSON.stringify(r));
      if (r.state === 'ok') {
        assert.deepEqual(r.head, expected);
        assert.equal(r.headBytes, text.indexOf('\r\n\r\n') + 4);
      }
    });
  }
  test('an incomplete head asks for more', () => assert.deepEqual(parseProxyHead(head('CONNECT example.com:443 HTTP/1.1\r\nHost: x\r\n')), { state: 'need-more' }));
});

describe('forwarder refuses before opening an upstream', () => {
  const cases: [string, string, RegExp][] = [
    ['origin-form', 'GET / HTTP/1.1\r\nHost: example.com\r\n\r\n', /origin-form/],
    ['asterisk-form', 'OPTIONS * HTTP/1.1\r\n\r\n', /origin-form/],
    ['https absolute-form', 'GET https://example.com/ HTTP/1.1\r\n\r\n', /use CONNECT/],
    ['other scheme', 'GET ftp://example.com/ HTTP/1.1\r\n\r\n', /scheme ftp/],
    ['credentials in the target', 'GET http://user:pw@example.com/ HTTP/1.1\r\n\r\n', /credentials/],
    ['CONNECT without port', 'CONNECT example.com HTTP/1.1\r\n\r\n', /port is required/],
    ['CONNECT port 0', 'CONNECT example.com:0 HTTP/1.1\r\n\r\n', /not 1-65535/],
    ['CONNECT port too large', 'CONNECT example.com:65536 HTTP/1.1\r\n\r\n', /not 1-65535/],
    ['CONNECT with a body', 'CONNECT example.com:443 HTTP/1.1\r\nContent-Length: 4\r\n\r\n', /CONNECT with a body/],
    ['garbage bytes', '\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n', /request line|method|NUL/],
    ['TLS ClientHello straight at the proxy', '\x16\x03\x01 x y\r\n\r\n', /method/],
    ['HTTP/2 preface', 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', /version/],
    ['extra spaces in the request line', 'GET  http://a.example/ HTTP/1.1\r\n\r\n', /request line/],
    ['bad host', 'GET http://exa mple.com/ HTTP/1.1\r\n\r\n', /request line/],
    ['host with a slash trick', 'CONNECT evil.com/x:443 HTTP/1.1\r\n\r\n', /not a host name/],
    ['bare LF inside a header', 'GET http://a.example/ HTTP/1.1\r\nX: a\nY: b\r\n\r\n', /bare CR, LF/],
    ['bare CR inside a header', 'GET http://a.example/ HTTP/1.1\r\nX: a\rY: b\r\n\r\n', /bare CR, LF/],
    ['NUL in a header', 'GET http://a.example/ HTTP/1.1\r\nX: a\0b\r\n\r\n', /NUL/],
    ['obs-fold', 'GET http://a.example/ HTTP/1.1\r\nX: a\r\n b\r\n\r\n', /folding/],
    ['space before the colon', 'GET http://a.example/ HTTP/1.1\r\nContent-Length : 5\r\n\r\n', /not a token/],
    ['Content-Length with Transfer-Encoding (CL.TE smuggling)', 'POST http://a.example/ HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n', /smuggling/],
    ['differing Content-Length', 'POST http://a.example/ HTTP/1.1\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n', /differing/],
    ['Content-Length list that differs', 'POST http://a.example/ HTTP/1.1\r\nContent-Length: 4, 5\r\n\r\n', /differing/],
    ['non-numeric Content-Length', 'POST http://a.example/ HTTP/1.1\r\nContent-Length: +4\r\n\r\n', /not a number/],
    ['Transfer-Encoding other than chunked', 'POST http://a.example/ HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n', /Transfer-Encoding other/],
    ['Transfer-Encoding twice', 'POST http://a.example/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n', /Transfer-Encoding other/],
    ['obfuscated Transfer-Encoding', 'POST http://a.example/ HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n', /Transfer-Encoding other/],
    ['header without a name', 'GET http://a.example/ HTTP/1.1\r\n: x\r\n\r\n', /no name/],
  ];
  for (const [name, text, re] of cases) {
    test(name, () => {
      const r = parseProxyHead(head(text));
      assert.equal(r.state, 'reject', JSON.stringify(r));
      if (r.state === 'reject') assert.match(r.reason, re);
    });
  }
  test('an oversized head is refused once it passes the limit, complete or not', () => {
    const big = `GET http://a.example/ HTTP/1.1\r\nX: ${'a'.repeat(MAX_PROXY_HEAD_BYTES)}`;
    assert.equal(parseProxyHead(head(big)).state, 'reject');
    assert.equal(parseProxyHead(head(`${big}\r\n\r\n`)).state, 'reject');
  });
  test('too many header fields', () => {
    const lines = Array.from({ length: MAX_PROXY_HEADERS + 1 }, (_, i) => `X-${i}: 1`).join('\r\n');
    const r = parseProxyHead(head(`GET http://a.example/ HTTP/1.1\r\n${lines}\r\n\r\n`));
    assert.equal(r.state, 'reject');
  });
});

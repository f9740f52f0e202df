// matchProxyPath: which URLs are proxied, the exact guest path, and escapes that are refused.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isVolantError } from '../../shared/errors.js';
import { matchProxyPath } from '../../host/ingress/path.js';

describe('matchProxyPath: pass-through', () => {
  const cases: Array<[string, string, string]> = [
    ['/api/v1/vms/web/proxy/hello?x=1', 'web', '/hello?x=1'],
    ['/api/v1/vms/web/proxy', 'web', '/'],
    ['/api/v1/vms/web/proxy/', 'web', '/'],
    ['/api/v1/vms/web/proxy?x=1&y=%2F..', 'web', '/?x=1&y=%2F..'],
    ['/api/v1/vms/web/proxy/a/b/c.txt', 'web', '/a/b/c.txt'],
    ['/api/v1/vms/web/proxy/a%20b/%C3%A9', 'web', '/a%20b/%C3%A9'],
    ['/api/v1/vms/web/proxy/file.tar.gz', 'web', '/file.tar.gz'],
    ['/api/v1/vms/web/proxy/...', 'web', '/...'],
    ['/api/v1/vms/web/proxy/.well-known/x', 'web', '/.well-known/x'],
    ['/api/v1/vms/web/proxy/a//b', 'web', '/a//b'],
    ['/api/v1/vms/web/proxy/q?next=/../../etc', 'web', '/q?next=/../../etc'],
    ['/api/v1/vms/My_vm-2/proxy/x', 'My_vm-2', '/x'],
    ['/api/v1/vms/web/proxy/a:b@c;d=e', 'web', '/a:b@c;d=e'],
  ];
  for (const [url, vmName, upstreamPath] of cases) {
    it(`${url} → ${vmName} ${upstreamPath}`, () => {
      assert.deepEqual(matchProxyPath(url), { vmName, upstreamPath });
    });
  }
});

describe('matchProxyPath: not a proxy route (the API routes it)', () => {
  const urls = [
    '/api/v1/vms',
    '/api/v1/vms/web',
    '/api/v1/vms/web/',
    '/api/v1/vms/web/proxyx',
    '/api/v1/vms/web/logs',
    '/api/v1/vms/web?fields=a/proxy/b',
    '/api/v1/vms?next=/api/v1/vms/web/proxy/',
    '/healthz',
    '/',
    '*',
    'example.com:443',
  ];
  for (const url of urls) {
    it(url, () => assert.equal(matchProxyPath(url), null));
  }
});

describe('matchProxyPath: escapes are refused with INVALID_ARGUMENT', () => {
  const hostile = [
    '/api/v1/vms/web/proxy/../../other/proxy/x',
    '/api/v1/vms/web/proxy/..',
    '/api/v1/vms/web/proxy/.',
    '/api/v1/vms/web/proxy/a/./b',
    '/api/v1/vms/web/proxy/%2e%2e/%2e%2e/other/proxy/x',
    '/api/v1/vms/web/proxy/%2E%2E/secret',
    '/api/v1/vms/web/proxy/.%2e/secret',
    '/api/v1/vms/web/proxy/%2e./secret',
    '/api/v1/vms/web/proxy/..%2fother',
    '/api/v1/vms/web/proxy/..%2Fother',
    '/api/v1/vms/web/proxy/a%2fb',
    '/api/v1/vms/web/proxy/..%5cother',
    '/api/v1/vms/web/proxy/a%5Cb',
    '/api/v1/vms/web/proxy/..\\other',
    '/api/v1/vms/web/proxy/a\\b',
    '/api/v1/vms/web/proxy/%252e%252e/x',
    '/api/v1/vms/web/proxy/%252f',
    '/api/v1/vms/web/proxy/a%00b',
    '/api/v1/vms/web/proxy/a%0d%0aX-Injected:%201',
    '/api/v1/vms/web/proxy/..;/other',
    '/api/v1/vms/web/proxy/.;x/y',
    '/api/v1/vms/web/proxy//evil.example/x',
    '/api/v1/vms/web/proxy/%zz',
    '/api/v1/vms/web/proxy/%',
    '/api/v1/vms/..%2fother/proxy/x',
    '/api/v1/vms/web%2f..%2fother/proxy/x',
    '/api/v1/vms/w%65b/proxy/x',
    '/api/v1/vms/../vms/other/proxy/x',
    '/api/v1/vms/web/..%2f..%2fother%2fproxy/x',
    '/api/v1/vms/web/%2e%2e/other/proxy/x',
    'http://evil.example/api/v1/vms/web/proxy/x',
    'HTTP://127.0.0.1:8080/api/v1/vms/web/proxy/',
    '//evil.example/api/v1/vms/web/proxy/x',
  ];
  assert.ok(hostile.length >= 20);
  for (const url of hostile) {
    it(url, () => {
      assert.throws(
        () => matchProxyPath(url),
        (e: unknown) => isVolantError(e) && e.code === 'INVALID_ARGUMENT' && e.message.includes('refused'),
      );
    });
  }
});

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseAbsoluteTarget, parseConnectTarget } from '../../host/egress/target.js';

describe('parseConnectTarget', () => {
  const ok: [string, string, number][] = [
    ['example.com:443', 'example.com', 443],
    ['Example.COM.:8443', 'Example.COM.', 8443],
    ['[::1]:443', '::1', 443],
    ['[2001:db8::1]:1', '2001:db8::1', 1],
    ['1.2.3.4:65535', '1.2.3.4', 65535],
    ['0x7f.1:443', '0x7f.1', 443],
  ];
  for (const [input, host, port] of ok) {
    it(`${input} → ${host} ${port}`, () => assert.deepEqual(parseConnectTarget(input), { ok: true, target: { host, port } }));
  }
  const bad: [string, string][] = [
    ['example.com', 'bad-port'],
    ['example.com:', 'bad-port'],
    ['example.com:0', 'bad-port'],
    ['example.com:65536', 'bad-port'],
    ['example.com:-1', 'bad-port'],
    ['example.com:1e3', 'bad-port'],
    ['example.com: 443', 'bad-target'],
    ['a@example.com:443', 'userinfo'],
    ['example.com:443@evil.com:443', 'userinfo'],
    ['::1:443', 'bad-target'],
    ['[::1', 'bad-target'],
    ['[::1]x:443', 'bad-target'],
    ['[evil.com]:443', 'bad-target'],
    [':443', 'bad-target'],
    ['', 'bad-target'],
    ['exa mple.com:443', 'bad-target'],
    ['example.com\r\n:443', 'bad-target'],
    ['example.com/x:443', 'bad-target'],
    ['example.com%00:443', 'bad-target'],
    ['example.com\\:443', 'bad-target'],
    ['a'.repeat(400), 'bad-target'],
  ];
  for (const [input, reason] of bad) {
    it(`${JSON.stringify(input.slice(0, 40))} → ${reason}`, () => {
      const r = parseConnectTarget(input);
      assert.equal(r.ok, false);
      if (!r.ok) {
        assert.equal(r.reason, reason);
        assert.ok(r.message.length > 5);
      }
    });
  }
});

describe('parseAbsoluteTarget', () => {
  const ok: [string, string | undefined, string, number, string][] = [
    ['http://example.com/a?b=c', undefined, 'example.com', 80, '/a?b=c'],
    ['HTTP://example.com', undefined, 'example.com', 80, '/'],
    ['http://example.com?x', 'example.com', 'example.com', 80, '/?x'],
    ['http://example.com:8080/', 'EXAMPLE.com:8080', 'example.com', 8080, '/'],
    ['http://example.com:80/', 'example.com', 'example.com', 80, '/'],
    ['http://example.com/', 'example.com.:80', 'example.com', 80, '/'],
    ['http://[::1]:8080/x', '[::1]:8080', '::1', 8080, '/x'],
  ];
  for (const [url, hostHeader, host, port, path] of ok) {
    it(`${url} (Host ${hostHeader}) → ${host}:${port}${path}`, () => assert.deepEqual(parseAbsoluteTarget(url, hostHeader), { ok: true, target: { host, port, path } }));
  }
  const bad: [string, string | undefined, string][] = [
    ['/path', undefined, 'origin-form'],
    ['*', undefined, 'origin-form'],
    ['https://example.com/', undefined, 'scheme'],
    ['ws://example.com/', undefined, 'scheme'],
    ['example.com/x', undefined, 'bad-target'],
    ['http:/example.com/', undefined, 'bad-target'],
    ['http://example.com#frag', undefined, 'bad-target'],
    ['http://example.com\\@evil.com/', undefined, 'bad-target'],
    ['http://a@example.com/', undefined, 'userinfo'],
    ['http://example.com@evil.com/', undefined, 'userinfo'],
    ['http://example.com:0/', undefined, 'bad-port'],
    ['http:///x', undefined, 'bad-target'],
    ['http://example.com/\r\nX: 1', undefined, 'bad-target'],
    ['http://example.com/', 'evil.com', 'host-mismatch'],
    ['http://example.com/', 'example.com:81', 'host-mismatch'],
    ['http://example.com:8080/', 'example.com', 'host-mismatch'],
    ['http://example.com/', 'example.com@evil.com', 'host-mismatch'],
    ['http://example.com/', '', 'host-mismatch'],
    [`http://example.com/${'a'.repeat(9000)}`, undefined, 'bad-target'],
  ];
  for (const [url, hostHeader, reason] of bad) {
    it(`${JSON.stringify(url.slice(0, 40))} (Host ${hostHeader}) → ${reason}`, () => {
      const r = parseAbsoluteTarget(url, hostHeader);
      assert.equal(r.ok, false);
      if (!r.ok) assert.equal(r.reason, reason);
    });
  }
});

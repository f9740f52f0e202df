/** The API's pure decisions: auth requirement, listen addresses, error mapping, log lines. */

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { VolantError } from '../../shared/errors.js';
import { checkBearer, ensureTokenFile, groupIdIn, isLoopbackHost, tokenRequired } from '../../host/api/auth.js';
import { errorReply, problemsFromAjv } from '../../host/api/errors.js';
import { formatListenAddress, parseListenAddress } from '../../host/api/listen.js';
import { LinePrefixer } from '../../host/api/log-lines.js';

describe('tokenRequired', () => {
  // [listen, unsafe_loopback_without_token, token required]
  const cases: [string, boolean, boolean][] = [
    ['127.0.0.1:8080', false, true],
    ['[::1]:8080', false, true],
    ['localhost:8080', false, true],
    ['0.0.0.0:8080', false, true],
    ['unix:/run/volant/volantd.sock', false, false],
    ['127.0.0.1:8080', true, false],
    ['127.9.9.9:8080', true, false],
    ['localhost:8080', true, false],
    ['[::1]:8080', true, false],
    ['unix:/x.sock', true, false],
    ['0.0.0.0:8080', true, true],
    ['192.168.1.5:8080', true, true],
    ['[::]:8080', true, true],
    ['localhost.evil.com:8080', true, true],
  ];
  for (const [listen, waived, want] of cases) {
    it(`${listen}${waived ? ' (loopback waiver)' : ''} → ${want ? 'token' : 'no token'}`, () =>
      assert.equal(tokenRequired(parseListenAddress(listen), { unsafeLoopbackWithoutToken: waived }), want));
  }
  it('groupIdIn finds a group by exact name', () => {
    const etc = 'root:x:0:\nvolant-x:x:998:\nvolant:x:999:alice,bob\n';
    assert.equal(groupIdIn(etc, 'volant'), 999);
    assert.equal(groupIdIn(etc, 'volan'), undefined);
    assert.equal(groupIdIn('', 'volant'), undefined);
  });
  it('isLoopbackHost rejects look-alikes', () => {
    assert.equal(isLoopbackHost('127.0.0.1.nip.io'), false);
    assert.equal(isLoopbackHost('::ffff:127.0.0.1'), false);
  });
});

describe('checkBearer', () => {
  it('accepts exactly "Bearer <token>"', () => {
    checkBearer('Bearer s3cret-token', 's3cret-token');
    for (const bad of [undefined, '', 'bearer s3cret-token', 'Bearer  s3cret-token', 'Bearer s3cret-token ', 'Basic czNjcmV0', 'Bearer s3cret-tokeN', 'Bearer s3cret-token\r\nX: y']) {
      assert.throws(() => checkBearer(bad, 's3cret-token'), (e: unknown) => e instanceof VolantError && e.code === 'UNAUTHORIZED', String(bad));
    }
  });
});

describe('ensureTokenFile', () => {
  it('creates a 0600 token once and returns the same token afterwards', () => {
    const dir = mkdtempSync(join(tmpdir(), `volant-api-${process.pid}-`));
    try {
      const a = ensureTokenFile(join(dir, 'state'));
      assert.match(a, /^[A-Za-z0-9_-]{43}$/);
      assert.equal(statSync(join(dir, 'state', 'api-token')).mode & 0o777, 0o600);
      assert.equal(ensureTokenFile(join(dir, 'state')), a);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('parseListenAddress', () => {
  it('round-trips valid addresses', () => {
    for (const a of ['127.0.0.1:8080', '[::1]:0', 'unix:/run/volant/api.sock', 'localhost:65535']) assert.equal(formatListenAddress(parseListenAddress(a)), a);
  });
  it('refuses malformed ones with INVALID_ARGUMENT', () => {
    for (const a of ['8080', '127.0.0.1', '127.0.0.1:70000', 'unix:relative', 'http://127.0.0.1:8080', '1.2.3.4:80 ', 'unix:/a\0b']) {
      assert.throws(() => parseListenAddress(a), (e: unknown) => e instanceof VolantError && e.code === 'INVALID_ARGUMENT', a);
    }
  });
});

describe('error mapping', () => {
  it('locates Ajv problems at the offending property', () => {
    assert.deepEqual(
      problemsFromAjv([
        { instancePath: '', keyword: 'required', params: { missingProperty: 'path' }, message: "must have required property 'path'" },
        { instancePath: '', keyword: 'additionalProperties', params: { additionalProperty: 'x' }, message: 'must NOT have additional properties' },
        { instancePath: '/cpus', keyword: 'type', params: {}, message: 'must be integer' },
      ]),
      [
        { path: '/path', message: 'is required' },
        { path: '/x', message: 'is not a known property' },
        { path: '/cpus', message: 'must be integer' },
      ],
    );
  });
  it('maps codes through httpStatusFor and hides internal errors', () => {
    assert.deepEqual(errorReply(new VolantError('POOL_EXHAUSTED', 'full')), { status: 503, body: '{"error":{"code":"POOL_EXHAUSTED","message":"full"}}' });
    assert.equal(errorReply(new VolantError('IP_TAKEN', 'x')).status, 409);
    assert.equal(errorReply(new VolantError('VMM_FAILED', 'x')).status, 502);
    const internal = errorReply(new Error('secret path /etc/shadow'));
    assert.equal(internal.status, 500);
    assert.doesNotMatch(JSON.stringify(internal.body), /shadow/);
    assert.equal(JSON.parse(errorReply({ validation: [{ instancePath: '/a', message: 'bad' }], validationContext: 'body' }).body).error.code, 'VALIDATION_FAILED');
    assert.equal(errorReply({ code: 'FST_ERR_CTP_INVALID_MEDIA_TYPE', statusCode: 415, message: 'Unsupported Media Type' }).status, 400);
    assert.equal(errorReply({ code: 'FST_ERR_CTP_BODY_TOO_LARGE', statusCode: 413, message: 'Request body is too large' }).status, 413);
  });
});


describe('LinePrefixer', () => {
  it('prefixes whole lines, holds partial ones, strips CR', () => {
    const p = new LinePrefixer('serial| ');
    assert.equal(p.push('a\r\nb'), 'serial| a\n');
    assert.equal(p.push('c\n\n'), 'serial| bc\nserial| \n');
    assert.equal(p.push('tail'), '');
    assert.equal(p.flush(), 'serial| tail\n');
    assert.equal(p.flush(), '');
  });
});

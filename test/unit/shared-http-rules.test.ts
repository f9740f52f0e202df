// The HTTP rules every Volant server and proxy shares (pure): the request-line rule, what an
// upstream response head may be, and how the HTTP parser's own refusals map to error codes.
import assert from 'node:assert/strict';
import { IncomingMessage, ServerResponse } from 'node:http';
import { Socket } from 'node:net';
import { describe, it } from 'node:test';
import { httpStatusFor, VolantError } from '../../shared/errors.js';
import { clientErrorRefusal, errorBody, rawErrorResponse, sendErrorResponse } from '../../shared/http-error-response.js';
import { httpVersionRefusal, isServedHttpVersion, requestLineRefusal } from '../../shared/http-request-line.js';
import { responseHeadProblem } from '../../shared/http-response-head.js';

describe('request-line rule', () => {
  const versions: [number, number, boolean][] = [
    [1, 1, true],
    [1, 0, true],
    [0, 9, false],
    [2, 0, false],
    [1, 2, false],
    [3, 0, false],
  ];
  for (const [major, minor, ok] of versions) {
    it(`HTTP/${major}.${minor} → ${ok ? 'served' : '400'}`, () => {
      const r = httpVersionRefusal(major, minor);
      assert.equal(r === undefined, ok);
      if (r) assert.equal(r.code, 'INVALID_ARGUMENT');
    });
  }
  it('version text as it appears on a request line', () => {
    for (const t of ['HTTP/1.1', 'HTTP/1.0']) assert.equal(isServedHttpVersion(t), true, t);
    for (const t of ['HTTP/0.9', 'HTTP/2.0', 'http/1.1', 'HTTP/1.1 ', 'HTTP/1', 'HTTP/01.1', '']) assert.equal(isServedHttpVersion(t), false, t);
  });
  it('an HTTP/1.1 request needs Host where required; HTTP/1.0 does not', () => {
    assert.equal(requestLineRefusal({ httpVersionMajor: 1, httpVersionMinor: 1, headers: {} }, { requireHost: true })?.code, 'INVALID_ARGUMENT');
    assert.equal(requestLineRefusal({ httpVersionMajor: 1, httpVersionMinor: 1, headers: {} }, { requireHost: false }), undefined);
    assert.equal(requestLineRefusal({ httpVersionMajor: 1, httpVersionMinor: 0, headers: {} }, { requireHost: true }), undefined);
    assert.equal(requestLineRefusal({ httpVersionMajor: 1, httpVersionMinor: 1, headers: { host: 'a' } }, { requireHost: true }), undefined);
  });
});

describe('responseHeadProblem', () => {
  const table: [string, number, string, string[], boolean][] = [
    ['plain 200', 200, 'OK', ['Content-Length', '2', 'X-A', 'a\tb'], true],
    ['empty reason', 200, '', [], true],
    ['obs-text in a value', 200, 'OK', ['X-A', 'caf\xe9'], true],
    ['chunked', 200, 'OK', ['Transfer-Encoding', 'Chunked'], true],
    ['repeated identical Content-Length', 200, 'OK', ['Content-Length', '2', 'content-length', '2'], true],
    ['list of identical Content-Length', 200, 'OK', ['Content-Length', '2, 2'], true],
    ['101 switching', 101, 'Switching Protocols', ['Upgrade', 'websocket', 'Connection', 'Upgrade'], true],
    ['204 with Content-Length: 0', 204, 'No Content', ['Content-Length', '0'], true],
    ['304 with the representation length', 304, 'Not Modified', ['Content-Length', '1234'], true],
    ['status 99', 99, 'X', [], false],
    ['status 600', 600, 'X', [], false],
    ['status 999', 999, 'X', [], false],
    ['status not an integer', 200.5, 'X', [], false],
    ['control byte in the reason', 200, 'O\x01K', [], false],
    ['DEL in the reason', 200, 'O\x7fK', [], false],
    ['CR in the reason', 200, 'O\rK', [], false],
    ['a character above U+00FF in the reason', 200, 'O\ufffdK', [], false],
    ['space in a header name', 200, 'OK', ['X A', 'b'], false],
    ['empty header name', 200, 'OK', ['', 'b'], false],
    ['NUL in a value', 200, 'OK', ['X-A', 'a\x00b'], false],
    ['LF in a value', 200, 'OK', ['X-A', 'a\nb'], false],
    ['differing Content-Length', 200, 'OK', ['Content-Length', '2', 'Content-Length', '3'], false],
    ['differing Content-Length in a list', 200, 'OK', ['Content-Length', '2, 3'], false],
    ['signed Content-Length', 200, 'OK', ['Content-Length', '+2'], false],
    ['empty Content-Length', 200, 'OK', ['Content-Length', ''], false],
    ['Content-Length and Transfer-Encoding', 200, 'OK', ['Content-Length', '2', 'Transfer-Encoding', 'chunked'], false],
    ['Transfer-Encoding gzip', 200, 'OK', ['Transfer-Encoding', 'gzip'], false],
    ['Transfer-Encoding gzip, chunked', 200, 'OK', ['Transfer-Encoding', 'gzip, chunked'], false],
    ['two Transfer-Encoding headers', 200, 'OK', ['Transfer-Encoding', 'chunked', 'Transfer-Encoding', 'chunked'], false],
    ['204 with a body length', 204, 'No Content', ['Content-Length', '5'], false],
    ['204 chunked', 204, 'No Content', ['Transfer-Encoding', 'chunked'], false],
    ['1xx with a body length', 103, 'Early Hints', ['Content-Length', '5'], false],
  ];
  for (const [name, status, reason, headers, ok] of table) {
    it(`${name} → ${ok ? 'relayed' : 'refused'}`, () => {
      const p = responseHeadProblem(status, reason, headers);
      assert.equal(p === undefined, ok, p);
    });
  }
});

describe('the one error writer', () => {
  it('body and raw response carry code, message and details, with the status of the code', () => {
    const e = new VolantError('EGRESS_DENIED', 'no', { reason: 'not-allowlisted' });
    assert.equal(errorBody(e), '{"error":{"code":"EGRESS_DENIED","message":"no","details":{"reason":"not-allowlisted"}}}');
    const raw = rawErrorResponse(e, { 'x-request-id': 'r1', 'bad name': 'x', 'x-evil': 'a\r\nb' });
    assert.match(raw, /^HTTP\/1\.1 403 Forbidden\r\n/);
    assert.match(raw, /\r\ncontent-type: application\/json; charset=utf-8\r\n/);
    assert.match(raw, /\r\nx-request-id: r1\r\n/);
    assert.doesNotMatch(raw, /bad name|x-evil/, 'unsafe extra headers are dropped');
    assert.match(raw, /\r\nconnection: close\r\n\r\n\{"error"/);
  });

  it('answers after a writeHead that threw on a bad status text (it stored the text first)', () => {
    const res = new ServerResponse(new IncomingMessage(new Socket()));
    assert.throws(() => res.writeHead(200, 'O\x01K', { 'x-a': 'b' }));
    sendErrorResponse(res, new VolantError('PROTOCOL_ERROR', 'bad head'));
    assert.equal(res.statusCode, 502);
    assert.equal(res.statusMessage, 'Bad Gateway');
    assert.equal(res.getHeader('x-a'), undefined);
  });

  const parser: [string, { code?: string; reason?: string }, string | undefined][] = [
    ['head over the limit', { code: 'HPE_HEADER_OVERFLOW' }, 'HEADERS_TOO_LARGE'],
    ['head timeout', { code: 'ERR_HTTP_REQUEST_TIMEOUT' }, 'REQUEST_TIMEOUT'],
    ['closed mid-head', { code: 'HPE_INVALID_EOF_STATE' }, 'REQUEST_TIMEOUT'],
    ['bad version', { code: 'HPE_INVALID_VERSION', reason: 'Invalid HTTP version' }, 'INVALID_ARGUMENT'],
    ['not HTTP', { code: 'HPE_INVALID_CONSTANT' }, 'INVALID_ARGUMENT'],
    ['HTTP/2 preface', { code: 'HPE_PAUSED_H2_UPGRADE' }, 'INVALID_ARGUMENT'],
    ['bad header token', { code: 'HPE_INVALID_HEADER_TOKEN' }, 'INVALID_ARGUMENT'],
    ['chunk extensions', { code: 'HPE_CHUNK_EXTENSIONS_OVERFLOW' }, 'PAYLOAD_TOO_LARGE'],
    ['reset', { code: 'ECONNRESET' }, undefined],
  ];
  for (const [name, err, code] of parser) {
    it(`parser refusal: ${name} → ${code ?? 'nothing to answer'}`, () => {
      const r = clientErrorRefusal(err, 16384);
      assert.equal(r?.code, code);
      if (r) assert.ok([400, 408, 413, 431].includes(httpStatusFor(r.code)));
    });
  }
});

// Header hygiene and framing decisions of the ingress proxy (pure functions over raw header lists).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isVolantError } from '../../shared/errors.js';
import { type ClientFacts, downstreamResponseHeaders as downstream, upstreamRequestHead } from '../../host/ingress/headers.js';
import { ResponseHeadCheck } from '../../shared/http-response-head.js';

const downstreamResponseHeaders = (raw: readonly string[], rid: string): string[] => downstream(raw, rid, new ResponseHeadCheck()) ?? [];

const facts: ClientFacts = { remoteAddress: '10.0.0.9', proto: 'http', httpVersionMinor: 1, upgrade: false };

function asMap(flat: readonly string[]): Map<string, string[]> {
  const m = new Map<string, string[]>();
  for (let i = 0; i < flat.length; i += 2) {
    const k = flat[i]!.toLowerCase();
    m.set(k, [...(m.get(k) ?? []), flat[i + 1]!]);
  }
  return m;
}

describe('upstreamRequestHead', () => {
  it('removes hop-by-hop headers and the ones Connection names, in any spelling', () => {
    const head = upstreamRequestHead(
      [
        'Host', 'vm.example',
        'CONNECTION', 'keep-alive, X-Secret-Hop, close',
        'x-secret-hop', 'leak',
        'Keep-Alive', 'timeout=5',
        'Proxy-Authorization', 'Basic Zm9vOmJhcg==',
        'proxy-connection', 'keep-alive',
        'TE', 'trailers',
        'Trailer', 'X-Checksum',
        'Upgrade', 'websocket',
        'Expect', '100-continue',
        'Accept', 'text/plain',
        'X-Custom', 'kept',
      ],
      facts,
    );
    const m = asMap(head.headers);
    for (const gone of ['connection', 'x-secret-hop', 'keep-alive', 'proxy-authorization', 'proxy-connection', 'te', 'trailer', 'upgrade', 'expect']) {
      assert.equal(m.has(gone), false, `${gone} must not be forwarded`);
    }
    assert.deepEqual(m.get('accept'), ['text/plain']);
    assert.deepEqual(m.get('x-custom'), ['kept']);
    assert.deepEqual(m.get('host'), ['vm.example']);
  });

  it("replaces the client's forwarding headers with ours: Forwarded and X-Forwarded-For/-Proto/-Host agree", () => {
    const head = upstreamRequestHead(
      [
        'Host', 'api.local:8080',
        'X-Forwarded-For', '1.2.3.4',
        'x-forwarded-for', '5.6.7.8',
        'X-Forwarded-Proto', 'https',
        'X-Forwarded-Host', 'evil',
        'Forwarded', 'for=6.6.6.6;proto=https',
        'X-Real-IP', '6.6.6.6',
        'X_Forwarded_For', '7.7.7.7',
      ],
      { ...facts, proto: 'http' },
    );
    const m = asMap(head.headers);
    assert.deepEqual(m.get('x-forwarded-for'), ['10.0.0.9']);
    assert.deepEqual(m.get('x-forwarded-proto'), ['http']);
    assert.deepEqual(m.get('x-forwarded-host'), ['api.local:8080']);
    assert.deepEqual(m.get('forwarded'), ['for=10.0.0.9;host="api.local:8080";proto=http']);
    assert.equal(m.has('x-real-ip'), false);
    assert.equal(m.has('x_forwarded_for'), false);
  });

  it('Connection cannot strip our forwarding headers', () => {
    const head = upstreamRequestHead(['Host', 'h', 'Connection', 'X-Forwarded-For, X-Request-Id, Host, Forwarded'], facts);
    const m = asMap(head.headers);
    assert.deepEqual(m.get('x-forwarded-for'), ['10.0.0.9']);
    assert.deepEqual(m.get('forwarded'), ['for=10.0.0.9;host=h;proto=http']);
    assert.equal(m.get('x-request-id')?.length, 1);
    assert.deepEqual(m.get('host'), ['h']);
  });

  it('keeps a valid X-Request-Id and replaces an invalid one with a UUID', () => {
    assert.equal(upstreamRequestHead(['X-Request-Id', 'req-42.a:b'], facts).requestId, 'req-42.a:b');
    for (const bad of ['', 'has space', 'x'.repeat(201), 'a"b', 'a\tb']) {
      const h = upstreamRequestHead(['X-Request-Id', bad], facts);
      assert.match(h.requestId, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
      assert.deepEqual(asMap(h.headers).get('x-request-id'), [h.requestId]);
    }
    const a = upstreamRequestHead([], facts).requestId;
    const b = upstreamRequestHead([], facts).requestId;
    assert.notEqual(a, b);
  });

  it('keeps Upgrade and Connection: upgrade only for upgrade requests', () => {
    const raw = ['Host', 'h', 'Connection', 'Upgrade', 'Upgrade', 'websocket', 'Sec-WebSocket-Key', 'k'];
    const up = asMap(upstreamRequestHead(raw, { ...facts, upgrade: true }).headers);
    assert.deepEqual(up.get('upgrade'), ['websocket']);
    assert.deepEqual(up.get('connection'), ['upgrade']);
    assert.deepEqual(up.get('sec-websocket-key'), ['k']);
    const plain = asMap(upstreamRequestHead(raw, facts).headers);
    assert.equal(plain.has('upgrade'), false);
    assert.equal(plain.has('connection'), false);
  });

  it('reports whether a body follows', () => {
    assert.equal(upstreamRequestHead(['Host', 'h'], facts).hasBody, false);
    assert.equal(upstreamRequestHead(['Content-Length', '0'], facts).hasBody, false);
    assert.equal(upstreamRequestHead(['Content-Length', '12'], facts).hasBody, true);
    assert.equal(upstreamRequestHead(['Transfer-Encoding', 'chunked'], facts).hasBody, true);
    assert.equal(upstreamRequestHead(['transfer-encoding', 'Chunked'], facts).hasBody, true);
    assert.equal(asMap(upstreamRequestHead(['Transfer-Encoding', 'chunked'], facts).headers).has('transfer-encoding'), false);
  });

  describe('refuses framing Node lets through (smuggling)', () => {
    const cases: Array<[string, string[], number]> = [
      ['two Transfer-Encoding headers', ['Transfer-Encoding', 'gzip', 'Transfer-Encoding', 'chunked'], 1],
      ['a coding before chunked', ['Transfer-Encoding', 'gzip, chunked'], 1],
      ['identity', ['Transfer-Encoding', 'identity'], 1],
      ['chunked with a parameter', ['Transfer-Encoding', 'chunked;q=1'], 1],
      ['Transfer-Encoding on HTTP/1.0', ['Transfer-Encoding', 'chunked'], 0],
      ['two Host headers', ['Host', 'a', 'Host', 'b'], 1],
      ['two Host headers in other spellings', ['host', 'a', 'HOST', 'b'], 1],
    ];
    for (const [name, raw, minor] of cases) {
      it(name, () => {
        assert.throws(
          () => upstreamRequestHead(raw, { ...facts, httpVersionMinor: minor }),
          (e: unknown) => isVolantError(e) && e.code === 'INVALID_ARGUMENT' && /framing refused/.test(e.message),
        );
      });
    }
  });
});

describe('downstreamResponseHeaders', () => {
  const b = (xs: string[]): string[] => xs;
  it('drops hop-by-hop headers and adds X-Request-Id when the guest sent none', () => {
    const out = asMap(
      downstreamResponseHeaders(
        b([
          'Content-Type', 'text/plain',
          'Connection', 'keep-alive, X-Internal',
          'X-Internal', 'secret',
          'Keep-Alive', 'timeout=5',
          'Transfer-Encoding', 'chunked',
          'Trailer', 'X-Sum',
          'Upgrade', 'h2c',
          'Proxy-Authenticate', 'Basic',
          'Set-Cookie', 'a=1',
          'set-cookie', 'b=2',
          'Content-Length', '5',
        ]),
        'rid-1',
      ),
    );
    for (const gone of ['connection', 'x-internal', 'keep-alive', 'transfer-encoding', 'trailer', 'upgrade', 'proxy-authenticate']) {
      assert.equal(out.has(gone), false, `${gone} must not reach the client`);
    }
    assert.deepEqual(out.get('set-cookie'), ['a=1', 'b=2']);
    assert.deepEqual(out.get('content-length'), ['5']);
    assert.deepEqual(out.get('x-request-id'), ['rid-1']);
  });
  it("keeps the guest's own X-Request-Id", () => {
    assert.deepEqual(asMap(downstreamResponseHeaders(b(['X-Request-Id', 'guest']), 'rid')).get('x-request-id'), ['guest']);
  });
});

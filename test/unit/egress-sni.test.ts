import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { MAX_CLIENT_HELLO_BYTES, readClientHello } from '../../host/egress/sni.js';
import { captureClientHello as capture } from '../support/client-hello.js';

const record = (payload: Buffer, type = 0x16): Buffer => {
  const h = Buffer.from([type, 0x03, 0x01, 0, 0]);
  h.writeUInt16BE(payload.length, 3);
  return Buffer.concat([h, payload]);
};

let hello: Buffer;
let helloNoSni: Buffer;
before(async () => {
  hello = await capture('api.example.com');
  helloNoSni = await capture(undefined);
});

describe('readClientHello', () => {
  it('reads the SNI of a real ClientHello', () => assert.deepEqual(readClientHello(hello), { state: 'done', serverName: 'api.example.com' }));
  it('reports no SNI when the client sent none', () => assert.deepEqual(readClientHello(helloNoSni), { state: 'done', serverName: undefined }));
  it('needs more for every strict prefix, then decides', () => {
    for (let n = 0; n < hello.length; n++) assert.deepEqual(readClientHello(hello.subarray(0, n)), { state: 'need-more' }, `prefix ${n}`);
  });
  it('reassembles a handshake fragmented across records', () => {
    const body = hello.subarray(5);
    for (const cuts of [[1], [3, 4], [10, 50, 51], [body.length - 1]]) {
      const parts: Buffer[] = [];
      let prev = 0;
      for (const c of [...cuts, body.length]) {
        parts.push(record(body.subarray(prev, c)));
        prev = c;
      }
      assert.deepEqual(readClientHello(Buffer.concat(parts)), { state: 'done', serverName: 'api.example.com' }, `cuts ${cuts}`);
    }
  });
  it('says not-tls for other protocols', () => {
    for (const t of ['GET / HTTP/1.1\r\n', 'SSH-2.0-OpenSSH\r\n', '\x00\x01']) assert.deepEqual(readClientHello(Buffer.from(t, 'latin1')), { state: 'not-tls' });
  });
  const invalid: [string, () => Buffer][] = [
    ['alert record after a fragment', () => Buffer.concat([record(hello.subarray(5, 20)), record(Buffer.from([2, 40]), 0x15)])],
    ['SSLv2-ish version byte', () => Buffer.from([0x16, 0x02, 0x00, 0x00, 0x10])],
    ['zero-length record', () => Buffer.from([0x16, 0x03, 0x01, 0x00, 0x00])],
    ['record over 16 KiB', () => Buffer.from([0x16, 0x03, 0x01, 0x48, 0x01])],
    ['ServerHello instead', () => record(Buffer.from([0x02, 0, 0, 4, 3, 3, 0, 0]))],
    ['handshake length beyond the bound', () => record(Buffer.from([0x01, 0x7f, 0xff, 0xff, 3, 3]))],
    ['truncated body', () => record(Buffer.from([0x01, 0, 0, 3, 3, 3, 0]))],
    [
      'server_name length past its extension',
      () => {
        const body = Buffer.from(hello.subarray(5));
        const i = body.indexOf(Buffer.from('api.example.com'));
        body.writeUInt16BE(0x7fff, i - 2);
        return record(body);
      },
    ],
    [
      'non-printable SNI',
      () => {
        const body = Buffer.from(hello.subarray(5));
        const i = body.indexOf(Buffer.from('api.example.com'));
        body[i + 3] = 0x00;
        return record(body);
      },
    ],
  ];
  for (const [name, make] of invalid) {
    it(`invalid: ${name}`, () => assert.equal(readClientHello(make()).state, 'invalid'));
  }
  it(`never buffers more than ${MAX_CLIENT_HELLO_BYTES} bytes`, () => {
    const endless = Buffer.concat(Array.from({ length: 5 }, () => record(Buffer.alloc(16000, 0x01))));
    const head = Buffer.concat([record(Buffer.from([0x01, 0x00, 0xff, 0xff])), endless]);
    assert.equal(readClientHello(head).state, 'invalid');
  });
});

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  AGENT_VSOCK_PORT,
  EGRESS_VSOCK_PORT,
  encodeConnect,
  FIRST_GUEST_CID,
  guestInitiatedSocketPath,
  HandshakeLineReader,
  parseConnectLine,
  parseOkLine,
  VolantError,
} from '../../shared/index.js';

describe('vsock constants', () => {
  test('ports and first CID match the contract', () => {
    assert.equal(AGENT_VSOCK_PORT, 8080);
    assert.equal(EGRESS_VSOCK_PORT, 3128);
    assert.equal(FIRST_GUEST_CID, 3);
  });
});

describe('hybrid vsock handshake codec', () => {
  test('encodes CONNECT <port>\\n', () => {
    assert.equal(encodeConnect(8080).toString(), 'CONNECT 8080\n');
    assert.equal(encodeConnect(0).toString(), 'CONNECT 0\n');
    assert.equal(encodeConnect(4294967295).toString(), 'CONNECT 4294967295\n');
    assert.ok(encodeConnect(4294967295).length <= 32);
  });
  for (const bad of [-1, 4294967296, 1.5, Number.NaN, '8080' as unknown as number]) {
    test(`refuses port ${String(bad)}`, () => assert.throws(() => encodeConnect(bad), VolantError));
  }
  const ok: [string, number][] = [
    ['OK 1073741824', 1073741824],
    ['OK 0', 0],
  ];
  for (const [line, port] of ok) test(`parses ${line}`, () => assert.equal(parseOkLine(line), port));
  const notOk = ['', 'OK', 'OK ', 'ok 5', 'OK -1', 'OK 1 2', 'OK 99999999999', 'ERR 1', 'OK 1\r', ' OK 1', 'HTTP/1.1 200 OK'];
  for (const line of notOk) {
    test(`rejects answer ${JSON.stringify(line)}`, () => {
      assert.throws(() => parseOkLine(line), (e: unknown) => e instanceof VolantError && e.code === 'PROTOCOL_ERROR');
    });
  }
  test('CONNECT keyword is case-insensitive, as in the VMM', () => {
    assert.equal(parseConnectLine('CONNECT 8080'), 8080);
    assert.equal(parseConnectLine('connect 3128'), 3128);
    assert.equal(parseConnectLine('CoNnEcT 1'), 1);
    for (const bad of ['CONNECT', 'CONNECT x', 'CONNECT  8080', 'CONNECT 8080 extra', 'GET / HTTP/1.1', 'CONNECT 4294967296']) {
      assert.throws(() => parseConnectLine(bad), VolantError, bad);
    }
  });
});

describe('HandshakeLineReader', () => {
  test('assembles a line split across chunks and keeps what follows', () => {
    const r = new HandshakeLineReader();
    assert.deepEqual(r.push(Buffer.from('OK 10')), { state: 'need-more' });
    const res = r.push(Buffer.from('73741824\nHTTP/1.1 200'));
    assert.equal(res.state, 'line');
    if (res.state === 'line') {
      assert.equal(res.line, 'OK 1073741824');
      assert.equal(res.rest.toString(), 'HTTP/1.1 200');
    }
  });
  test('refuses more than 32 bytes without a newline', () => {
    const r = new HandshakeLineReader();
    assert.equal(r.push(Buffer.alloc(31, 65)).state, 'need-more');
    assert.equal(r.push(Buffer.alloc(1, 65)).state, 'too-long');
  });
  test('refuses a line longer than 32 bytes even when the newline arrives', () => {
    const r = new HandshakeLineReader();
    assert.equal(r.push(Buffer.from(`CONNECT ${'1'.repeat(30)}\n`)).state, 'too-long');
  });
});

describe('guest-initiated socket path', () => {
  test('is <socket>_<port> and fits sun_path', () => {
    assert.equal(guestInitiatedSocketPath('/run/volant/vsock-3.sock', 3128), '/run/volant/vsock-3.sock_3128');
    assert.throws(() => guestInitiatedSocketPath(`/${'x'.repeat(120)}`, 3128), /sun_path/);
  });
});

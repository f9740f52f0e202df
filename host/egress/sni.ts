/**
 * Reads the server name (SNI, RFC 6066 §3) from the first bytes a client sends into a CONNECT
 * tunnel, so the proxy can refuse domain fronting (CONNECT allowed.test:443, then a ClientHello
 * for evil.test). The ClientHello may be split across several TLS records (RFC 8446 §5.1 allows
 * fragmenting handshake messages) and across any number of TCP reads, so this works on the bytes
 * received so far and says `need-more` until it can decide. It never buffers more than
 * MAX_CLIENT_HELLO_BYTES, and every length field is bounds-checked against its container.
 *
 * With Encrypted Client Hello the outer (cleartext) SNI is the one checked: that is the name the
 * network sees and the one the fronting trick would abuse.
 */

export const MAX_CLIENT_HELLO_BYTES = 64 * 1024;

const RECORD_HEADER_BYTES = 5;
const CONTENT_TYPE_HANDSHAKE = 0x16;
const HANDSHAKE_CLIENT_HELLO = 0x01;
const EXTENSION_SERVER_NAME = 0x0000;
const NAME_TYPE_HOST_NAME = 0x00;

export type ClientHelloResult =
  | { state: 'need-more' }
  | { state: 'not-tls' }
  | { state: 'invalid'; reason: string }
  | { state: 'done'; serverName: string | undefined };

/** Decides from the bytes received so far (concatenated). Pure. */
export function readClientHello(data: Buffer): ClientHelloResult {
  if (data.length === 0) return { state: 'need-more' };
  if (data[0] !== CONTENT_TYPE_HANDSHAKE) return { state: 'not-tls' };
  // Reassemble the handshake message from consecutive handshake records.
  const fragments: Buffer[] = [];
  let have = 0;
  let need = -1;
  let off = 0;
  while (need < 0 || have < need) {
    if (data.length - off < RECORD_HEADER_BYTES) return more(data);
    if (data[off] !== CONTENT_TYPE_HANDSHAKE) return { state: 'invalid', reason: 'non-handshake record inside the ClientHello' };
    if (data[off + 1] !== 0x03) return { state: 'invalid', reason: 'not a TLS record version' };
    const len = data.readUInt16BE(off + 3);
    if (len === 0 || len > 16384) return { state: 'invalid', reason: `TLS record length ${len} out of range` };
    if (data.length - off - RECORD_HEADER_BYTES < len) return more(data);
    const body = data.subarray(off + RECORD_HEADER_BYTES, off + RECORD_HEADER_BYTES + len);
    off += RECORD_HEADER_BYTES + len;
    fragments.push(body);
    have += body.length;
    if (need < 0 && have >= 4) {
      const head = Buffer.concat(fragments);
      if (head[0] !== HANDSHAKE_CLIENT_HELLO) return { state: 'invalid', reason: 'first handshake message is not a ClientHello' };
      need = 4 + head.readUIntBE(1, 3);
      if (need > MAX_CLIENT_HELLO_BYTES) return { state: 'invalid', reason: `ClientHello of ${need} bytes exceeds ${MAX_CLIENT_HELLO_BYTES}` };
    }
  }
  const msg = Buffer.concat(fragments).subarray(4, need);
  return parseClientHelloBody(msg);
}

function more(data: Buffer): ClientHelloResult {
  return data.length >= MAX_CLIENT_HELLO_BYTES ? { state: 'invalid', reason: `no complete ClientHello in ${MAX_CLIENT_HELLO_BYTES} bytes` } : { state: 'need-more' };
}

class Cursor {
  off = 0;
  constructor(readonly buf: Buffer) {}
  u8(): number {
    if (this.off + 1 > this.buf.length) throw new RangeError('truncated');
    return this.buf[this.off++]!;
  }
  u16(): number {
    if (this.off + 2 > this.buf.length) throw new RangeError('truncated');
    const v = this.buf.readUInt16BE(this.off);
    this.off += 2;
    return v;
  }
  take(n: number): Buffer {
    if (this.off + n > this.buf.length) throw new RangeError('truncated');
    const b = this.buf.subarray(this.off, this.off + n);
    this.off += n;
    return b;
  }
}

function parseClientHelloBody(body: Buffer): ClientHelloResult {
  try {
    const c = new Cursor(body);
    c.take(2); // legacy_version
    c.take(32); // random
    c.take(c.u8()); // session id
    const suites = c.u16();
    if (suites === 0 || suites % 2 !== 0) return { state: 'invalid', reason: 'bad cipher_suites length' };
    c.take(suites);
    c.take(c.u8()); // compression methods
    if (c.off === body.length) return { state: 'done', serverName: undefined };
    const ext = new Cursor(c.take(c.u16()));
    if (c.off !== body.length) return { state: 'invalid', reason: 'trailing bytes after extensions' };
    let serverName: string | undefined;
    let seen = false;
    while (ext.off < ext.buf.length) {
      const type = ext.u16();
      const data = ext.take(ext.u16());
      if (type !== EXTENSION_SERVER_NAME) continue;
      if (seen) return { state: 'invalid', reason: 'duplicate server_name extension' };
      seen = true;
      const list = new Cursor(data);
      const names = new Cursor(list.take(list.u16()));
      if (list.off !== data.length) return { state: 'invalid', reason: 'trailing bytes in server_name' };
      while (names.off < names.buf.length) {
        const nameType = names.u8();
        const name = names.take(names.u16());
        if (nameType !== NAME_TYPE_HOST_NAME) continue;
        if (serverName !== undefined) return { state: 'invalid', reason: 'more than one host_name in server_name' };
        if (name.length === 0 || name.some((b) => b <= 0x20 || b >= 0x7f)) return { state: 'invalid', reason: 'server name is not printable ASCII' };
        serverName = name.toString('latin1');
      }
    }
    return { state: 'done', serverName };
  } catch {
    return { state: 'invalid', reason: 'truncated ClientHello' };
  }
}

/**
 * A real TLS ClientHello as node:tls sends it, captured on a loopback socket, for tests of the
 * egress proxy's SNI reader. Only the first TLS record is returned; the handshake never completes.
 */

import { createServer } from 'node:net';
import { connect as tlsConnect } from 'node:tls';

export async function captureClientHello(servername?: string): Promise<Buffer> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as { port: number }).port;
  const got = new Promise<Buffer>((resolve) => {
    srv.once('connection', (s) => {
      let buf = Buffer.alloc(0);
      s.on('data', (d: Buffer) => {
        buf = Buffer.concat([buf, d]);
        if (buf.length >= 5 && buf.length >= 5 + buf.readUInt16BE(3)) {
          resolve(buf.subarray(0, 5 + buf.readUInt16BE(3)));
          s.destroy();
        }
      });
    });
  });
  const t = tlsConnect({ port, host: '127.0.0.1', servername });
  t.on('error', () => {});
  const hello = await got;
  t.destroy();
  srv.close();
  return hello;
}

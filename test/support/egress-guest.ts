/**
 * A guest's side of its VM's egress listener, as kestrel's forwarder reaches it over hybrid vsock:
 * the guest-initiated socket `<vsock socket>_3128` on the host. Sends raw request bytes and
 * returns what came back up to the end of the answer's head (or until the proxy closed).
 */

import { connect } from 'node:net';

export function guestRequest(path: string, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect({ path });
    let out = '';
    s.on('connect', () => s.write(text));
    s.on('data', (c) => {
      out += c;
      if (out.includes('\r\n\r\n')) {
        s.destroy();
        resolve(out);
      }
    });
    s.on('error', reject);
    s.on('close', () => resolve(out));
  });
}

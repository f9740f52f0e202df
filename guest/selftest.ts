/**
 * `volant.selftest=vsock`: proves the vsock path inside the guest without the host. kestrel
 * connects over vsock to CID 1 (VMADDR_CID_LOCAL, served by the vsock_loopback module) on the
 * agent port, sends GET /healthz and prints exactly one line the end-to-end test looks for:
 *
 *   kestrel: selftest vsock: ok <status>
 *   kestrel: selftest vsock: failed <why>
 */

import { request } from 'node:http';
import type { Socket } from 'node:net';
import { vsockConnect } from '../native/index.js';
import { AGENT_VSOCK_PORT } from '../shared/vsock.js';
import { say } from './console.js';

export const SELFTEST_CID = 1;
export const SELFTEST_TIMEOUT_MS = 10_000;

export async function runVsockSelftest(port = AGENT_VSOCK_PORT): Promise<boolean> {
  try {
    const socket = await vsockConnect(SELFTEST_CID, port);
    const status = await new Promise<number>((resolve, reject) => {
      const req = request({
        method: 'GET',
        path: '/healthz',
        host: 'kestrel',
        headers: { connection: 'close' },
        createConnection: () => socket as Socket,
        timeout: SELFTEST_TIMEOUT_MS,
      });
      req.once('timeout', () => req.destroy(new Error(`no answer within ${SELFTEST_TIMEOUT_MS} ms`)));
      req.once('response', (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.once('error', reject);
      req.end();
    });
    say(`selftest vsock: ok ${status}`);
    return status === 200;
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    say(`selftest vsock: failed ${[err.syscall, err.code, err.message].filter(Boolean).join(' ')}`);
    return false;
  }
}

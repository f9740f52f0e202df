/**
 * The back-end process's command line, written by the launcher (host/vmm/vsock-backend.ts) and
 * read by the process (main.ts): one module owns both directions so they cannot drift.
 *
 *   --vhost-user PATH  where QEMU's `-chardev socket,path=...` connects (vhost-user-vsock-pci)
 *   --socket PATH      the hybrid-vsock socket `<uds>` the host dials (`CONNECT <port>\n`);
 *                      guest connections to CID 2 port P go to `<uds>_P`
 *   --cid N            the guest's CID (the device's config space)
 *   --metrics FILE     the counters as JSON, rewritten every second and at exit (optional)
 *   --log-level LEVEL  how much the process logs (JSON lines on stderr); default info
 */

import { isAbsolute } from 'node:path';
import { parseArgs } from 'node:util';
import { FIRST_GUEST_CID, MAX_GUEST_CID, MAX_UNIX_SOCKET_PATH_BYTES } from '../../../shared/vsock.js';
import { isLogLevel, LOG_LEVELS, type LogLevel } from '../../log/levels.js';

/** Room kept in sun_path for the `_PORT` suffix of guest-initiated connections. */
const PORT_SUFFIX_BYTES = 11;

export interface BackendArgs {
  vhostUser: string;
  socket: string;
  cid: number;
  metrics?: string;
  logLevel?: LogLevel;
}

export function formatBackendArgs(a: BackendArgs): string[] {
  return ['--vhost-user', a.vhostUser, '--socket', a.socket, '--cid', String(a.cid), ...(a.metrics ? ['--metrics', a.metrics] : []), ...(a.logLevel ? ['--log-level', a.logLevel] : [])];
}

/** Parses and checks the command line; throws an Error naming what is wrong and what is allowed. */
export function parseBackendArgs(argv: string[]): BackendArgs {
  const { values } = parseArgs({
    args: argv,
    options: { 'vhost-user': { type: 'string' }, socket: { type: 'string' }, cid: { type: 'string' }, metrics: { type: 'string' }, 'log-level': { type: 'string' } },
    strict: true,
    allowPositionals: false,
  });
  const path = (name: string, value: string | undefined, room = 0): string => {
    if (!value || !isAbsolute(value)) throw new Error(`--${name} must be an absolute path`);
    if (Buffer.byteLength(value) + room > MAX_UNIX_SOCKET_PATH_BYTES) throw new Error(`--${name} ${value} is too long for a Unix socket (at most ${MAX_UNIX_SOCKET_PATH_BYTES - room} bytes)`);
    return value;
  };
  const cidText = values.cid ?? '';
  const cid = Number(cidText);
  if (!/^[0-9]{1,10}$/.test(cidText) || cid < FIRST_GUEST_CID || cid > MAX_GUEST_CID) throw new Error(`--cid ${JSON.stringify(cidText)} must be an integer ${FIRST_GUEST_CID}..${MAX_GUEST_CID}`);
  const metrics = values.metrics === undefined ? undefined : path('metrics', values.metrics);
  const logLevel = values['log-level'];
  if (logLevel !== undefined && !isLogLevel(logLevel)) throw new Error(`--log-level ${JSON.stringify(logLevel)} must be one of ${LOG_LEVELS.join(', ')}`);
  return {
    vhostUser: path('vhost-user', values['vhost-user'], 4),
    socket: path('socket', values.socket, PORT_SUFFIX_BYTES),
    cid,
    ...(metrics ? { metrics } : {}),
    ...(logLevel ? { logLevel } : {}),
  };
}

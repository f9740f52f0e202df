/**
 * Who may drive volantd. volantd runs as root and creates VMs and calls into workloads, so:
 *  - every TCP listener needs the bearer token on every route but health, loopback included
 *    (any local user, and any web page that rebinds a name to 127.0.0.1, can reach loopback);
 *    only the explicit, documented-unsafe `api.unsafe_loopback_without_token` waives it, and
 *    only for a loopback listener;
 *  - the Unix socket needs no token: its file mode (0660) and group (`volant`, when that group
 *    exists) say who may connect, like Docker's socket.
 * The token is made on first start (32 random bytes, base64url) and kept 0600 in the state
 * dir, so `volar` run by root on the same host can read it. Comparison is constant-time over
 * digests.
 */

import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { VolantError } from '../../shared/errors.js';
import type { ListenAddress } from './listen.js';

export const TOKEN_FILE_NAME = 'api-token';
export const TOKEN_BYTES = 32;

export function tokenFilePath(stateDir: string): string {
  return join(stateDir, TOKEN_FILE_NAME);
}

export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  return h === 'localhost' || h === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}

/** The group whose members may use volantd's Unix socket (when it exists on the host). */
export const SOCKET_GROUP = 'volant';

/** Pure: does a listener at this address demand the bearer token? */
export function tokenRequired(listen: ListenAddress, options: { unsafeLoopbackWithoutToken?: boolean } = {}): boolean {
  if (listen.kind === 'unix') return false;
  return !(options.unsafeLoopbackWithoutToken === true && isLoopbackHost(listen.host));
}

/** The numeric id of `name` in an /etc/group text, if listed (pure). */
export function groupIdIn(etcGroup: string, name: string): number | undefined {
  for (const line of etcGroup.split('\n')) {
    const [group, , gid] = line.split(':');
    if (group === name && gid !== undefined && /^[0-9]+$/.test(gid)) return Number(gid);
  }
  return undefined;
}

/** Reads the token file, creating it (0600, parent 0700) when absent. */
export function ensureTokenFile(stateDir: string): string {
  const path = tokenFilePath(stateDir);
  try {
    const t = readFileSync(path, 'utf8').trim();
    if (t.length >= 16) {
      chmodSync(path, 0o600);
      return t;
    }
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const token = randomBytes(TOKEN_BYTES).toString('base64url');
  writeFileSync(path, `${token}\n`, { mode: 0o600 });
  chmodSync(path, 0o600);
  return token;
}

const digest = (s: string): Buffer => createHash('sha256').update(s).digest();

/** Throws UNAUTHORIZED unless `authorization` is exactly `Bearer <token>`. */
export function checkBearer(authorization: string | undefined, token: string): void {
  const m = /^Bearer ([\x21-\x7e]+)$/.exec(authorization ?? '');
  if (!m) throw new VolantError('UNAUTHORIZED', "this volantd needs a bearer token over TCP: pass --token or VOLANT_TOKEN (the token is in <state_dir>/api-token), or use its Unix socket");
  if (!timingSafeEqual(digest(m[1]!), digest(token))) throw new VolantError('UNAUTHORIZED', 'the bearer token is not valid');
}

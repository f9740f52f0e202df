/**
 * Bearer-token auth. A token is required for every route except health whenever volantd listens
 * beyond loopback or a token is configured; a Unix socket counts as local (its file mode guards
 * it). The token is made on first start (32 random bytes, base64url) and kept 0600 in the state
 * dir, so `volar` on the same host can read it. Comparison is constant-time over digests.
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

/** Pure: does this listen address with this (maybe absent) configured token demand auth? */
export function tokenRequired(listen: ListenAddress, configuredToken: string | undefined): boolean {
  if (configuredToken !== undefined && configuredToken !== '') return true;
  return listen.kind === 'tcp' && !isLoopbackHost(listen.host);
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
  if (!m) throw new VolantError('UNAUTHORIZED', 'this volantd needs a bearer token: pass --token or VOLANT_TOKEN (the token is in <state_dir>/api-token)');
  if (!timingSafeEqual(digest(m[1]!), digest(token))) throw new VolantError('UNAUTHORIZED', 'the bearer token is not valid');
}

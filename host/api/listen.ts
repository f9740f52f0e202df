/**
 * Where the API listens: `HOST:PORT` (`[v6]:PORT` for IPv6) or `unix:/absolute/path`. Parsed
 * once, strictly, so a typo is a start-up error rather than a daemon bound somewhere unexpected.
 */

import { VolantError } from '../../shared/errors.js';

export type ListenAddress = { kind: 'tcp'; host: string; port: number } | { kind: 'unix'; path: string };

export const DEFAULT_LISTEN = '127.0.0.1:8080';

export function parseListenAddress(text: string): ListenAddress {
  if (text.startsWith('unix:')) {
    const path = text.slice('unix:'.length);
    if (!path.startsWith('/') || path.includes('\0')) throw new VolantError('INVALID_ARGUMENT', `listen ${JSON.stringify(text)}: unix: needs an absolute path`);
    return { kind: 'unix', path };
  }
  const m = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(text);
  const port = m ? Number(m[2]) : Number.NaN;
  if (!m || port > 65535) throw new VolantError('INVALID_ARGUMENT', `listen ${JSON.stringify(text)}: use HOST:PORT (port 0-65535) or unix:/path`);
  return { kind: 'tcp', host: m[1]!.replace(/^\[|\]$/g, ''), port };
}

export function formatListenAddress(a: ListenAddress): string {
  if (a.kind === 'unix') return `unix:${a.path}`;
  return a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}

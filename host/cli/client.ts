/**
 * volar's client for volantd's API, and how it connects and authenticates:
 *  - `--api` / `VOLANT_API` (`http://HOST:PORT` or `unix:/path`) when given;
 *  - else volantd's Unix socket when it is there and usable (`VOLANT_API_SOCKET`, or `<state_dir>/run/
 *    volantd.sock` for `--state-dir` runs, or /run/volant/volantd.sock): no token needed, the
 *    socket's mode and group decide who may use it;
 *  - else TCP at http://127.0.0.1:8080 with the bearer token from `--token`, `VOLANT_TOKEN`, or
 *    the daemon's token file `<state_dir>/api-token` (`--state-dir`, `VOLANT_STATE_DIR`, default
 *    /var/lib/volant) when it is readable. The token is sent over TCP only.
 * An API error becomes a `VolantError` with the API's code, message and details, so the CLI
 * prints `volar: CODE: message` and exits non-zero; an unreachable daemon says where it looked.
 */

import { accessSync, constants, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import type { Command } from 'commander';
import { Agent, type Dispatcher, request } from 'undici';
import { type ErrorCode, ErrorCodes, VolantError } from '../../shared/errors.js';
import type { CreateVmRequest } from '../../shared/schema/vm-config.js';
import { TOKEN_FILE_NAME } from '../api/auth.js';
import { API_SOCKET_NAME } from '../config/schema.js';
import type { PluginView, VmView } from '../api/schemas.js';

export const DEFAULT_API = 'http://127.0.0.1:8080';
export const DEFAULT_STATE_DIR = '/var/lib/volant';
export const DEFAULT_API_SOCKET = '/run/volant/volantd.sock';
/** Bound for ordinary calls; create and start wait for the guest to boot, so they get longer. */
export const REQUEST_TIMEOUT_MS = 30_000;
export const BOOT_REQUEST_TIMEOUT_MS = 300_000;

export interface ClientOptions {
  api?: string;
  token?: string;
  stateDir?: string;
  /** volantd's Unix socket (default: see `apiSocketPath`). */
  socket?: string;
}

/** Where volantd's Unix socket is for these options (what the daemon's config defaults to). */
export function apiSocketPath(opts: Pick<ClientOptions, 'socket' | 'stateDir'>): string {
  return opts.socket || (opts.stateDir ? join(opts.stateDir, 'run', API_SOCKET_NAME) : DEFAULT_API_SOCKET);
}

/** The API address volar uses (pure but for `socketExists`): explicit, else the socket when it is there, else TCP. */
export function chooseApi(opts: Pick<ClientOptions, 'api' | 'socket' | 'stateDir'>, socketExists: (path: string) => boolean): string {
  if (opts.api) return opts.api;
  const socket = apiSocketPath(opts);
  return socketExists(socket) ? `unix:${socket}` : DEFAULT_API;
}

/** The socket is there and this user may connect to it (root, or the `volant` group); else volar talks TCP. */
function socketUsable(path: string): boolean {
  try {
    accessSync(path, constants.R_OK | constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

function tokenFromFile(stateDir: string): string | undefined {
  try {
    const t = readFileSync(join(stateDir, TOKEN_FILE_NAME), 'utf8').trim();
    return t === '' ? undefined : t;
  } catch {
    return undefined;
  }
}

function asErrorCode(code: unknown): ErrorCode {
  return ErrorCodes.includes(code as ErrorCode) ? (code as ErrorCode) : 'INTERNAL';
}

/** Answers that stay open and stream (logs --follow, the events feed) have no body timeout. */
function isStream(path: string): boolean {
  return path.includes('follow=1') || path === EVENTS_PATH;
}

export const EVENTS_PATH = '/api/v1/events';

export class ApiClient {
  readonly api: string;
  private readonly origin: string;
  private readonly dispatcher: Dispatcher | undefined;
  private readonly token: string | undefined;

  constructor(opts: ClientOptions = {}) {
    this.api = chooseApi(opts, socketUsable);
    if (this.api.startsWith('unix:')) {
      this.origin = 'http://localhost';
      this.dispatcher = new Agent({ connect: { socketPath: this.api.slice('unix:'.length) } });
      this.token = undefined;
    } else {
      let url: URL;
      try {
        url = new URL(this.api);
      } catch {
        throw new VolantError('INVALID_ARGUMENT', `--api ${JSON.stringify(this.api)}: use http://HOST:PORT or unix:/path`);
      }
      if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new VolantError('INVALID_ARGUMENT', `--api ${JSON.stringify(this.api)}: use http://HOST:PORT or unix:/path`);
      this.origin = url.origin;
      this.token = opts.token || tokenFromFile(opts.stateDir ?? DEFAULT_STATE_DIR);
    }
  }

  private async send(method: Dispatcher.HttpMethod, path: string, body?: unknown, timeoutMs = REQUEST_TIMEOUT_MS): Promise<Dispatcher.ResponseData> {
    const headers: Record<string, string> = {};
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    let res: Dispatcher.ResponseData;
    try {
      res = await request(`${this.origin}${path}`, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        dispatcher: this.dispatcher,
        headersTimeout: timeoutMs,
        bodyTimeout: isStream(path) ? 0 : timeoutMs,
      });
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      throw new VolantError('UPSTREAM_UNREACHABLE', `cannot reach volantd at ${this.api}: ${err.code ?? err.message} (is it running? --api or VOLANT_API; volar uses its Unix socket when that exists)`);
    }
    if (res.statusCode >= 400) {
      const text = await res.body.text();
      let parsed: { error?: { code?: unknown; message?: unknown; details?: unknown } } | undefined;
      try {
        parsed = JSON.parse(text);
      } catch {
        parsed = undefined;
      }
      const e = parsed?.error;
      if (e && typeof e.message === 'string') throw new VolantError(asErrorCode(e.code), e.message, e.details);
      throw new VolantError('PROTOCOL_ERROR', `volantd answered ${res.statusCode}: ${text.slice(0, 200)}`);
    }
    return res;
  }

  private async json<T>(method: Dispatcher.HttpMethod, path: string, body?: unknown, timeoutMs?: number): Promise<T> {
    const res = await this.send(method, path, body, timeoutMs);
    if (res.statusCode === 204) {
      await res.body.dump();
      return undefined as T;
    }
    return (await res.body.json()) as T;
  }

  health(): Promise<{ status: string; version: string }> {
    return this.json('GET', '/api/v1/health');
  }
  /** Creates a VM; waits until it runs unless `wait` is false (then answers once it is recorded). */
  createVm(req: CreateVmRequest, opts: { wait?: boolean } = {}): Promise<VmView> {
    return this.json('POST', `/api/v1/vms${opts.wait === false ? '?wait=0' : ''}`, req, BOOT_REQUEST_TIMEOUT_MS);
  }
  /** The server-sent VM events feed (see host/cli/progress.ts); destroy the stream to stop. */
  async events(): Promise<Readable> {
    return (await this.send('GET', EVENTS_PATH)).body;
  }
  async listVms(): Promise<VmView[]> {
    return (await this.json<{ vms: VmView[] }>('GET', '/api/v1/vms')).vms;
  }
  getVm(name: string): Promise<VmView> {
    return this.json('GET', `/api/v1/vms/${encodeURIComponent(name)}`);
  }
  deleteVm(name: string, force: boolean): Promise<void> {
    return this.json('DELETE', `/api/v1/vms/${encodeURIComponent(name)}${force ? '?force=1' : ''}`);
  }
  startVm(name: string): Promise<VmView> {
    return this.json('POST', `/api/v1/vms/${encodeURIComponent(name)}/start`, undefined, BOOT_REQUEST_TIMEOUT_MS);
  }
  stopVm(name: string): Promise<VmView> {
    return this.json('POST', `/api/v1/vms/${encodeURIComponent(name)}/stop`, undefined, BOOT_REQUEST_TIMEOUT_MS);
  }
  async logs(name: string, follow: boolean): Promise<Readable> {
    return (await this.send('GET', `/api/v1/vms/${encodeURIComponent(name)}/logs${follow ? '?follow=1' : ''}`)).body;
  }
  installPlugin(path: string): Promise<PluginView> {
    return this.json('POST', '/api/v1/plugins', { path });
  }
  async listPlugins(): Promise<PluginView[]> {
    return (await this.json<{ plugins: PluginView[] }>('GET', '/api/v1/plugins')).plugins;
  }
  removePlugin(name: string): Promise<void> {
    return this.json('DELETE', `/api/v1/plugins/${encodeURIComponent(name)}`);
  }
}

/** The client for a command, from the program's global options (`--api`, `--token`, `--state-dir`). */
export function clientFor(cmd: Command): ApiClient {
  const o = cmd.optsWithGlobals() as { api?: string; token?: string; stateDir?: string };
  return new ApiClient({ api: o.api, token: o.token, stateDir: o.stateDir ?? process.env.VOLANT_STATE_DIR, socket: process.env.VOLANT_API_SOCKET });
}

/** Fixed-width text table; the last column is not padded. */
export function formatTable(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [line(header), ...rows.map(line)].join('\n');
}

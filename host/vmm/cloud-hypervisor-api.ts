/**
 * A client for Cloud Hypervisor's REST API (`--api-socket`, OpenAPI spec v0.3.0 in
 * shared/reference): HTTP/1.1 over a Unix socket, base path `/api/v1`, JSON bodies, 2xx on
 * success (204 for actions). A non-2xx answer becomes a `VMM_FAILED` error that carries the
 * VMM's own message, which is the only clue a user gets when, say, the tap is missing.
 */

import { request } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { VolantError } from '../../shared/errors.js';

/** One API call; CH answers within milliseconds unless it is wedged. */
export const API_REQUEST_TIMEOUT_MS = 5000;
/** How long a freshly spawned VMM gets to open its API socket. */
export const API_READY_TIMEOUT_MS = 10_000;
const API_READY_POLL_MS = 50;
/** Cap on a response body we keep (vm.info is a few KiB). */
const MAX_RESPONSE_BYTES = 1 << 20;

export interface ApiResponse {
  status: number;
  body: string;
}

export function chApiCall(socketPath: string, method: 'GET' | 'PUT', endpoint: string, body?: unknown): Promise<ApiResponse> {
  const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
  return new Promise((resolve, reject) => {
    const req = request(
      {
        socketPath,
        method,
        path: `/api/v1/${endpoint}`,
        headers: { Host: 'localhost', Accept: 'application/json', ...(payload ? { 'Content-Type': 'application/json', 'Content-Length': payload.length } : {}) },
        timeout: API_REQUEST_TIMEOUT_MS,
      },
      (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          size += c.length;
          if (size <= MAX_RESPONSE_BYTES) chunks.push(c);
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new VolantError('TIMEOUT', `cloud-hypervisor API ${endpoint}: no answer within ${API_REQUEST_TIMEOUT_MS} ms`)));
    req.on('error', reject);
    req.end(payload);
  });
}

/** Calls `endpoint` and insists on a 2xx answer. */
export async function chApiExpectOk(socketPath: string, method: 'GET' | 'PUT', endpoint: string, body?: unknown): Promise<ApiResponse> {
  let res: ApiResponse;
  try {
    res = await chApiCall(socketPath, method, endpoint, body);
  } catch (e) {
    if (e instanceof VolantError) throw e;
    throw new VolantError('VMM_FAILED', `cloud-hypervisor API ${endpoint}: ${(e as Error).message}`, undefined, { cause: e });
  }
  if (res.status < 200 || res.status > 299) {
    throw new VolantError('VMM_FAILED', `cloud-hypervisor ${endpoint} failed with HTTP ${res.status}: ${res.body.slice(0, 500).trim() || '(no body)'}`, {
      endpoint,
      status: res.status,
    });
  }
  return res;
}

/** Waits until `vmm.ping` answers; gives up early when `gone()` says the process has exited. */
export async function waitForChApi(socketPath: string, gone: () => boolean): Promise<void> {
  const deadline = Date.now() + API_READY_TIMEOUT_MS;
  let last = 'no answer';
  while (Date.now() < deadline) {
    if (gone()) throw new VolantError('VMM_FAILED', `cloud-hypervisor exited before its API socket ${socketPath} answered`);
    try {
      const res = await chApiCall(socketPath, 'GET', 'vmm.ping');
      if (res.status === 200) return;
      last = `HTTP ${res.status}`;
    } catch (e) {
      last = (e as Error).message;
    }
    await sleep(API_READY_POLL_MS);
  }
  throw new VolantError('VMM_FAILED', `cloud-hypervisor API socket ${socketPath} did not answer within ${API_READY_TIMEOUT_MS} ms (${last})`);
}

/**
 * volantd's HTTP front as clients meet it, for ingress tests that must keep holding whatever
 * the data plane becomes: the real API server (`createApiServer`, with its request-line rule,
 * parser-error handling and fastify routes) with the real ingress in front of fastify, listening
 * on 127.0.0.1. The orchestrator and plugin store are stubs that know no VM (the API routes are
 * not under test here); VMs exist only for the ingress's `lookup`, which the test provides.
 * Tests talk to it with raw bytes (`rawExchange`), so nothing normalises an attack before it
 * arrives.
 */

import type { Server } from 'node:http';
import { connect } from 'node:net';
import { Registry } from 'prom-client';
import { createApiServer, type ApiServer } from '../../host/api/server.js';
import { createIngress, type Ingress, type IngressOptions } from '../../host/ingress/index.js';
import type { Orchestrator } from '../../host/orchestrator/orchestrator.js';
import type { PluginImages } from '../../host/orchestrator/plugin-images.js';

export interface IngressStack {
  port: number;
  api: ApiServer;
  server: Server;
  ingress: Ingress;
  close(): Promise<void>;
}

export async function startIngressStack(opts: IngressOptions & { headersTimeoutMs?: number; token?: string }): Promise<IngressStack> {
  const ingress = createIngress(opts);
  const orchestrator = { list: () => [], get: () => undefined } as unknown as Orchestrator;
  const plugins = { list: () => [], get: () => undefined } as unknown as PluginImages;
  const api = await createApiServer({
    orchestrator,
    plugins,
    ipamReport: () => ({}),
    metrics: new Registry(),
    version: 'test',
    startedAt: Date.now(),
    ingress,
    headersTimeoutMs: opts.headersTimeoutMs,
    token: opts.token,
  });
  const address = await api.listen({ kind: 'tcp', host: '127.0.0.1', port: 0 });
  return {
    port: Number(address.split(':').pop()),
    api,
    server: api.server,
    ingress,
    close: async () => {
      await ingress.close();
      api.server.closeAllConnections();
      await api.close();
    },
  };
}

export interface RawExchangeOptions {
  /** Give up (and return what arrived) after this long. */
  waitMs?: number;
  /** Half-close after writing. */
  end?: boolean;
  /** Called with the socket once the first response bytes arrived (e.g. to write more). */
  onFirstBytes?: (write: (b: string) => void) => void;
}

/** Writes raw bytes, returns everything the server sent until it closed the connection (or `waitMs`). */
export function rawExchange(port: number, bytes: string | Buffer, opts: RawExchangeOptions = {}): Promise<string> {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port }, () => {
      s.write(bytes);
      if (opts.end) s.end();
    });
    let data = '';
    let first = true;
    const timer = setTimeout(() => s.destroy(), opts.waitMs ?? 5000);
    s.on('data', (d: Buffer) => {
      data += d.toString('latin1');
      if (first && opts.onFirstBytes) {
        first = false;
        opts.onFirstBytes((b) => {
          if (s.writable) s.write(b);
        });
      }
    });
    s.on('error', () => undefined);
    s.on('close', () => {
      clearTimeout(timer);
      resolve(data);
    });
  });
}

export interface ParsedResponse {
  status: number;
  reason: string;
  headers: Map<string, string[]>;
  body: string;
}

/** The first response in `text` (head and the rest as body). */
export function parseRawResponse(text: string): ParsedResponse {
  const end = text.indexOf('\r\n\r\n');
  const head = end < 0 ? text : text.slice(0, end);
  const lines = head.split('\r\n');
  const m = /^HTTP\/1\.[01] (\d{3}) ?(.*)$/.exec(lines[0] ?? '');
  const headers = new Map<string, string[]>();
  for (const l of lines.slice(1)) {
    const i = l.indexOf(':');
    if (i <= 0) continue;
    const k = l.slice(0, i).toLowerCase();
    headers.set(k, [...(headers.get(k) ?? []), l.slice(i + 1).trim()]);
  }
  return { status: m ? Number(m[1]) : 0, reason: m?.[2] ?? '', headers, body: end < 0 ? '' : text.slice(end + 4) };
}

/**
 * What the routes need from the rest of volantd, gathered in one object the server passes to
 * each route module. The ingress seam is the docs/CONTRACTS.md interface: the HTTP server offers every
 * request and upgrade to it first (after auth); it answers `true` when it took the request.
 */

import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { FrontOptions, IngressFront } from '../ingress/index.js';
import type { Orchestrator } from '../orchestrator/orchestrator.js';
import type { PluginImages } from '../orchestrator/plugin-images.js';
import type { Registry } from 'prom-client';

export interface IngressSeam {
  /** The fast path (host/ingress/front.ts): the server's client connections are read there first. */
  front?(opts: FrontOptions): IngressFront;
  handleRequest(req: IncomingMessage, res: ServerResponse): boolean;
  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): boolean;
}

export interface ApiContext {
  orchestrator: Orchestrator;
  plugins: PluginImages;
  /** Lease/CID facts for `/api/v1/debug/ipam`. */
  ipamReport: () => unknown;
  /** volantd's one registry (host/metrics/registry.ts); the API adds its own families and serves it at /metrics. */
  metrics: Registry;
  version: string;
  startedAt: number;
}

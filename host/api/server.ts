/**
 * volantd's HTTP API server. One Node http server (fastify's `serverFactory`) in front of fastify:
 *
 *   request ─▶ bearer auth (when required) ─▶ ingress.handleRequest (first refusal) ─▶ fastify routes
 *   upgrade ─▶ bearer auth ─▶ ingress.handleUpgrade ─▶ 501 NOT_SUPPORTED
 *
 * Auth is decided once (`tokenRequired`, pure) and enforced in two places that share
 * `checkBearer`: the raw handler (so ingress never sees an unauthenticated request) and a fastify
 * hook (every route except those marked `config.public`, i.e. health). Connections that arrive
 * on a Unix socket (the primary listener when it is one, or `listenUnix`) need no token: they
 * are marked when accepted, never by anything the client sends. Every error leaves through
 * `errorReply`, so all answers share one JSON shape and one code → status map.
 */

import { chmod, chown, unlink } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createNetServer, type Server as NetServer } from 'node:net';
import type { Duplex } from 'node:stream';
import swagger from '@fastify/swagger';
import Fastify, { type FastifyInstance } from 'fastify';
import { checkBearer } from './auth.js';
import type { ApiContext, IngressSeam } from './context.js';
import { errorReply, toVolantError } from './errors.js';
import type { ListenAddress } from './listen.js';
import { eventRoutes } from './routes/events.js';
import { logRoutes } from './routes/logs.js';
import { pluginRoutes } from './routes/plugins.js';
import { systemRoutes } from './routes/system.js';
import { vmRoutes } from './routes/vms.js';


/** Request bodies larger than this are refused (a create request is a few KiB at most). */
export const MAX_BODY_BYTES = 1024 * 1024;

export interface ApiServerOptions extends ApiContext {
  /** When set, every route except health requires `Authorization: Bearer <token>` on TCP connections. */
  token?: string;
  ingress?: IngressSeam;
  logger?: boolean;
}

export interface ApiServer {
  app: FastifyInstance;
  server: Server;
  /** The primary listener (TCP, or a Unix socket); returns its address. */
  listen(address: ListenAddress): Promise<string>;
  /** A further Unix-socket listener (no token), mode 0660, group `gid` when given. */
  listenUnix(path: string, options?: { gid?: number }): Promise<string>;
  close(): Promise<void>;
}

/** Sockets accepted on a Unix-socket listener: their requests need no token. */
const localSockets = new WeakSet<object>();

function authorized(token: string | undefined, req: IncomingMessage): boolean {
  if (token === undefined || localSockets.has(req.socket)) return true;
  try {
    checkBearer(req.headers.authorization, token);
    return true;
  } catch {
    return false;
  }
}

/**
 * The API's bearer token is volantd's credential, not the workload's: once it has been checked,
 * it is removed from what ingress forwards (parsed and raw headers alike).
 */
function consumeAuthorization(req: IncomingMessage): void {
  delete req.headers.authorization;
  const raw = req.rawHeaders;
  for (let i = raw.length - 2; i >= 0; i -= 2) if (raw[i]!.toLowerCase() === 'authorization') raw.splice(i, 2);
}

function rawError(socket: Duplex, err: unknown): void {
  const { status, body } = errorReply(err);
  const text = JSON.stringify(body);
  socket.end(`HTTP/1.1 ${status} Error\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(text)}\r\nconnection: close\r\n\r\n${text}`);
}

export async function createApiServer(opts: ApiServerOptions): Promise<ApiServer> {
  const { token, ingress } = opts;
  let server!: Server;
  const app = Fastify({
    logger: opts.logger ?? false,
    bodyLimit: MAX_BODY_BYTES,
    forceCloseConnections: true,
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false, allErrors: true, useDefaults: false } },
    serverFactory: (handler) => {
      server = createServer((req: IncomingMessage, res: ServerResponse) => {
        if (ingress && authorized(token, req)) {
          const saved = token !== undefined && !localSockets.has(req.socket) ? { raw: [...req.rawHeaders], authorization: req.headers.authorization } : undefined;
          if (saved) consumeAuthorization(req);
          if (ingress.handleRequest(req, res)) return;
          if (saved) {
            // Not an ingress request: fastify's auth hook must see the header again.
            req.rawHeaders.splice(0, req.rawHeaders.length, ...saved.raw);
            req.headers.authorization = saved.authorization;
          }
        }
        handler(req, res);
      });
      server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
        socket.on('error', () => socket.destroy());
        try {
          if (token !== undefined && !localSockets.has(req.socket)) {
            checkBearer(req.headers.authorization, token);
            consumeAuthorization(req);
          }
          if (ingress?.handleUpgrade(req, socket, head)) return;
          rawError(socket, toVolantError({ statusCode: 404, code: 'FST_ERR_NOT_FOUND', message: `no upgrade handler for ${req.url ?? ''}` }));
        } catch (e) {
          rawError(socket, e);
        }
      });
      return server;
    },
  });

  const requests = opts.metrics.counter('volant_api_requests_total', 'API requests by method, route and status');
  app.addHook('onResponse', async (req, reply) => {
    requests.inc({ method: req.method, route: req.routeOptions.url ?? 'unknown', status: String(reply.statusCode) });
  });
  opts.metrics.register(() => {
    const byState = new Map<string, number>();
    let leases = 0;
    for (const vm of opts.orchestrator.list()) {
      byState.set(vm.state, (byState.get(vm.state) ?? 0) + 1);
      if (vm.ip !== null) leases += 1;
    }
    return [
      { name: 'volant_vms', help: 'VMs by state', type: 'gauge', samples: [...byState].map(([state, value]) => ({ labels: { state }, value })) },
      { name: 'volant_ip_leases', help: 'IPv4 addresses leased to VMs', type: 'gauge', samples: [{ value: leases }] },
    ];
  });

  app.addHook('onRequest', async (req) => {
    const cfg = req.routeOptions.config as { public?: boolean } | undefined;
    if (token !== undefined && !cfg?.public && !localSockets.has(req.raw.socket)) checkBearer(req.headers.authorization, token);
  });
  app.setErrorHandler((err, req, reply) => {
    const { status, body } = errorReply(err);
    if (status >= 500) req.log.error({ err }, 'request failed');
    reply.code(status).type('application/json').send(body);
  });
  app.setNotFoundHandler((req, reply) => {
    const { status, body } = errorReply(toVolantError({ statusCode: 404, code: 'FST_ERR_NOT_FOUND', message: `no route ${req.method} ${req.url.split('?')[0]}` }));
    reply.code(status).send(body);
  });

  await app.register(swagger, {
    openapi: {
      openapi: '3.0.3',
      info: { title: 'volantd API', version: opts.version, description: 'Volant microVM daemon' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: [{ bearer: [] }],
    },
  });
  systemRoutes(app, opts);
  pluginRoutes(app, opts);
  vmRoutes(app, opts);
  logRoutes(app, opts);
  eventRoutes(app, opts);
  await app.ready();

  const unixPaths: string[] = [];
  const unixServers: NetServer[] = [];
  return {
    app,
    server,
    async listen(address: ListenAddress): Promise<string> {
      if (address.kind === 'unix') {
        await unlink(address.path).catch(() => undefined);
        unixPaths.push(address.path);
        server.on('connection', (socket) => localSockets.add(socket));
        await app.listen({ path: address.path });
        await chmod(address.path, 0o660);
        return `unix:${address.path}`;
      }
      await app.listen({ host: address.host, port: address.port });
      const a = server.address();
      return typeof a === 'object' && a ? `${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}` : String(a);
    },
    async listenUnix(path: string, options: { gid?: number } = {}): Promise<string> {
      await unlink(path).catch(() => undefined);
      const local = createNetServer((socket) => {
        localSockets.add(socket);
        server.emit('connection', socket);
      });
      await new Promise<void>((resolve, reject) => {
        local.once('error', reject);
        local.listen(path, () => {
          local.off('error', reject);
          resolve();
        });
      });
      unixServers.push(local);
      unixPaths.push(path);
      await chmod(path, 0o660);
      if (options.gid !== undefined) await chown(path, -1, options.gid);
      return `unix:${path}`;
    },
    async close(): Promise<void> {
      for (const local of unixServers) local.close();
      server.closeIdleConnections?.();
      await app.close();
      for (const p of unixPaths) await unlink(p).catch(() => undefined);
    },
  };
}

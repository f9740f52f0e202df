/**
 * volantd's HTTP API server. One Node http server (fastify's `serverFactory`) in front of fastify:
 *
 *   request ─▶ request-line rule ─▶ bearer auth (when required) ─▶ ingress.handleRequest (first refusal) ─▶ fastify routes
 *   upgrade ─▶ request-line rule ─▶ bearer auth ─▶ ingress.handleUpgrade ─▶ 404 NOT_FOUND
 *   CONNECT ─▶ 501 NOT_SUPPORTED
 *   parser refusals (clientError) ─▶ answerClientError (431 / 408 / 400)
 *
 * The request-line rule (shared/http-request-line.ts) is the front door for the API and the
 * ingress alike: only HTTP/1.0 and 1.1, and HTTP/1.1 with a Host, else 400 before anything else
 * runs. Auth is decided once (`tokenRequired`, pure) and enforced in two places that share
 * `checkBearer`: the raw handler (so ingress never sees an unauthenticated request) and a fastify
 * hook (every route except those marked `config.public`, i.e. health). Connections that arrive
 * on a Unix socket (the primary listener when it is one, or `listenUnix`) need no token: they
 * are marked when accepted, never by anything the client sends. Every error leaves in the one
 * shape (shared/http-error-response.ts) with one code → status map, the HTTP parser's own
 * refusals included.
 *
 * Logging is fastify's own, on volantd's logger: each request has an id (`reqId`, the client's
 * X-Request-Id when it passes host/log/request-id.ts, else a UUID) that every line about it
 * carries and every answer names in `X-Request-Id`. A request that fails with a 5xx is logged
 * with its cause (`err`) at error; every finished request is one line (`info` when it changes
 * something, `debug` for reads, so scrapes and health checks do not flood the log).
 */

import { chmod, chown, unlink } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createNetServer, type Server as NetServer, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import swagger from '@fastify/swagger';
import Fastify, { type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest, LogController } from 'fastify';
import { checkBearer } from './auth.js';
import type { ApiContext, IngressSeam } from './context.js';
import type { IngressFront } from '../ingress/index.js';
import { answerClientError, ERROR_CONTENT_TYPE, sendErrorOnSocket, sendErrorResponse } from '../../shared/http-error-response.js';
import { requestLineRefusal } from '../../shared/http-request-line.js';
import { VolantError } from '../../shared/errors.js';
import { errorReply, toVolantError } from './errors.js';
import { ApiMetrics } from './metrics.js';
import type { ListenAddress } from './listen.js';
import { type Logger, silentLogger } from '../log/logger.js';
import { REQUEST_ID_HEADER, requestIdFor } from '../log/request-id.js';
import { eventRoutes } from './routes/events.js';
import { logRoutes } from './routes/logs.js';
import { pluginRoutes } from './routes/plugins.js';
import { systemRoutes } from './routes/system.js';
import { vmRoutes } from './routes/vms.js';


/** Request bodies larger than this are refused (a create request is a few KiB at most). */
export const MAX_BODY_BYTES = 1024 * 1024;
/** A request head larger than this is refused with 431 (Node's default). */
export const MAX_HEADER_BYTES = 16 * 1024;
/** A client must finish its request head within this long (408 otherwise); bodies are not bounded (long uploads through the ingress). */
export const HEADERS_TIMEOUT_MS = 20_000;
/** How often the server looks for connections past HEADERS_TIMEOUT_MS. */
export const CONNECTIONS_CHECK_INTERVAL_MS = 1_000;

export interface ApiServerOptions extends ApiContext {
  /** When set, every route except health requires `Authorization: Bearer <token>` on TCP connections. */
  token?: string;
  ingress?: IngressSeam;
  /** The API's logger (fastify's, with request ids); default: none. */
  log?: Logger;
  /** Overrides HEADERS_TIMEOUT_MS (tests). */
  headersTimeoutMs?: number;
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

/** A request's route pattern (`/api/v1/vms/:name`), or `unknown` when none matched. */
function routeOf(req: FastifyRequest): string {
  return req.routeOptions.url ?? 'unknown';
}

/**
 * The API's request log: one line when a request ends (fastify's "incoming request" line is
 * dropped), at `info` for requests that change something and `debug` for reads, so scrapes and
 * health checks do not flood the log. The rest of fastify's request logging stays as it is.
 */
class ApiLogController extends LogController {
  override incomingRequest(): void {}

  override requestCompleted(error: Error | null | undefined, req: FastifyRequest, reply: FastifyReply): void {
    const fields = { method: req.method, url: req.url, route: routeOf(req), status: reply.statusCode, ms: Math.round(reply.elapsedTime) };
    if (error) reply.log.error({ ...fields, err: error }, 'request errored');
    else reply.log[req.method === 'GET' || req.method === 'HEAD' ? 'debug' : 'info'](fields, 'request done');
  }
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

/**
 * Puts the ingress fast path (host/ingress/front.ts) in front of Node's HTTP server: every client
 * connection is read there first; the first request that is not a proxy request hands the
 * connection (that request's bytes included) to Node's own connection handling, and so to the
 * request-line rule, auth and fastify above. Auth on the fast path is the same rule: the token on
 * TCP, none on a Unix socket, `checkBearer` deciding.
 */
function attachFront(server: Server, makeFront: NonNullable<IngressSeam['front']>, o: { token: string | undefined; headersTimeout: number }): IngressFront {
  const nodeListeners = server.listeners('connection') as ((socket: Socket) => void)[];
  server.removeAllListeners('connection');
  const front = makeFront({
    authorize: (authorization, socket) => {
      if (o.token === undefined || localSockets.has(socket)) return undefined;
      try {
        checkBearer(authorization, o.token);
        return undefined;
      } catch (e) {
        return toVolantError(e);
      }
    },
    consumesAuthorization: (socket) => o.token !== undefined && !localSockets.has(socket),
    handOver: (socket, bytes) => {
      // Node reads a fresh connection's bytes natively (`consume`), past the stream we give the
      // request back to; marking the handle consumed keeps it on the stream, where `unshift` works.
      const handle = (socket as Socket & { _handle?: { _consumed?: boolean } | null })._handle;
      if (handle) handle._consumed = true;
      socket.unshift(bytes);
      for (const l of nodeListeners) l.call(server, socket);
      socket.resume();
    },
    maxHeaderBytes: MAX_HEADER_BYTES,
    headersTimeoutMs: o.headersTimeout,
    keepAliveTimeoutMs: server.keepAliveTimeout,
  });
  server.on('connection', (socket: Socket) => front.accept(socket));
  return front;
}

export async function createApiServer(opts: ApiServerOptions): Promise<ApiServer> {
  const { token, ingress } = opts;
  let server!: Server;
  const headersTimeout = opts.headersTimeoutMs ?? HEADERS_TIMEOUT_MS;
  const app = Fastify({
    // Typed as fastify's base logger so the instance keeps the type the route modules take.
    loggerInstance: (opts.log ?? silentLogger()) as FastifyBaseLogger,
    logController: new ApiLogController(),
    genReqId: (req) => requestIdFor(req.headers[REQUEST_ID_HEADER]),
    bodyLimit: MAX_BODY_BYTES,
    forceCloseConnections: true,
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false, allErrors: true, useDefaults: false } },
    clientErrorHandler: (err, socket) => {
      answerClientError(err as NodeJS.ErrnoException & { reason?: string }, socket, MAX_HEADER_BYTES);
    },
    serverFactory: (handler) => {
      server = createServer(
        {
          maxHeaderSize: MAX_HEADER_BYTES,
          requireHostHeader: false, // the request-line rule answers a missing Host in our shape
          headersTimeout,
          requestTimeout: 0,
          connectionsCheckingInterval: Math.min(CONNECTIONS_CHECK_INTERVAL_MS, headersTimeout),
        },
        (req: IncomingMessage, res: ServerResponse) => {
        const refusal = requestLineRefusal(req, { requireHost: true });
        if (refusal !== undefined) {
          sendErrorResponse(res, refusal, { close: true });
          return;
        }
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
        },
      );
      // Without a listener Node closes a CONNECT without a word; say why instead.
      server.on('connect', (req: IncomingMessage, socket: Duplex) => {
        socket.on('error', () => socket.destroy());
        sendErrorOnSocket(socket, requestLineRefusal(req, { requireHost: false }) ?? new VolantError('NOT_SUPPORTED', 'CONNECT is not served here: volantd is not a forward proxy'));
      });
      server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
        socket.on('error', () => socket.destroy());
        try {
          const refusal = requestLineRefusal(req, { requireHost: true });
          if (refusal !== undefined) throw refusal;
          if (token !== undefined && !localSockets.has(req.socket)) {
            checkBearer(req.headers.authorization, token);
            consumeAuthorization(req);
          }
          if (ingress?.handleUpgrade(req, socket, head)) return;
          sendErrorOnSocket(socket, toVolantError({ statusCode: 404, code: 'FST_ERR_NOT_FOUND', message: `no upgrade handler for ${req.url ?? ''}` }));
        } catch (e) {
          sendErrorOnSocket(socket, toVolantError(e));
        }
      });
      return server;
    },
  });

  const front = ingress?.front === undefined ? undefined : attachFront(server, ingress.front.bind(ingress), { token, headersTimeout });

  const apiMetrics = new ApiMetrics(opts.metrics);
  app.addHook('onResponse', async (req, reply) => {
    apiMetrics.requestDone(req.method, routeOf(req), reply.statusCode, reply.elapsedTime / 1000);
  });

  app.addHook('onRequest', async (req, reply) => {
    reply.header(REQUEST_ID_HEADER, req.id);
    const cfg = req.routeOptions.config as { public?: boolean } | undefined;
    if (token !== undefined && !cfg?.public && !localSockets.has(req.raw.socket)) checkBearer(req.headers.authorization, token);
  });
  app.setErrorHandler((err, req, reply) => {
    const { status, body } = errorReply(err, req.id);
    if (status >= 500) req.log.error({ err, method: req.method, url: req.url }, `${req.method} ${req.url} failed: ${err instanceof Error ? err.message : String(err)}`);
    reply.code(status).type(ERROR_CONTENT_TYPE).send(body);
  });
  app.setNotFoundHandler((req, reply) => {
    const { status, body } = errorReply(toVolantError({ statusCode: 404, code: 'FST_ERR_NOT_FOUND', message: `no route ${req.method} ${req.url.split('?')[0]}` }));
    reply.code(status).type(ERROR_CONTENT_TYPE).send(body);
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
      front?.close();
      server.closeIdleConnections?.();
      await app.close();
      for (const p of unixPaths) await unlink(p).catch(() => undefined);
    },
  };
}

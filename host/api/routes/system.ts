/** Health, IPAM debug view, Prometheus metrics and the OpenAPI document. */

import type { FastifyInstance } from 'fastify';
import { Type } from '@sinclair/typebox';
import type { ApiContext } from '../context.js';
import { ErrorBody, HealthView } from '../schemas.js';

export function systemRoutes(app: FastifyInstance, ctx: ApiContext): void {
  app.get(
    '/api/v1/health',
    { schema: { summary: 'liveness; needs no token', tags: ['system'], response: { 200: HealthView } }, config: { public: true } },
    async () => ({ status: 'ok' as const, version: ctx.version, uptime_s: Math.round((Date.now() - ctx.startedAt) / 100) / 10 }),
  );
  app.get(
    '/api/v1/debug/ipam',
    { schema: { summary: 'address leases, CIDs and the pool', tags: ['system'], response: { 200: Type.Unknown(), 401: ErrorBody } } },
    async () => ctx.ipamReport(),
  );
  app.get('/metrics', { schema: { summary: 'Prometheus text format (docs/metrics.md)', tags: ['system'], hide: false } }, async (_req, reply) => {
    reply.type(ctx.metrics.contentType);
    return ctx.metrics.metrics();
  });
  app.get('/openapi.json', { schema: { summary: 'this API as OpenAPI 3', tags: ['system'] } }, async () =>
    (app as unknown as { swagger(): unknown }).swagger(),
  );
}

/**
 * `GET /api/v1/events`: VM events as server-sent events (`id`, `event: vm.state|vm.deleted`,
 * `data: <json>`), with a comment line every HEARTBEAT_INTERVAL_MS so proxies keep it open.
 */

import type { FastifyInstance } from 'fastify';
import type { ApiContext } from '../context.js';

export const HEARTBEAT_INTERVAL_MS = 15_000;

export function eventRoutes(app: FastifyInstance, ctx: ApiContext): void {
  app.get('/api/v1/events', { schema: { tags: ['vms'], summary: 'server-sent VM events (text/event-stream)' } }, (req, reply) => {
    reply.hijack();
    const res = reply.raw;
    res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-store', connection: 'keep-alive' });
    res.write(': volantd events\n\n');
    const unsubscribe = ctx.orchestrator.events.subscribe((e) => {
      res.write(`id: ${e.id}\nevent: ${e.type}\ndata: ${JSON.stringify(e)}\n\n`);
    });
    const heartbeat = setInterval(() => res.write(': keep-alive\n\n'), HEARTBEAT_INTERVAL_MS);
    req.raw.once('close', () => {
      clearInterval(heartbeat);
      unsubscribe();
    });
  });
}

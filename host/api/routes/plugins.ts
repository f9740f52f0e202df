/** Installed plugin images: install from a `volar plugins build` directory, list, show, remove. */

import { Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { VolantError } from '../../../shared/errors.js';
import type { ApiContext } from '../context.js';
import { ErrorBody, InstallPluginRequest, PluginList, PluginNameParams, PluginView } from '../schemas.js';
import { pluginView } from '../views.js';

export function pluginRoutes(base: FastifyInstance, ctx: ApiContext): void {
  const app = base.withTypeProvider<TypeBoxTypeProvider>();
  const tags = ['plugins'];
  app.get('/api/v1/plugins', { schema: { tags, response: { 200: PluginList } } }, async () => ({ plugins: ctx.plugins.list().map(pluginView) }));
  app.post(
    '/api/v1/plugins',
    { schema: { tags, summary: 'register <path>/plugin.json + <path>/initramfs.img', body: InstallPluginRequest, response: { 201: PluginView, 400: ErrorBody, 409: ErrorBody } } },
    async (req, reply) => {
      const p = await ctx.plugins.install(req.body.path);
      reply.code(201);
      return pluginView(p);
    },
  );
  app.get('/api/v1/plugins/:name', { schema: { tags, params: PluginNameParams, response: { 200: PluginView, 404: ErrorBody } } }, async (req) => {
    const p = ctx.plugins.get(req.params.name);
    if (!p) throw new VolantError('NOT_FOUND', `no plugin named ${JSON.stringify(req.params.name)} is installed`);
    return pluginView(p);
  });
  app.delete('/api/v1/plugins/:name', { schema: { tags, params: PluginNameParams, response: { 204: Type.Null(), 404: ErrorBody, 409: ErrorBody } } }, async (req, reply) => {
    await ctx.plugins.remove(req.params.name);
    reply.code(204);
    return null;
  });
}

/** VM life cycle routes. Creation validates with shared `validateCreateVmRequest` (inside the orchestrator). */

import type { FastifyInstance } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { VolantError } from '../../../shared/errors.js';
import { CreateVmRequest } from '../../../shared/schema/vm-config.js';
import type { ApiContext } from '../context.js';
import { DeleteVmQuery, ErrorBody, VmList, VmNameParams, VmView } from '../schemas.js';
import type { VmRecord } from '../../store/vms.js';
import { vmView } from '../views.js';

const truthy = (v: string | undefined): boolean => v === '1' || v === 'true';

/** The create body is checked by the shared validator (schema + semantic rules + `networking` alias), not Ajv. */
const acceptAsIs = () => (data: unknown) => ({ value: data });

export function vmRoutes(base: FastifyInstance, ctx: ApiContext): void {
  const app = base.withTypeProvider<TypeBoxTypeProvider>();
  const tags = ['vms'];
  const o = ctx.orchestrator;
  const view = (vm: VmRecord): VmView => vmView(vm, o.discoveredAddress(vm.name));
  app.get('/api/v1/vms', { schema: { tags, response: { 200: VmList } } }, async () => ({ vms: o.list().map(view) }));
  app.post(
    '/api/v1/vms',
    {
      schema: {
        tags,
        summary: 'create and boot a VM; answers when kestrel is healthy, or with the error after rolling back',
        body: CreateVmRequest,
        response: { 201: VmView, 400: ErrorBody, 404: ErrorBody, 409: ErrorBody, 502: ErrorBody, 503: ErrorBody, 504: ErrorBody },
      },
      validatorCompiler: acceptAsIs,
    },
    async (req, reply) => {
      const vm = await o.create(req.body);
      reply.code(201);
      return view(vm);
    },
  );
  app.get('/api/v1/vms/:name', { schema: { tags, params: VmNameParams, response: { 200: VmView, 404: ErrorBody } } }, async (req) => view(o.get(req.params.name)));
  app.delete(
    '/api/v1/vms/:name',
    { schema: { tags, params: VmNameParams, querystring: DeleteVmQuery, response: { 204: Type.Null(), 404: ErrorBody, 409: ErrorBody } } },
    async (req, reply) => {
      await o.delete(req.params.name, { force: truthy(req.query.force) });
      reply.code(204);
      return null;
    },
  );
  app.post('/api/v1/vms/:name/start', { schema: { tags, params: VmNameParams, response: { 200: VmView, 404: ErrorBody, 409: ErrorBody, 502: ErrorBody } } }, async (req) =>
    view(await o.start(req.params.name)),
  );
  app.post('/api/v1/vms/:name/stop', { schema: { tags, params: VmNameParams, response: { 200: VmView, 404: ErrorBody, 409: ErrorBody } } }, async (req) =>
    view(await o.stop(req.params.name)),
  );
  app.all(
    '/api/v1/vms/:name/proxy/*',
    { schema: { tags: ['ingress'], summary: 'ingress to the VM workload (served by host/ingress)', params: Type.Object({ name: VmNameParams.properties.name, '*': Type.String() }), response: { 501: ErrorBody } } },
    async (req) => {
      o.get(req.params.name);
      throw new VolantError('NOT_SUPPORTED', 'the ingress proxy is not enabled in this volantd');
    },
  );
}

/** VM life cycle routes. Creation validates with shared `validateCreateVmRequest` (inside the orchestrator). */

import type { FastifyInstance } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { type TSchema, Type } from '@sinclair/typebox';
import { ValidationError, VolantError } from '../../../shared/errors.js';
import { structuralProblems } from '../../../shared/schema/validate.js';
import { CreateVmRequest } from '../../../shared/schema/vm-config.js';
import type { ApiContext } from '../context.js';
import { CreateVmQuery, DeleteVmQuery, ErrorBody, VmList, VmNameParams, VmView } from '../schemas.js';
import type { VmRecord } from '../../store/vms.js';
import { vmView } from '../views.js';

const truthy = (v: string | undefined): boolean => v === '1' || v === 'true';
const falsy = (v: string | undefined): boolean => v === '0' || v === 'false';

/**
 * `create` without waiting for the boot: resolves with the VM as soon as it is recorded (its
 * first `vm.state` event, state creating), or with create's own error when it fails before that
 * (validation, name or address taken, unknown plugin). The boot goes on; its outcome reaches
 * /api/v1/events and the VM's state, and a failure is in the volantd log.
 */
function createRecorded(o: ApiContext['orchestrator'], body: unknown): Promise<VmRecord> {
  const name = (body as { name?: unknown } | null)?.name;
  return new Promise((resolve, reject) => {
    const off = o.events.subscribe((e) => {
      if (e.type === 'vm.state' && e.vm === name && e.state === 'creating') {
        off();
        resolve(o.get(e.vm));
      }
    });
    o.create(body).then(
      (vm) => {
        off();
        resolve(vm);
      },
      (err: unknown) => {
        off();
        reject(err);
      },
    );
  });
}

/**
 * The create body is checked by the shared validator (schema + semantic rules + `networking`
 * alias) inside the orchestrator, not by Ajv; the query string is checked against its schema here.
 */
const createValidator = ({ schema, httpPart }: { schema: unknown; httpPart?: string }) =>
  httpPart === 'body'
    ? (data: unknown) => ({ value: data })
    : (data: unknown) => {
        const problems = structuralProblems(schema as TSchema, data);
        return problems.length === 0 ? { value: data } : { error: new ValidationError(httpPart ?? 'request', problems) };
      };

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
        summary: 'create and boot a VM; answers 201 when kestrel is healthy, or with the error after rolling back; with wait=0, 202 once recorded',
        body: CreateVmRequest,
        querystring: CreateVmQuery,
        response: { 201: VmView, 202: VmView, 400: ErrorBody, 404: ErrorBody, 409: ErrorBody, 502: ErrorBody, 503: ErrorBody, 504: ErrorBody },
      },
      validatorCompiler: createValidator,
    },
    async (req, reply) => {
      if (falsy(req.query.wait)) {
        const vm = await createRecorded(o, req.body);
        reply.code(vm.state === 'running' ? 201 : 202);
        return view(vm);
      }
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

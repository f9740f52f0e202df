/**
 * The per-VM configuration a user gives at create time. Anything set here wins over the plugin
 * manifest (see `resolveNetworkConfig`).
 */

import { type Static, Type } from '@sinclair/typebox';
import type { Problem } from '../errors.js';
import { tryParseIPv4 } from '../ipv4.js';
import { PLUGIN_NAME_PATTERN, VM_NAME_PATTERN } from '../names.js';
import { rowNetwork } from '../network-policy.js';
import { EnvMap, MAX_CPUS, MAX_MEMORY_MB, MIN_MEMORY_MB, NetworkSettings, networkProblems, normaliseNetworkAlias } from './manifest.js';
import { isPlainObject, structuralProblems, type Validated } from './validate.js';

export const VmConfig = Type.Object(
  {
    plugin: Type.String({ pattern: PLUGIN_NAME_PATTERN, description: 'name of an installed plugin' }),
    network: Type.Optional(NetworkSettings),
    ip: Type.Optional(Type.String({ maxLength: 15, description: 'explicit IPv4 address from the pool (bridged mode)' })),
    cpus: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_CPUS })),
    memory_mb: Type.Optional(Type.Integer({ minimum: MIN_MEMORY_MB, maximum: MAX_MEMORY_MB })),
    env: Type.Optional(EnvMap),
  },
  { additionalProperties: false, $id: 'VmConfig' },
);
export type VmConfig = Static<typeof VmConfig>;

export const CreateVmRequest = Type.Object(
  {
    name: Type.String({ pattern: VM_NAME_PATTERN, description: '1-63 letters, digits, - or _, starting with a letter or digit' }),
    plugin: VmConfig.properties.plugin,
    network: VmConfig.properties.network,
    ip: VmConfig.properties.ip,
    cpus: VmConfig.properties.cpus,
    memory_mb: VmConfig.properties.memory_mb,
    env: VmConfig.properties.env,
  },
  { additionalProperties: false, $id: 'CreateVmRequest' },
);
export type CreateVmRequest = Static<typeof CreateVmRequest>;

function vmProblems(v: VmConfig): Problem[] {
  const problems = networkProblems(v.network, '/network');
  if (v.ip !== undefined && tryParseIPv4(v.ip) === undefined) problems.push({ path: '/ip', message: `${JSON.stringify(v.ip)} is not a dotted-quad IPv4 address` });
  if (v.ip !== undefined && v.network?.mode !== undefined && !rowNetwork(v.network.mode).lease) {
    problems.push({ path: '/ip', message: `an explicit address needs network mode bridged, not ${v.network.mode}` });
  }
  return problems;
}

function validateWith<T extends VmConfig>(schema: typeof VmConfig | typeof CreateVmRequest, input: unknown, what: string): Validated<T> {
  if (!isPlainObject(input)) return { ok: false, problems: [{ path: '/', message: `${what} must be a JSON object` }] };
  const { value, problems } = normaliseNetworkAlias(input);
  problems.push(...structuralProblems(schema, value));
  if (problems.length > 0) return { ok: false, problems };
  const semantic = vmProblems(value as T);
  return semantic.length > 0 ? { ok: false, problems: semantic } : { ok: true, value: value as T };
}

export function validateVmConfig(input: unknown): Validated<VmConfig> {
  return validateWith<VmConfig>(VmConfig, input, 'a VM config');
}

export function validateCreateVmRequest(input: unknown): Validated<CreateVmRequest> {
  return validateWith<CreateVmRequest>(CreateVmRequest, input, 'a VM create request');
}

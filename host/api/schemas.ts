/**
 * Schemas only the API needs (responses, params, the plugin-install body). Request bodies that
 * host and guest share (`CreateVmRequest`, `PluginManifest`) come from `shared/`; everything is
 * declared once here so routes, validation, serialization and `/openapi.json` agree.
 */

import { type Static, Type } from '@sinclair/typebox';
import { PLUGIN_NAME_PATTERN, VM_NAME_PATTERN } from '../../shared/names.js';
import { NetworkMode } from '../../shared/schema/manifest.js';
import { VM_STATES } from '../orchestrator/state.js';

export const ErrorBody = Type.Object(
  {
    error: Type.Object({
      code: Type.String({ description: 'stable error code (shared/errors.ts ErrorCodes)' }),
      message: Type.String(),
      details: Type.Optional(Type.Unknown()),
    }),
  },
  { description: 'every error answer' },
);
export type ErrorBody = Static<typeof ErrorBody>;

export const VmNameParams = Type.Object({ name: Type.String({ pattern: VM_NAME_PATTERN, description: 'VM name' }) });
export const PluginNameParams = Type.Object({ name: Type.String({ pattern: PLUGIN_NAME_PATTERN, description: 'plugin name' }) });

export const VmStateSchema = Type.Union(
  VM_STATES.map((s) => Type.Literal(s)),
  { description: 'creating → starting → running → stopping → stopped; failed (see error)' },
);

export const VmView = Type.Object({
  name: Type.String(),
  plugin: Type.String(),
  state: VmStateSchema,
  error: Type.Optional(Type.String({ description: 'why the VM failed' })),
  network_mode: NetworkMode,
  ip: Type.Optional(Type.String({ description: 'the address leased from the pool (bridged mode)' })),
  guest_ip: Type.Optional(Type.String({ description: 'the address the guest uses: its lease, or the one a DHCP server gave it (dhcp mode, once seen on the bridge)' })),
  cid: Type.Optional(Type.Integer()),
  tap: Type.Optional(Type.String()),
  mac: Type.Optional(Type.String()),
  pid: Type.Optional(Type.Integer()),
  vmm: Type.Optional(Type.String()),
  cpus: Type.Optional(Type.Integer()),
  memory_mb: Type.Optional(Type.Integer()),
  created_at: Type.String(),
  updated_at: Type.String(),
});
export type VmView = Static<typeof VmView>;

export const VmList = Type.Object({ vms: Type.Array(VmView) });

export const DeleteVmQuery = Type.Object({
  force: Type.Optional(Type.Union([Type.Literal('1'), Type.Literal('true'), Type.Literal('0'), Type.Literal('false')], { description: 'stop a running VM first' })),
});

export const CreateVmQuery = Type.Object({
  wait: Type.Optional(Type.Union([Type.Literal('1'), Type.Literal('true'), Type.Literal('0'), Type.Literal('false')], { description: 'wait until kestrel is healthy (default); 0: answer 202 once the VM is recorded, follow /api/v1/events' })),
});

export const LogsQuery = Type.Object({
  follow: Type.Optional(Type.Union([Type.Literal('1'), Type.Literal('true'), Type.Literal('0'), Type.Literal('false')], { description: 'keep streaming new lines' })),
});

export const InstallPluginRequest = Type.Object(
  {
    path: Type.String({ pattern: '^/', minLength: 1, maxLength: 4096, description: 'absolute path of a `volar plugins build` output directory (plugin.json + initramfs.img)' }),
  },
  { additionalProperties: false },
);
export type InstallPluginRequest = Static<typeof InstallPluginRequest>;

export const PluginView = Type.Object({
  name: Type.String(),
  version: Type.String(),
  description: Type.Optional(Type.String()),
  network_mode: Type.Optional(NetworkMode),
  initramfs_path: Type.String(),
  installed_at: Type.String(),
  manifest: Type.Unknown({ description: 'the validated plugin.json' }),
});
export type PluginView = Static<typeof PluginView>;

export const PluginList = Type.Object({ plugins: Type.Array(PluginView) });

export const HealthView = Type.Object({
  status: Type.Literal('ok'),
  version: Type.String(),
  uptime_s: Type.Number(),
});

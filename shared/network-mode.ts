/**
 * How a VM is networked, decided from its config over its plugin's manifest. The two questions
 * the host asks are separate on purpose: dhcp needs a tap but no address from our pool; vsock
 * needs neither. An empty config means bridged, the default the seeds describe.
 */

import type { NetworkMode, NetworkSettings, PluginManifest } from './schema/manifest.js';
import type { VmConfig } from './schema/vm-config.js';

export interface ResolvedNetwork {
  mode?: NetworkMode;
  subnet?: string;
  gateway?: string;
  auto_assign?: boolean;
  allowOutbound: boolean;
  allowedDomains: string[];
}

type Defined<T> = { [K in keyof T]: Exclude<T[K], undefined> };

function pick<T extends object>(...layers: (T | undefined)[]): Partial<Defined<T>> {
  const out: Record<string, unknown> = {};
  for (const layer of layers) {
    if (!layer) continue;
    for (const [k, v] of Object.entries(layer)) if (v !== undefined) out[k] = v;
  }
  return out as Partial<Defined<T>>;
}

/** VM config wins field by field over the manifest; `proxy` is merged the same way. */
export function resolveNetworkConfig(manifest: Pick<PluginManifest, 'network'> | undefined, vmConfig?: Pick<VmConfig, 'network'>): ResolvedNetwork {
  const m: NetworkSettings | undefined = manifest?.network;
  const v: NetworkSettings | undefined = vmConfig?.network;
  const { proxy: _mp, ...mRest } = m ?? {};
  const { proxy: _vp, ...vRest } = v ?? {};
  const base = pick<Omit<NetworkSettings, 'proxy'>>(mRest, vRest);
  const proxy = pick<NonNullable<NetworkSettings['proxy']>>(m?.proxy, v?.proxy);
  return {
    ...base,
    allowOutbound: proxy.allow_outbound === true,
    allowedDomains: proxy.allowed_domains ?? [],
  };
}

export function effectiveMode(cfg: Pick<ResolvedNetwork, 'mode'> | undefined): NetworkMode {
  return cfg?.mode ?? 'bridged';
}

export function needsTapDevice(cfg: Pick<ResolvedNetwork, 'mode'> | undefined): boolean {
  const mode = effectiveMode(cfg);
  return mode === 'bridged' || mode === 'dhcp';
}

export function needsIPAllocation(cfg: Pick<ResolvedNetwork, 'mode'> | undefined): boolean {
  return effectiveMode(cfg) === 'bridged';
}

/**
 * The names the Volant guides use, accepted as documented aliases of the canonical keys, so a
 * config file or environment copied from them works as written (docs/config.md lists them):
 *
 *   networking.bridge.name              → network.bridge
 *   networking.bridge.subnet + gateway  → network.host_cidr = GATEWAY/PREFIX (gateway defaults to
 *                                         the subnet's first address)
 *   networking.bridge.ip_range.start    → network.pool_start
 *   networking.bridge.ip_range.end      → network.pool_end
 *   VOLANT_BRIDGE                       → network.bridge
 *   VOLANT_SUBNET + VOLANT_HOST_IP      → network.host_cidr
 *   VOLANT_API_LISTEN(_ADDR)            → listen
 *   VOLANT_KERNEL_BZIMAGE / _VMLINUX    → kernel.path (bzImage first)
 *
 * What has no counterpart is refused with a message naming the canonical key (IPv6 bridges,
 * VOLANT_DB_PATH), and so is the removed egress.port (VOLANT_EGRESS_PORT): a key that is read
 * nowhere must not look as if it took effect. The guides' VOLANT_LOG_DIR needs no alias: it is `log.dir`'s own variable. An alias and its canonical key set together are refused too,
 * rather than one silently winning. Pure: the loader applies it to the file and env layers.
 */

import type { Problem } from '../../shared/errors.js';
import { type Cidr, cidrContains, formatIPv4, tryParseCidr, tryParseIPv4 } from '../../shared/ipv4.js';
import { isPlainObject } from '../../shared/schema/validate.js';

export interface AliasResult {
  /** The layer with aliases replaced by canonical keys. */
  layer: Record<string, unknown>;
  problems: Problem[];
}

const show = (v: unknown): string => JSON.stringify(v)?.slice(0, 80) ?? String(v);

/** GATEWAY/PREFIX from a subnet and an optional gateway (default: the subnet's first address). */
function hostCidr(subnetText: unknown, gatewayText: unknown, at: { subnet: string; gateway: string }, problems: Problem[]): string | undefined {
  const subnet: Cidr | undefined = typeof subnetText === 'string' ? tryParseCidr(subnetText) : undefined;
  if (!subnet) {
    problems.push({ path: at.subnet, message: `${show(subnetText)} is not an IPv4 subnet like 10.200.0.0/16 (with the gateway it sets network.host_cidr)` });
    return undefined;
  }
  if (gatewayText === undefined) return `${formatIPv4(subnet.network + 1)}/${subnet.prefix}`;
  const gateway = typeof gatewayText === 'string' ? tryParseIPv4(gatewayText) : undefined;
  if (gateway === undefined) {
    problems.push({ path: at.gateway, message: `${show(gatewayText)} is not a dotted-quad IPv4 address (the host's address on the bridge, network.host_cidr)` });
    return undefined;
  }
  if (gateway === subnet.network || gateway === subnet.broadcast || !cidrContains(subnet, gateway)) {
    problems.push({ path: at.gateway, message: `${show(gatewayText)} is not a host address inside ${show(subnetText)} (network.host_cidr is GATEWAY/PREFIX)` });
    return undefined;
  }
  return `${formatIPv4(gateway)}/${subnet.prefix}`;
}

const BRIDGE_KEYS = ['name', 'subnet', 'gateway', 'ip_range'];

/** The guide's `networking:` section of volantd.yaml, as canonical `network:` keys. */
export function resolveFileAliases(doc: Record<string, unknown>): AliasResult {
  const problems: Problem[] = [];
  if (isPlainObject(doc.egress) && 'port' in doc.egress) {
    problems.push({ path: '/egress/port', message: "is no longer read: each VM's egress listener takes its own free port on the bridge address, and its lockdown opens exactly that one; remove the key" });
  }
  if (!('networking' in doc)) return { layer: doc, problems };
  const { networking, ...rest } = doc;
  const network: Record<string, unknown> = isPlainObject(rest.network) ? { ...rest.network } : {};
  const set = (key: string, value: unknown, from: string): void => {
    if (value === undefined) return;
    if (network[key] !== undefined) problems.push({ path: from, message: `sets network.${key}, which the file also sets; keep one (network.${key} is the canonical key)` });
    else network[key] = value;
  };
  if (!isPlainObject(networking)) {
    problems.push({ path: '/networking', message: 'must be a mapping (networking.bridge.{name,subnet,gateway,ip_range}); the canonical section is network' });
    return { layer: rest, problems };
  }
  for (const key of Object.keys(networking)) {
    if (key !== 'bridge') problems.push({ path: `/networking/${key}`, message: `is not supported; networking.bridge is the only section read (canonical: network)` });
  }
  const bridge = networking.bridge;
  if (bridge !== undefined && !isPlainObject(bridge)) problems.push({ path: '/networking/bridge', message: 'must be a mapping of name, subnet, gateway and ip_range' });
  if (isPlainObject(bridge)) {
    for (const key of Object.keys(bridge)) {
      if (BRIDGE_KEYS.includes(key)) continue;
      const why = key === 'ipv6' ? 'IPv6 bridges are not supported (guests get IPv4 only)' : `is not a key of networking.bridge (${BRIDGE_KEYS.join(', ')})`;
      problems.push({ path: `/networking/bridge/${key}`, message: why });
    }
    set('bridge', bridge.name, '/networking/bridge/name');
    if (bridge.subnet !== undefined) {
      set('host_cidr', hostCidr(bridge.subnet, bridge.gateway, { subnet: '/networking/bridge/subnet', gateway: '/networking/bridge/gateway' }, problems), '/networking/bridge/subnet');
    } else if (bridge.gateway !== undefined) {
      problems.push({ path: '/networking/bridge/gateway', message: 'needs networking.bridge.subnet: together they make network.host_cidr (GATEWAY/PREFIX)' });
    }
    const range = bridge.ip_range;
    if (range !== undefined) {
      if (!isPlainObject(range)) problems.push({ path: '/networking/bridge/ip_range', message: 'must be a mapping of start and end (network.pool_start, network.pool_end)' });
      else {
        for (const key of Object.keys(range)) if (key !== 'start' && key !== 'end') problems.push({ path: `/networking/bridge/ip_range/${key}`, message: 'is not a key of ip_range (start, end)' });
        set('pool_start', range.start, '/networking/bridge/ip_range/start');
        set('pool_end', range.end, '/networking/bridge/ip_range/end');
      }
    }
  }
  return { layer: { ...rest, network }, problems };
}

/** The original volantd's environment variables, as a partial config (canonical keys). */
export function resolveEnvAliases(env: Record<string, string | undefined>): AliasResult {
  const problems: Problem[] = [];
  const layer: Record<string, Record<string, unknown> | unknown> = {};
  const put = (section: string | undefined, key: string, value: unknown, variable: string, canonical: string): void => {
    if (env[canonical] !== undefined) {
      problems.push({ path: `$${variable}`, message: `sets the same key as $${canonical}; keep one ($${canonical} is the canonical name)` });
      return;
    }
    if (section === undefined) layer[key] = value;
    else layer[section] = { ...((layer[section] as Record<string, unknown>) ?? {}), [key]: value };
  };
  if (env.VOLANT_BRIDGE !== undefined) put('network', 'bridge', env.VOLANT_BRIDGE, 'VOLANT_BRIDGE', 'VOLANT_NETWORK_BRIDGE');
  if (env.VOLANT_SUBNET !== undefined) {
    const cidr = hostCidr(env.VOLANT_SUBNET, env.VOLANT_HOST_IP, { subnet: '$VOLANT_SUBNET', gateway: '$VOLANT_HOST_IP' }, problems);
    if (cidr !== undefined) put('network', 'host_cidr', cidr, 'VOLANT_SUBNET', 'VOLANT_NETWORK_HOST_CIDR');
  } else if (env.VOLANT_HOST_IP !== undefined) {
    problems.push({ path: '$VOLANT_HOST_IP', message: 'needs $VOLANT_SUBNET: together they make network.host_cidr ($VOLANT_NETWORK_HOST_CIDR)' });
  }
  for (const variable of ['VOLANT_API_LISTEN', 'VOLANT_API_LISTEN_ADDR']) {
    if (env[variable] !== undefined) put(undefined, 'listen', env[variable], variable, 'VOLANT_LISTEN');
  }
  const kernel = env.VOLANT_KERNEL_BZIMAGE ?? env.VOLANT_KERNEL_VMLINUX;
  if (kernel !== undefined) put('kernel', 'path', kernel, env.VOLANT_KERNEL_BZIMAGE !== undefined ? 'VOLANT_KERNEL_BZIMAGE' : 'VOLANT_KERNEL_VMLINUX', 'VOLANT_KERNEL_PATH');
  if (env.VOLANT_EGRESS_PORT !== undefined) problems.push({ path: '$VOLANT_EGRESS_PORT', message: "is no longer read: each VM's egress listener takes its own free port on the bridge address; unset it" });
  if (env.VOLANT_DB_PATH !== undefined) problems.push({ path: '$VOLANT_DB_PATH', message: 'is not supported: the database is <state_dir>/volant.db; set state_dir ($VOLANT_STATE_DIR)' });
  return { layer, problems };
}

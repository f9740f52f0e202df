/**
 * The shape of volantd's configuration (`/etc/volant/volantd.yaml`), its defaults, and the
 * semantic checks a schema cannot express (the address pool must lie inside the host subnet and
 * never cover its network, broadcast or host address). Field names are the YAML keys users write;
 * every problem is reported with that key's path, the value given and what is allowed.
 */

import { type Static, Type } from '@sinclair/typebox';
import type { Problem } from '../../shared/errors.js';
import { type Cidr, cidrContains, formatIPv4, tryParseCidr, tryParseIPv4 } from '../../shared/ipv4.js';
import { isValidVmName, MAX_IFNAME_BYTES } from '../../shared/names.js';
import { LOG_LEVELS } from '../log/levels.js';
import { IFNAME_PATTERN } from '../network/ifname.js';

export const IPV4_PATTERN = '^\\d{1,3}\\.\\d{1,3}\\.\\d{1,3}\\.\\d{1,3}$';
export const CIDR_PATTERN = '^\\d{1,3}\\.\\d{1,3}\\.\\d{1,3}\\.\\d{1,3}/\\d{1,2}$';
export const MAX_PORT = 65535;

const Ipv4 = Type.String({ pattern: IPV4_PATTERN, maxLength: 15, description: 'a dotted-quad IPv4 address like 192.168.127.10' });
const Cidr4 = Type.String({ pattern: CIDR_PATTERN, maxLength: 18, description: 'ADDRESS/PREFIX like 192.168.127.1/24' });
const Millis = Type.Integer({ minimum: 1, maximum: 3_600_000 });

export const NetworkSection = Type.Object(
  {
    bridge: Type.String({ pattern: IFNAME_PATTERN, maxLength: MAX_IFNAME_BYTES, description: `1-${MAX_IFNAME_BYTES} letters, digits, '.', '-' or '_'` }),
    host_cidr: Cidr4,
    pool_start: Ipv4,
    pool_end: Ipv4,
    reservations: Type.Record(Type.String(), Ipv4),
    /** Resolvers guests get; unset: the host's (see host/network/resolvers.ts); [] gives none. */
    dns: Type.Optional(Type.Array(Ipv4, { maxItems: 3 })),
  },
  { additionalProperties: false },
);

export const DhcpSection = Type.Object(
  {
    server: Type.Union([Type.Literal('auto'), Type.Literal('volant'), Type.Literal('external')], {
      description: "who answers DHCP on the bridge: volant (volar setup --dhcp), external (another server), auto (volant when setup --dhcp configured it)",
    }),
    range_start: Type.Optional(Ipv4),
    range_end: Type.Optional(Ipv4),
    lease_time_s: Type.Integer({ minimum: 120, maximum: 7 * 86_400 }),
  },
  { additionalProperties: false },
);

export const ApiSection = Type.Object(
  {
    socket: Type.String({ maxLength: 107, description: "volantd's Unix socket (no token; mode 0660, group volant); '' for none" }),
    unsafe_loopback_without_token: Type.Boolean({ description: 'UNSAFE: serve a loopback TCP listener without the bearer token (every local user and any web page rebinding a name to 127.0.0.1 can drive volantd)' }),
  },
  { additionalProperties: false },
);

/** Bounds of `log.audit_max_bytes`: one audit file is at least 64 KiB and at most 1 TiB. */
export const MIN_AUDIT_FILE_BYTES = 64 * 1024;
export const MAX_AUDIT_FILE_BYTES = 1024 ** 4;

export const LogSection = Type.Object(
  {
    level: Type.Union(LOG_LEVELS.map((l) => Type.Literal(l))),
    dir: Type.String({ minLength: 1, maxLength: 4096, description: "volantd's log files (the egress audit); default <state_dir>/logs" }),
    audit_max_bytes: Type.Integer({ minimum: MIN_AUDIT_FILE_BYTES, maximum: MAX_AUDIT_FILE_BYTES, description: 'the egress audit file is rotated when it would grow past this many bytes' }),
    audit_files: Type.Integer({ minimum: 1, maximum: 100, description: 'rotated egress audit files kept besides the current one (.1 is the newest)' }),
  },
  { additionalProperties: false },
);

export const VolantConfig = Type.Object(
  {
    state_dir: Type.String({ minLength: 1, maxLength: 4096 }),
    runtime_dir: Type.String({ minLength: 1, maxLength: 4096 }),
    listen: Type.String({ minLength: 1, maxLength: 4096, description: 'HOST:PORT or unix:/path' }),
    api: ApiSection,
    log: LogSection,
    network: NetworkSection,
    dhcp: DhcpSection,
    kernel: Type.Object({ path: Type.Optional(Type.String({ minLength: 1 })), modules_dir: Type.Optional(Type.String({ minLength: 1 })) }, { additionalProperties: false }),
    vmm: Type.Object(
      {
        prefer: Type.Union([Type.Literal('auto'), Type.Literal('cloud-hypervisor'), Type.Literal('qemu')]),
        accel: Type.Union([Type.Literal('auto'), Type.Literal('kvm'), Type.Literal('tcg')]),
        /** How the shared runtime image is attached: pmem (DAX, shared page cache) or a read-only virtio-blk disk. */
        runtime_device: Type.Union([Type.Literal('pmem'), Type.Literal('blk')]),
        qemu: Type.Object(
          {
            /** vhost-user: our device back-end (hybrid socket, any host); vhost-kernel: /dev/vhost-vsock (AF_VSOCK by CID). */
            vsock: Type.Union([Type.Literal('vhost-user'), Type.Literal('vhost-kernel')]),
          },
          { additionalProperties: false },
        ),
      },
      { additionalProperties: false },
    ),
    egress: Type.Object(
      {
        allow_private: Type.Array(Cidr4),
        upgrade_to_https: Type.Boolean(),
        connect_timeout_ms: Millis,
        dns_timeout_ms: Millis,
        dns_servers: Type.Array(Ipv4),
        max_tunnels_per_vm: Type.Integer({ minimum: 1, maximum: 100_000 }),
        requests_per_second_per_vm: Type.Number({ exclusiveMinimum: 0, maximum: 1_000_000 }),
      },
      { additionalProperties: false },
    ),
    ingress: Type.Object(
      {
        timeout_ms: Millis,
        transport: Type.Union([Type.Literal('vsock'), Type.Literal('tcp'), Type.Literal('auto')]),
      },
      { additionalProperties: false },
    ),
  },
  { additionalProperties: false },
);
export type VolantConfig = Static<typeof VolantConfig>;
export type NetworkConfig = Static<typeof NetworkSection>;
export type DhcpConfig = Static<typeof DhcpSection>;
export type LogConfig = Static<typeof LogSection>;

export const DEFAULT_CONFIG_FILE = '/etc/volant/volantd.yaml';
export const DEFAULT_HOST_CIDR = '192.168.127.1/24';
/** The default pool starts this far into the subnet, leaving room for hand-assigned hosts. */
export const DEFAULT_POOL_OFFSET = 100;
/** The default DHCP range starts this far into the subnet and ends just below the pool. */
export const DEFAULT_DHCP_RANGE_OFFSET = 10;
/** volantd's Unix socket, under the runtime directory unless `api.socket` says otherwise. */
export const API_SOCKET_NAME = 'volantd.sock';
/** volantd's log directory, under the state directory unless `log.dir` says otherwise. */
export const LOG_DIR_NAME = 'logs';

/** Defaults for every key except those that follow others: the pool (`defaultPool`), the DHCP range (`defaultDhcpRange`), the API socket (runtime_dir), the log directory (state_dir). */
export function defaultConfig(): Omit<VolantConfig, 'network' | 'api' | 'log'> & {
  network: Omit<NetworkConfig, 'pool_start' | 'pool_end'>;
  api: Omit<VolantConfig['api'], 'socket'>;
  log: Omit<LogConfig, 'dir'>;
} {
  return {
    state_dir: '/var/lib/volant',
    runtime_dir: '/run/volant',
    listen: '127.0.0.1:8080',
    api: { unsafe_loopback_without_token: false },
    log: { level: 'info', audit_max_bytes: 64 * 1024 * 1024, audit_files: 4 },
    network: { bridge: 'vbr0', host_cidr: DEFAULT_HOST_CIDR, reservations: {} },
    dhcp: { server: 'auto', lease_time_s: 3600 },
    kernel: {},
    vmm: { prefer: 'auto', accel: 'auto', runtime_device: 'pmem', qemu: { vsock: 'vhost-user' } },
    egress: {
      allow_private: [],
      upgrade_to_https: false,
      connect_timeout_ms: 10_000,
      dns_timeout_ms: 5_000,
      dns_servers: [],
      max_tunnels_per_vm: 256,
      requests_per_second_per_vm: 100,
    },
    ingress: { timeout_ms: 30_000, transport: 'auto' },
  };
}

/**
 * The pool a subnet gets when none is configured: from network+100 (or the first address after
 * the host's when the subnet is smaller) to the last address before broadcast. For the default
 * 192.168.127.1/24 that is .100–.254.
 */
export function defaultPool(hostCidr: string): { pool_start: string; pool_end: string } | undefined {
  const c = tryParseCidr(hostCidr);
  if (!c || c.prefix > 30) return undefined;
  const last = c.broadcast - 1;
  let first = c.network + DEFAULT_POOL_OFFSET;
  if (first > last) first = c.network + 1;
  if (first === c.address) first += 1;
  if (first > last) return undefined;
  return { pool_start: formatIPv4(first), pool_end: formatIPv4(last) };
}

/**
 * The DHCP range Volant's own server gets when none is configured: from network+10 (or just
 * after the host's address) to the address before the pool, so it never overlaps the pool. For
 * the defaults that is .10–.99. Undefined when there is no room below the pool.
 */
export function defaultDhcpRange(hostCidr: string, poolStart: string): { range_start: string; range_end: string } | undefined {
  const c = tryParseCidr(hostCidr);
  const start = tryParseIPv4(poolStart);
  if (!c || start === undefined) return undefined;
  const first = Math.max(c.network + DEFAULT_DHCP_RANGE_OFFSET, c.address + 1);
  const last = start - 1;
  if (first > last || c.address > first) return undefined;
  return { range_start: formatIPv4(first), range_end: formatIPv4(last) };
}

function show(v: unknown): string {
  return JSON.stringify(v);
}

/** Checks what the schema cannot: addresses parse strictly, and the pool fits the subnet. */
export function semanticProblems(cfg: VolantConfig): Problem[] {
  const problems: Problem[] = [];
  const n = cfg.network;
  const subnet: Cidr | undefined = tryParseCidr(n.host_cidr);
  if (!subnet || subnet.prefix > 30 || subnet.prefix < 8) {
    problems.push({ path: '/network/host_cidr', message: `${show(n.host_cidr)} is not allowed: use the host's address and prefix 8-30, like 192.168.127.1/24` });
    return problems;
  }
  if (subnet.address === subnet.network || subnet.address === subnet.broadcast) {
    problems.push({ path: '/network/host_cidr', message: `${show(n.host_cidr)} is the subnet's network or broadcast address: give the host's own address, like ${formatIPv4(subnet.network + 1)}/${subnet.prefix}` });
  }
  const inUsable = (ip: number) => cidrContains(subnet, ip) && ip !== subnet.network && ip !== subnet.broadcast;
  const usable = `${formatIPv4(subnet.network + 1)}-${formatIPv4(subnet.broadcast - 1)} except the host ${formatIPv4(subnet.address)}`;
  const start = tryParseIPv4(n.pool_start);
  const end = tryParseIPv4(n.pool_end);
  for (const [key, ip, text] of [
    ['pool_start', start, n.pool_start],
    ['pool_end', end, n.pool_end],
  ] as const) {
    if (ip === undefined) problems.push({ path: `/network/${key}`, message: `${show(text)} is not a strict dotted-quad IPv4 address` });
    else if (!inUsable(ip)) problems.push({ path: `/network/${key}`, message: `${show(text)} is outside ${n.host_cidr}: the pool must lie within ${usable}` });
  }
  if (start !== undefined && end !== undefined && inUsable(start) && inUsable(end)) {
    if (start > end) problems.push({ path: '/network/pool_end', message: `${show(n.pool_end)} comes before pool_start ${show(n.pool_start)}` });
    else if (subnet.address >= start && subnet.address <= end) {
      problems.push({ path: '/network/pool_start', message: `the pool ${n.pool_start}-${n.pool_end} contains the host address ${formatIPv4(subnet.address)}: move the pool so it excludes it` });
    }
  }
  const owners = new Map<number, string>();
  for (const [vm, text] of Object.entries(n.reservations)) {
    const path = `/network/reservations/${vm}`;
    if (!isValidVmName(vm)) problems.push({ path, message: `${show(vm)} is not a valid VM name: use 1-63 letters, digits, '-' or '_', starting with a letter or digit` });
    const ip = tryParseIPv4(text);
    if (ip === undefined) {
      problems.push({ path, message: `${show(text)} is not a strict dotted-quad IPv4 address` });
      continue;
    }
    if (start !== undefined && end !== undefined && (ip < start || ip > end)) {
      problems.push({ path, message: `${show(text)} is outside the pool ${n.pool_start}-${n.pool_end}` });
    }
    const other = owners.get(ip);
    if (other !== undefined) problems.push({ path, message: `${show(text)} is already reserved for ${show(other)}` });
    owners.set(ip, vm);
  }
  (n.dns ?? []).forEach((d, i) => {
    if (tryParseIPv4(d) === undefined) problems.push({ path: `/network/dns/${i}`, message: `${show(d)} is not a strict dotted-quad IPv4 address` });
  });
  cfg.egress.dns_servers.forEach((d, i) => {
    if (tryParseIPv4(d) === undefined) problems.push({ path: `/egress/dns_servers/${i}`, message: `${show(d)} is not a strict dotted-quad IPv4 address` });
  });
  cfg.egress.allow_private.forEach((c, i) => {
    if (tryParseCidr(c) === undefined) problems.push({ path: `/egress/allow_private/${i}`, message: `${show(c)} is not an IPv4 CIDR like 10.0.0.0/8` });
  });
  problems.push(...dhcpRangeProblems(cfg, subnet, inUsable, usable));
  return problems;
}

/** Volant's DHCP range: inside the subnet, without the host's address, never overlapping the IPAM pool. */
function dhcpRangeProblems(cfg: VolantConfig, subnet: Cidr, inUsable: (ip: number) => boolean, usable: string): Problem[] {
  const d = cfg.dhcp;
  if (d.range_start === undefined && d.range_end === undefined) return [];
  const problems: Problem[] = [];
  if (d.range_start === undefined || d.range_end === undefined) {
    return [{ path: d.range_start === undefined ? '/dhcp/range_start' : '/dhcp/range_end', message: 'give both range_start and range_end, or neither' }];
  }
  const first = tryParseIPv4(d.range_start);
  const last = tryParseIPv4(d.range_end);
  for (const [key, ip, text] of [
    ['range_start', first, d.range_start],
    ['range_end', last, d.range_end],
  ] as const) {
    if (ip === undefined) problems.push({ path: `/dhcp/${key}`, message: `${show(text)} is not a strict dotted-quad IPv4 address` });
    else if (!inUsable(ip)) problems.push({ path: `/dhcp/${key}`, message: `${show(text)} is outside ${cfg.network.host_cidr}: the DHCP range must lie within ${usable}` });
  }
  if (problems.length > 0 || first === undefined || last === undefined) return problems;
  if (first > last) return [{ path: '/dhcp/range_end', message: `${show(d.range_end)} comes before range_start ${show(d.range_start)}` }];
  if (subnet.address >= first && subnet.address <= last) {
    return [{ path: '/dhcp/range_start', message: `the DHCP range ${d.range_start}-${d.range_end} contains the host address ${formatIPv4(subnet.address)}` }];
  }
  const poolStart = tryParseIPv4(cfg.network.pool_start);
  const poolEnd = tryParseIPv4(cfg.network.pool_end);
  if (poolStart !== undefined && poolEnd !== undefined && first <= poolEnd && poolStart <= last) {
    problems.push({
      path: '/dhcp/range_start',
      message: `the DHCP range ${d.range_start}-${d.range_end} overlaps the address pool ${cfg.network.pool_start}-${cfg.network.pool_end}: a DHCP lease could take a bridged VM's address; move one of them`,
    });
  }
  return problems;
}

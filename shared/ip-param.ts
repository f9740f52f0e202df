/**
 * The kernel's `ip=` parameter (Documentation/admin-guide/nfs/nfsroot.rst, net/ipv4/ipconfig.c):
 *
 *   ip=<client>:<server>:<gw>:<netmask>:<hostname>:<device>:<autoconf>:<dns0>:<dns1>:<ntp0>
 *
 * Every field may be empty and missing trailing fields are empty; a value without any `:` that
 * names an autoconf method (`ip=dhcp`) is that method alone. The host writes the static form
 * `ip=<guest>::<gw>:<mask>:<hostname>:eth0:off`; the guest reads whatever the kernel accepts and
 * turns it into a plan. Garbage is an error, never a guess.
 */

import { VolantError } from './errors.js';
import { formatIPv4, maskFromPrefix, prefixFromMask, tryParseIPv4 } from './ipv4.js';

export type Autoconf = 'off' | 'on' | 'dhcp' | 'bootp' | 'rarp' | 'both';

const AUTOCONF_ALIASES: Record<string, Autoconf> = {
  off: 'off',
  none: 'off',
  on: 'on',
  any: 'on',
  dhcp: 'dhcp',
  bootp: 'bootp',
  rarp: 'rarp',
  both: 'both',
};

export interface IpParam {
  client?: string;
  server?: string;
  gateway?: string;
  /** Dotted netmask; derived from the address class when the field was empty. */
  netmask?: string;
  prefix?: number;
  /** Whether the netmask came from the address class rather than the parameter. */
  netmaskDerived?: boolean;
  hostname?: string;
  device?: string;
  autoconf: Autoconf;
  dns: string[];
  ntp?: string;
}

const HOSTNAME = /^(?=.{1,64}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;
const DEVICE = /^[A-Za-z0-9_.-]{1,15}$/;
const MAX_IP_PARAM = 512;

function fail(msg: string, value: string): never {
  throw new VolantError('INVALID_ARGUMENT', `ip=${value.length > 80 ? `${value.slice(0, 80)}…` : value}: ${msg}`);
}

function classfulPrefix(ip: number): number | undefined {
  const first = ip >>> 24;
  if (first < 128) return 8;
  if (first < 192) return 16;
  if (first < 224) return 24;
  return undefined;
}

/** Parse the value of `ip=` (without the `ip=` itself). */
export function parseIpParam(value: string): IpParam {
  if (typeof value !== 'string') throw new VolantError('INVALID_ARGUMENT', 'ip= value must be a string');
  if (value.length > MAX_IP_PARAM) fail(`longer than ${MAX_IP_PARAM} characters`, value);
  if (!value.includes(':')) {
    const alone = AUTOCONF_ALIASES[value.toLowerCase()];
    if (alone) return { autoconf: alone, dns: [] };
    if (value === '') return { autoconf: 'on', dns: [] };
  }
  const f = value.split(':');
  if (f.length > 10) fail(`has ${f.length} fields; the kernel reads at most 10`, value);
  const field = (i: number): string => f[i] ?? '';
  const addr = (i: number, name: string): string | undefined => {
    const t = field(i);
    if (t === '') return undefined;
    const n = tryParseIPv4(t);
    if (n === undefined) fail(`${name} ${JSON.stringify(t)} is not a dotted-quad IPv4 address`, value);
    return formatIPv4(n);
  };
  const out: IpParam = { autoconf: 'on', dns: [] };
  const client = addr(0, 'client address');
  const server = addr(1, 'server address');
  const gateway = addr(2, 'gateway');
  const maskText = addr(3, 'netmask');
  if (client) out.client = client;
  if (server) out.server = server;
  if (gateway) out.gateway = gateway;
  if (maskText) {
    const prefix = prefixFromMask(tryParseIPv4(maskText)!);
    if (prefix === undefined) fail(`netmask ${maskText} is not contiguous`, value);
    out.netmask = maskText;
    out.prefix = prefix;
  } else if (client) {
    const prefix = classfulPrefix(tryParseIPv4(client)!);
    if (prefix === undefined) fail(`client address ${client} is multicast or reserved (class D/E)`, value);
    out.netmask = formatIPv4(maskFromPrefix(prefix));
    out.prefix = prefix;
    out.netmaskDerived = true;
  }
  const hostname = field(4);
  if (hostname !== '') {
    if (!HOSTNAME.test(hostname)) fail(`hostname ${JSON.stringify(hostname)} is not a valid host name (letters, digits, '-', dots; at most 64 characters)`, value);
    out.hostname = hostname;
  }
  const device = field(5);
  if (device !== '') {
    if (!DEVICE.test(device)) fail(`device ${JSON.stringify(device)} is not an interface name (at most 15 of letters, digits, '_', '.', '-')`, value);
    out.device = device;
  }
  const auto = field(6);
  if (auto !== '') {
    const a = AUTOCONF_ALIASES[auto.toLowerCase()];
    if (!a) fail(`autoconf ${JSON.stringify(auto)} is not one of off, none, on, any, dhcp, bootp, rarp, both`, value);
    out.autoconf = a;
  }
  const dns0 = addr(7, 'dns0');
  const dns1 = addr(8, 'dns1');
  if (dns0) out.dns.push(dns0);
  if (dns1) out.dns.push(dns1);
  const ntp = addr(9, 'ntp0');
  if (ntp) out.ntp = ntp;
  if (client && gateway && out.prefix !== undefined) {
    const mask = maskFromPrefix(out.prefix);
    if (((tryParseIPv4(client)! ^ tryParseIPv4(gateway)!) & mask) !== 0) {
      fail(`gateway ${gateway} is not on the client's subnet ${client}/${out.prefix}`, value);
    }
  }
  if (out.autoconf === 'off' && gateway && !client) fail('a gateway without a client address cannot be used', value);
  return out;
}

export interface StaticIpSpec {
  ip: string;
  gateway: string;
  /** Prefix length (0-32) or dotted netmask. */
  netmask: number | string;
  hostname: string;
  device?: string;
  dns?: string[];
}

/** Writes `ip=<guest>::<gw>:<mask>:<hostname>:<device>:off[:<dns0>[:<dns1>]]`, validating each field. */
export function formatIpParam(spec: StaticIpSpec): string {
  const ip = tryParseIPv4(spec.ip);
  const gw = tryParseIPv4(spec.gateway);
  if (ip === undefined) throw new VolantError('INVALID_ARGUMENT', `ip=: guest address ${JSON.stringify(spec.ip)} is not IPv4`);
  if (gw === undefined) throw new VolantError('INVALID_ARGUMENT', `ip=: gateway ${JSON.stringify(spec.gateway)} is not IPv4`);
  let prefix: number | undefined;
  if (typeof spec.netmask === 'number') {
    prefix = Number.isInteger(spec.netmask) && spec.netmask >= 0 && spec.netmask <= 32 ? spec.netmask : undefined;
  } else {
    const m = tryParseIPv4(spec.netmask);
    prefix = m === undefined ? undefined : prefixFromMask(m);
  }
  if (prefix === undefined) throw new VolantError('INVALID_ARGUMENT', `ip=: netmask ${JSON.stringify(spec.netmask)} is not a prefix length or contiguous netmask`);
  const mask = maskFromPrefix(prefix);
  if (((ip ^ gw) & mask) !== 0) throw new VolantError('INVALID_ARGUMENT', `ip=: gateway ${spec.gateway} is not on ${spec.ip}/${prefix}`);
  if (!HOSTNAME.test(spec.hostname)) throw new VolantError('INVALID_ARGUMENT', `ip=: hostname ${JSON.stringify(spec.hostname)} is not a valid host name`);
  const device = spec.device ?? 'eth0';
  if (!DEVICE.test(device)) throw new VolantError('INVALID_ARGUMENT', `ip=: device ${JSON.stringify(device)} is not an interface name`);
  const dns = spec.dns ?? [];
  if (dns.length > 2) throw new VolantError('INVALID_ARGUMENT', 'ip=: the kernel takes at most two DNS servers');
  const dnsText = dns.map((d) => {
    const n = tryParseIPv4(d);
    if (n === undefined) throw new VolantError('INVALID_ARGUMENT', `ip=: DNS server ${JSON.stringify(d)} is not IPv4`);
    return formatIPv4(n);
  });
  const fields = [formatIPv4(ip), '', formatIPv4(gw), formatIPv4(mask), spec.hostname, device, 'off', ...dnsText];
  return `ip=${fields.join(':')}`;
}

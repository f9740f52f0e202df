/**
 * Checks for the names and values that end up as `ip`, `iptables` and `ebtables` arguments.
 * Commands run without a shell, but a name with '/', spaces or leading '-' can still mean
 * something else to the tool (a path in sysfs, a second argument, an option), so every value is
 * checked against a narrow pattern before any command runs.
 */

import { VolantError } from '../../shared/errors.js';
import { tryParseCidr, tryParseIPv4 } from '../../shared/ipv4.js';
import { MAX_IFNAME_BYTES } from '../../shared/names.js';

/** Starts with a letter or digit; then letters, digits, '_', '.', '-'; at most 15 bytes (IFNAMSIZ - 1). */
export const IFNAME_PATTERN = '^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$';
const IFNAME = new RegExp(IFNAME_PATTERN);
const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;

export function assertInterfaceName(name: unknown, what = 'interface name'): string {
  if (typeof name !== 'string' || !IFNAME.test(name) || Buffer.byteLength(name) > MAX_IFNAME_BYTES) {
    const shown = typeof name === 'string' ? JSON.stringify(name.slice(0, 40)) : typeof name;
    throw new VolantError('INVALID_ARGUMENT', `${what} ${shown} is not allowed: use 1-${MAX_IFNAME_BYTES} letters, digits, '_', '.' or '-', starting with a letter or digit`);
  }
  return name;
}

/** Lower-case colon-separated unicast MAC. */
export function assertMac(mac: unknown): string {
  if (typeof mac !== 'string' || !MAC.test(mac) || (Number.parseInt(mac.slice(0, 2), 16) & 1) === 1) {
    throw new VolantError('INVALID_ARGUMENT', `MAC address ${JSON.stringify(String(mac).slice(0, 40))} is not allowed: use a unicast address like 02:ab:cd:ef:01:23 (lower case)`);
  }
  return mac;
}

export function assertIPv4(ip: unknown, what = 'address'): string {
  if (typeof ip !== 'string' || tryParseIPv4(ip) === undefined) {
    throw new VolantError('INVALID_ARGUMENT', `${what} ${JSON.stringify(String(ip).slice(0, 40))} is not a dotted-quad IPv4 address`);
  }
  return ip;
}

export function assertCidr(cidr: unknown, what = 'subnet'): string {
  if (typeof cidr !== 'string' || tryParseCidr(cidr) === undefined) {
    throw new VolantError('INVALID_ARGUMENT', `${what} ${JSON.stringify(String(cidr).slice(0, 40))} is not an IPv4 CIDR like 192.168.127.1/24`);
  }
  return cidr;
}

export function assertPort(port: unknown, what = 'port'): number {
  if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) {
    throw new VolantError('INVALID_ARGUMENT', `${what} ${String(port)} is not an integer in 1..65535`);
  }
  return port;
}

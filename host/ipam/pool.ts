/**
 * The address pool as numbers, and the pure decisions about it: which addresses may ever be
 * handed out (inside [start, end], never the network, broadcast or host address) and whether a
 * VM may have the address it asks for (not reserved for another VM, not its reservation's rival).
 * The database only answers "which of these are leased"; everything else is decided here.
 */

import { VolantError } from '../../shared/errors.js';
import { formatIPv4, parseCidr, parseIPv4, tryParseIPv4 } from '../../shared/ipv4.js';
import type { NetworkConfig } from '../config/schema.js';

export interface AddressPool {
  /** The subnet as written in config (host address and prefix), e.g. 192.168.127.1/24. */
  hostCidr: string;
  network: number;
  broadcast: number;
  prefix: number;
  host: number;
  start: number;
  end: number;
  /** VM name → reserved address. */
  reservations: ReadonlyMap<string, number>;
  /** Reserved address → VM name. */
  reservedBy: ReadonlyMap<number, string>;
}

/** Builds the pool from a validated network config (see `loadConfig`). */
export function addressPool(net: Pick<NetworkConfig, 'host_cidr' | 'pool_start' | 'pool_end' | 'reservations'>): AddressPool {
  const c = parseCidr(net.host_cidr);
  const reservations = new Map<string, number>();
  const reservedBy = new Map<number, string>();
  for (const [vm, text] of Object.entries(net.reservations ?? {})) {
    const ip = parseIPv4(text);
    reservations.set(vm, ip);
    reservedBy.set(ip, vm);
  }
  const pool: AddressPool = {
    hostCidr: net.host_cidr,
    network: c.network,
    broadcast: c.broadcast,
    prefix: c.prefix,
    host: c.address,
    start: parseIPv4(net.pool_start),
    end: parseIPv4(net.pool_end),
    reservations,
    reservedBy,
  };
  for (const ip of [pool.start, pool.end]) {
    if (!isAssignable(pool, ip)) throw new VolantError('INVALID_ARGUMENT', `pool ${net.pool_start}-${net.pool_end} must lie inside ${net.host_cidr} and exclude its network, broadcast and host addresses`);
  }
  return pool;
}

export function poolSize(pool: AddressPool): number {
  return pool.end - pool.start + 1 - (pool.host >= pool.start && pool.host <= pool.end ? 1 : 0);
}

/** Whether `ip` may ever be leased from this pool, to anyone. */
export function isAssignable(pool: AddressPool, ip: number): boolean {
  return ip >= pool.start && ip <= pool.end && ip !== pool.network && ip !== pool.broadcast && ip !== pool.host;
}

/**
 * The address a VM must get when it asks for `requested` (or nothing): its reservation, the
 * requested address, or undefined for "lowest free". Throws when the request breaks a rule;
 * whether the address is free is the caller's (transactional) question.
 */
export function requiredAddress(pool: AddressPool, vmName: string, requested?: string): number | undefined {
  const reserved = pool.reservations.get(vmName);
  if (requested === undefined) return reserved;
  const ip = tryParseIPv4(requested);
  if (ip === undefined) throw new VolantError('INVALID_ARGUMENT', `requested address ${JSON.stringify(String(requested).slice(0, 64))} is not a dotted-quad IPv4 address`);
  if (!isAssignable(pool, ip)) {
    throw new VolantError('INVALID_ARGUMENT', `requested address ${requested} is outside the pool ${formatIPv4(pool.start)}-${formatIPv4(pool.end)} (network, broadcast and the host ${formatIPv4(pool.host)} are never assigned)`);
  }
  const owner = pool.reservedBy.get(ip);
  if (owner !== undefined && owner !== vmName) throw new VolantError('IP_TAKEN', `address ${requested} is reserved for VM ${owner}`, { ip: requested, reservedFor: owner });
  if (reserved !== undefined && reserved !== ip) {
    throw new VolantError('CONFLICT', `VM ${vmName} has the reserved address ${formatIPv4(reserved)}; it cannot ask for ${requested}`, { ip: requested, reserved: formatIPv4(reserved) });
  }
  return ip;
}

/** Addresses reserved for VMs other than `vmName`, in numeric order. */
export function reservedForOthers(pool: AddressPool, vmName: string): number[] {
  return [...pool.reservedBy.entries()]
    .filter(([, owner]) => owner !== vmName)
    .map(([ip]) => ip)
    .sort((a, b) => a - b);
}

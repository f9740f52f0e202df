/**
 * What `volar debug ipam` and `GET /api/v1/debug/ipam` show: the pool, its size, how many
 * addresses are free, the reservations, and every lease with its VM and since when. Leases are
 * listed in numeric address order.
 */

import { formatIPv4 } from '../../shared/ipv4.js';
import type { VolantConfig } from '../config/schema.js';
import type { Store } from '../store/store.js';
import { addressPool, isAssignable, poolSize } from './pool.js';

export interface IpamLease {
  ip: string;
  vm: string;
  since: string;
}

export interface IpamReport {
  subnet: string;
  gateway: string;
  pool: { start: string; end: string };
  size: number;
  /** Addresses in the pool neither leased nor reserved for a VM that does not hold them yet. */
  free: number;
  leased: number;
  reservations: { vm: string; ip: string; leased: boolean }[];
  leases: IpamLease[];
}

export function ipamReport(store: Pick<Store, 'db'>, config: Pick<VolantConfig, 'network'>): IpamReport {
  const pool = addressPool(config.network);
  const leases = store.db.prepare('SELECT ip_num, ip, vm_name AS vm, since FROM ip_leases ORDER BY ip_num').all() as (IpamLease & { ip_num: number })[];
  const inPool = leases.filter((l) => isAssignable(pool, l.ip_num));
  const holder = new Map(leases.map((l) => [l.ip_num, l.vm]));
  const reservations = [...pool.reservations.entries()].map(([vm, ip]) => ({ vm, ip: formatIPv4(ip), leased: holder.get(ip) === vm }));
  const reservedIdle = reservations.filter((r) => !holder.has(pool.reservations.get(r.vm)!)).length;
  const size = poolSize(pool);
  return {
    subnet: `${formatIPv4(pool.network)}/${pool.prefix}`,
    gateway: formatIPv4(pool.host),
    pool: { start: formatIPv4(pool.start), end: formatIPv4(pool.end) },
    size,
    free: size - inPool.length - reservedIdle,
    leased: leases.length,
    reservations,
    leases: leases.map(({ ip, vm, since }) => ({ ip, vm, since })),
  };
}

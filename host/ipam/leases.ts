/**
 * Leasing and releasing pool addresses and vsock CIDs. These methods do not open transactions:
 * the VM repository calls them inside the one IMMEDIATE transaction that also writes or deletes
 * the VM row, so a crash or a concurrent process never sees a lease without its VM or a VM
 * without its lease. Addresses are chosen in numeric order (…9 before …10), reserved addresses
 * only go to the VM they are reserved for, and network/broadcast/host are never candidates.
 */

import type Database from 'better-sqlite3';
import { VolantError } from '../../shared/errors.js';
import { formatIPv4, parseIPv4 } from '../../shared/ipv4.js';
import { FIRST_GUEST_CID, MAX_GUEST_CID } from '../../shared/vsock.js';
import { LowestFree } from './lowest-free.js';
import { type AddressPool, poolSize, requiredAddress, reservedForOthers } from './pool.js';

export class Leases {
  private readonly freeAddress: LowestFree;
  private readonly freeCid: LowestFree;
  private readonly leaseHolder: Database.Statement<[number], { vm_name: string }>;
  private readonly insert: Database.Statement<[number, string, string, string]>;
  private readonly remove: Database.Statement<[string]>;

  constructor(
    db: Database.Database,
    private readonly pool: AddressPool | undefined,
  ) {
    this.freeAddress = new LowestFree(db, 'leases');
    this.freeCid = new LowestFree(db, 'cids');
    this.leaseHolder = db.prepare('SELECT vm_name FROM ip_leases WHERE ip_num = ?');
    this.insert = db.prepare('INSERT INTO ip_leases (ip_num, ip, vm_name, since) VALUES (?, ?, ?, ?)');
    this.remove = db.prepare('DELETE FROM ip_leases WHERE vm_name = ?');
  }

  /**
   * Picks the VM's address: its reservation, the requested address, or the lowest free one.
   * Writes only the allocation hint; `record` writes the lease once the VM row exists (both in
   * the caller's transaction, so a failure in between leaves neither).
   */
  choose(vmName: string, requestedIp: string | undefined): string {
    const pool = this.pool;
    if (!pool) throw new VolantError('INTERNAL', 'the store was opened without an address pool; bridged VMs need one (openStore({ pool }))');
    const required = requiredAddress(pool, vmName, requestedIp);
    let ip: number;
    if (required !== undefined) {
      const holder = this.leaseHolder.get(required);
      if (holder) throw new VolantError('IP_TAKEN', `address ${formatIPv4(required)} is already leased to VM ${holder.vm_name}`, { ip: formatIPv4(required), vm: holder.vm_name });
      ip = required;
    } else {
      const skip = [...reservedForOthers(pool, vmName), pool.host].sort((a, b) => a - b);
      const free = this.freeAddress.take(pool.start, pool.end, skip);
      if (free === undefined) {
        throw new VolantError('POOL_EXHAUSTED', `no free address left in the pool ${formatIPv4(pool.start)}-${formatIPv4(pool.end)} (${poolSize(pool)} addresses, ${pool.reservedBy.size} reserved)`, {
          pool: `${formatIPv4(pool.start)}-${formatIPv4(pool.end)}`,
        });
      }
      ip = free;
    }
    return formatIPv4(ip);
  }

  record(ip: string, vmName: string, since: string): void {
    this.insert.run(parseIPv4(ip), ip, vmName, since);
  }

  release(vmName: string): void {
    this.remove.run(vmName);
  }

  /** The lowest free vsock CID ≥ FIRST_GUEST_CID (3); the caller inserts it with the VM row. */
  nextCid(): number {
    const cid = this.freeCid.take(FIRST_GUEST_CID, MAX_GUEST_CID);
    if (cid === undefined) throw new VolantError('POOL_EXHAUSTED', 'no free vsock CID left');
    return cid;
  }
}

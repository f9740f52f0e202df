/**
 * The VM rows. Creating a VM and leasing its address (and vsock CID) is one IMMEDIATE
 * transaction, and so is deleting it and releasing them: another process sharing the database
 * waits (busy_timeout) instead of reading a half-written state, and a SIGKILL at any instant
 * leaves either both or neither. Whether a row has a tap and a pool address is the network
 * policy's answer for its mode (`rowNetwork`); the tap and MAC are derived from the name
 * (shared/names.ts), so they are reproducible after a restart without a lookup.
 */

import type Database from 'better-sqlite3';
import { VolantError } from '../../shared/errors.js';
import { assertVmName, macAddress, tapName } from '../../shared/names.js';
import { rowNetwork } from '../../shared/network-policy.js';
import type { NetworkMode } from '../../shared/schema/manifest.js';
import type { AddressPool } from '../ipam/pool.js';
import { Leases } from '../ipam/leases.js';
import { WriteTurns } from './write-turns.js';
import type { VmmKind } from '../vmm/launcher.js';

export const VM_STATES = ['creating', 'starting', 'running', 'stopping', 'stopped', 'failed'] as const;
export type VmState = (typeof VM_STATES)[number];
export const NETWORK_MODES: readonly NetworkMode[] = ['bridged', 'dhcp', 'vsock'];
/** Error text stored on a VM is cut to this many characters. */
export const MAX_VM_ERROR_CHARS = 4096;

export interface VmRecord {
  name: string;
  plugin: string;
  state: VmState;
  mode: NetworkMode;
  /** The leased address; null for dhcp and vsock VMs. */
  ip: string | null;
  mac: string;
  /** null for vsock VMs (no network device). */
  tap: string | null;
  /** The vsock CID (lowest free ≥ 3), also the row's key. */
  cid: number;
  pid: number | null;
  vmm: VmmKind | null;
  config: unknown;
  error: string | null;
  createdAt: string;
  updatedAt: string;
}

export interface NewVm {
  name: string;
  plugin: string;
  /** The VM config as given (stored as JSON). */
  config: unknown;
  state?: VmState;
  vmm?: VmmKind;
}

export interface LeaseOptions {
  mode: NetworkMode;
  /** An explicit address (bridged only); must be free, in the pool, and not reserved for another VM. */
  requestedIp?: string;
}

export interface VmPatch {
  state?: VmState;
  pid?: number | null;
  vmm?: VmmKind | null;
  error?: string | null;
}

interface VmRow {
  name: string;
  plugin: string;
  state: VmState;
  mode: NetworkMode;
  ip: string | null;
  mac: string;
  tap: string | null;
  cid: number;
  pid: number | null;
  vmm: VmmKind | null;
  config: string;
  error: string | null;
  created_at: string;
  updated_at: string;
}

function toRecord(r: VmRow): VmRecord {
  return {
    name: r.name,
    plugin: r.plugin,
    state: r.state,
    mode: r.mode,
    ip: r.ip,
    mac: r.mac,
    tap: r.tap,
    cid: r.cid,
    pid: r.pid,
    vmm: r.vmm,
    config: JSON.parse(r.config),
    error: r.error,
    createdAt: r.created_at,
    updatedAt: r.updated_at,
  };
}

function assertState(state: unknown): asserts state is VmState {
  if (!VM_STATES.includes(state as VmState)) throw new VolantError('INVALID_ARGUMENT', `VM state ${JSON.stringify(state)} is not one of ${VM_STATES.join(', ')}`);
}

/** A problem found by `checkConsistency`: a lease and a VM row that do not agree. */
export interface ConsistencyProblem {
  vm?: string;
  ip?: string;
  problem: string;
}

export class VmRepository {
  private readonly leases: Leases;
  private readonly byName: Database.Statement<[string], VmRow>;
  private readonly all: Database.Statement<[], VmRow>;
  private readonly pluginExists: Database.Statement<[string], { n: number }>;
  private readonly insertVm: Database.Statement<Record<string, unknown>, VmRow>;
  private readonly deleteVm: Database.Statement<[string], VmRow>;
  private readonly createTx: (vm: NewVm, opts: LeaseOptions) => VmRecord;
  private readonly deleteTx: (name: string) => VmRecord;

  constructor(
    private readonly db: Database.Database,
    pool: AddressPool | undefined,
  ) {
    this.leases = new Leases(db, pool);
    this.byName = db.prepare('SELECT * FROM vms WHERE name = ?');
    this.all = db.prepare('SELECT * FROM vms ORDER BY name');
    this.pluginExists = db.prepare('SELECT count(*) AS n FROM plugins WHERE name = ?');
    this.insertVm = db.prepare(`INSERT INTO vms (name, plugin, state, mode, ip, mac, tap, cid, pid, vmm, config, error, created_at, updated_at)
      VALUES (@name, @plugin, @state, @mode, @ip, @mac, @tap, @cid, NULL, @vmm, @config, NULL, @now, @now) RETURNING *`);
    this.deleteVm = db.prepare('DELETE FROM vms WHERE name = ? RETURNING *');
    const create = db.transaction((vm: NewVm, opts: LeaseOptions) => this.insertWithLease(vm, opts));
    const remove = db.transaction((name: string) => this.deleteWithLease(name));
    const turns = new WriteTurns(db);
    this.createTx = (vm, opts) => turns.run(create, vm, opts);
    this.deleteTx = (name) => turns.run(remove, name);
  }

  get(name: string): VmRecord | undefined {
    const row = this.byName.get(name);
    return row ? toRecord(row) : undefined;
  }

  require(name: string): VmRecord {
    const vm = this.get(name);
    if (!vm) throw new VolantError('NOT_FOUND', `VM ${JSON.stringify(String(name).slice(0, 80))} does not exist`);
    return vm;
  }

  list(): VmRecord[] {
    return this.all.all().map(toRecord);
  }

  /**
   * Inserts the VM and, in the same transaction, leases its address (bridged) and its vsock CID.
   * Everything is checked before anything is written; on any error nothing is.
   * Errors: INVALID_ARGUMENT (name, mode, address), NOT_FOUND (plugin), NAME_TAKEN, IP_TAKEN,
   * CONFLICT (reservation clash), POOL_EXHAUSTED.
   */
  createWithLease(vm: NewVm, opts: LeaseOptions): VmRecord {
    assertVmName(vm.name);
    if (!NETWORK_MODES.includes(opts.mode)) throw new VolantError('INVALID_ARGUMENT', `network mode ${JSON.stringify(opts.mode)} is not one of ${NETWORK_MODES.join(', ')}`);
    if (opts.requestedIp !== undefined && !rowNetwork(opts.mode).lease) {
      throw new VolantError('INVALID_ARGUMENT', `an explicit address needs network mode bridged, not ${opts.mode}`);
    }
    assertState(vm.state ?? 'creating');
    return this.createTx(vm, opts);
  }

  /** Deletes the VM and releases its lease in one transaction; returns the deleted record. */
  deleteWithRelease(name: string): VmRecord {
    return this.deleteTx(name);
  }

  update(name: string, patch: VmPatch): VmRecord {
    const sets: string[] = [];
    const values: Record<string, unknown> = { name, now: new Date().toISOString() };
    if (patch.state !== undefined) {
      assertState(patch.state);
      sets.push('state = @state');
      values.state = patch.state;
    }
    if (patch.pid !== undefined) {
      if (patch.pid !== null && (!Number.isInteger(patch.pid) || patch.pid <= 0)) throw new VolantError('INVALID_ARGUMENT', `pid ${patch.pid} is not a positive integer`);
      sets.push('pid = @pid');
      values.pid = patch.pid;
    }
    if (patch.vmm !== undefined) {
      sets.push('vmm = @vmm');
      values.vmm = patch.vmm;
    }
    if (patch.error !== undefined) {
      sets.push('error = @error');
      values.error = patch.error === null ? null : patch.error.slice(0, MAX_VM_ERROR_CHARS);
    }
    sets.push('updated_at = @now');
    const row = this.db.prepare(`UPDATE vms SET ${sets.join(', ')} WHERE name = @name RETURNING *`).get(values) as VmRow | undefined;
    if (!row) throw new VolantError('NOT_FOUND', `VM ${JSON.stringify(String(name).slice(0, 80))} does not exist`);
    return toRecord(row);
  }

  /** Leases and VM rows that disagree (expected: none). Used by tests and start-up reconciliation. */
  checkConsistency(): ConsistencyProblem[] {
    const rows = this.db
      .prepare(`
        SELECT v.name AS vm, v.ip AS vm_ip, l.ip AS lease_ip, l.vm_name AS lease_vm
        FROM vms v LEFT JOIN ip_leases l ON l.vm_name = v.name
        WHERE (v.ip IS NOT NULL OR l.ip IS NOT NULL) AND (v.ip IS NOT l.ip)
        UNION ALL
        SELECT NULL, NULL, l.ip, l.vm_name FROM ip_leases l
        WHERE NOT EXISTS (SELECT 1 FROM vms v WHERE v.name = l.vm_name)`)
      .all() as { vm: string | null; vm_ip: string | null; lease_ip: string | null; lease_vm: string | null }[];
    return rows.map((r) =>
      r.vm === null
        ? { vm: r.lease_vm ?? undefined, ip: r.lease_ip ?? undefined, problem: 'lease without a VM row' }
        : { vm: r.vm, ip: r.vm_ip ?? r.lease_ip ?? undefined, problem: `VM address ${r.vm_ip ?? 'none'} but lease ${r.lease_ip ?? 'none'}` },
    );
  }

  private insertWithLease(vm: NewVm, opts: LeaseOptions): VmRecord {
    if (this.byName.get(vm.name)) throw new VolantError('NAME_TAKEN', `a VM named ${vm.name} already exists`, { name: vm.name });
    if (this.pluginExists.get(vm.plugin)?.n !== 1) throw new VolantError('NOT_FOUND', `plugin ${JSON.stringify(String(vm.plugin).slice(0, 80))} is not installed`);
    const now = new Date().toISOString();
    const cid = this.leases.nextCid();
    const shape = rowNetwork(opts.mode);
    const tap = shape.tap ? tapName(vm.name) : null;
    let config: string;
    try {
      config = JSON.stringify(vm.config ?? {});
    } catch (e) {
      throw new VolantError('INVALID_ARGUMENT', `VM config cannot be stored as JSON: ${(e as Error).message}`);
    }
    const ip = shape.lease ? this.leases.choose(vm.name, opts.requestedIp) : null;
    let row: VmRow;
    try {
      row = this.insertVm.get({ name: vm.name, plugin: vm.plugin, state: vm.state ?? 'creating', mode: opts.mode, ip, mac: macAddress(vm.name), tap, cid, vmm: vm.vmm ?? null, config, now })!;
    } catch (e) {
      if ((e as { code?: string }).code === 'SQLITE_CONSTRAINT_UNIQUE' && /vms\.tap/.test((e as Error).message)) {
        throw new VolantError('CONFLICT', `tap name ${tap} derived from ${vm.name} is already used by another VM; choose another name`);
      }
      throw e;
    }
    // The lease follows the VM row so its foreign key has something to point at.
    if (ip !== null) this.leases.record(ip, vm.name, now);
    return toRecord(row);
  }

  private deleteWithLease(name: string): VmRecord {
    this.leases.release(name);
    const row = this.deleteVm.get(name);
    // Nothing was deleted, so there was no lease to release either: the transaction is a no-op.
    if (!row) throw new VolantError('NOT_FOUND', `VM ${JSON.stringify(String(name).slice(0, 80))} does not exist`);
    return toRecord(row);
  }
}

/**
 * The database schema as numbered migrations. Each runs once, inside the same IMMEDIATE
 * transaction that records it in `schema_migrations`, so two processes opening a fresh file at
 * once cannot both apply it. Never edit a released migration; add the next number.
 *
 * What must hold (enforced by the schema, not only by code):
 * - a VM name is unique; a tap name is unique; a vsock CID is unique and ≥ 3 (it is the row id,
 *   so allocating it needs no index of its own);
 * - an address is leased at most once (`ip_leases.ip_num` is the primary key) and each VM holds
 *   at most one lease; a lease cannot outlive its VM (FK, cascade as a last line of defence).
 *   `vms.ip` and `ip_leases.ip` are the same address as text for readers; they carry no index
 *   of their own because every index is one more page written per lease and per release;
 * - `vms.ip` is NULL for VMs without a lease (dhcp, vsock), so they never collide on ''.
 * - an allocation hint never points above a free number (see migration 2).
 */

import type Database from 'better-sqlite3';

export interface Migration {
  version: number;
  name: string;
  sql: string;
}

export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'plugins, vms, ip_leases',
    sql: `
      CREATE TABLE plugins (
        name         TEXT PRIMARY KEY NOT NULL,
        version      TEXT NOT NULL,
        manifest     TEXT NOT NULL CHECK (json_valid(manifest)),
        image_path   TEXT NOT NULL,
        installed_at TEXT NOT NULL
      ) STRICT;

      CREATE TABLE vms (
        cid        INTEGER PRIMARY KEY CHECK (cid >= 3 AND cid < 4294967295),
        name       TEXT NOT NULL UNIQUE,
        plugin     TEXT NOT NULL REFERENCES plugins(name) ON DELETE RESTRICT,
        state      TEXT NOT NULL CHECK (state IN ('creating','starting','running','stopping','stopped','failed')),
        mode       TEXT NOT NULL CHECK (mode IN ('bridged','dhcp','vsock')),
        ip         TEXT,
        mac        TEXT NOT NULL,
        tap        TEXT UNIQUE,
        pid        INTEGER,
        vmm        TEXT CHECK (vmm IS NULL OR vmm IN ('cloud-hypervisor','qemu')),
        config     TEXT NOT NULL CHECK (json_valid(config)),
        error      TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        CHECK ((mode = 'bridged') = (ip IS NOT NULL)),
        CHECK ((mode = 'vsock') = (tap IS NULL))
      ) STRICT;

      CREATE TABLE ip_leases (
        ip_num  INTEGER PRIMARY KEY CHECK (ip_num BETWEEN 0 AND 4294967295),
        ip      TEXT NOT NULL,
        vm_name TEXT NOT NULL UNIQUE REFERENCES vms(name) ON DELETE CASCADE ON UPDATE CASCADE,
        since   TEXT NOT NULL
      ) STRICT;
    `,
  },
  {
    version: 2,
    name: 'allocation hints',
    // Where the lowest-free search may start: every number below `lowest_maybe_free` is taken
    // (or reserved) for the pool identified by `pool_key`. Triggers lower the hint on every
    // delete, cascades included, so no code path can leave it too high.
    sql: `
      CREATE TABLE allocation_hints (
        kind              TEXT PRIMARY KEY NOT NULL,
        pool_key          TEXT NOT NULL,
        lowest_maybe_free INTEGER NOT NULL
      ) STRICT;
      CREATE TRIGGER ip_leases_release_hint AFTER DELETE ON ip_leases BEGIN
        UPDATE allocation_hints SET lowest_maybe_free = OLD.ip_num WHERE kind = 'ip' AND lowest_maybe_free > OLD.ip_num;
      END;
      CREATE TRIGGER vms_cid_release_hint AFTER DELETE ON vms BEGIN
        UPDATE allocation_hints SET lowest_maybe_free = OLD.cid WHERE kind = 'cid' AND lowest_maybe_free > OLD.cid;
      END;
    `,
  },
];

export function migrate(db: Database.Database, migrations: readonly Migration[] = MIGRATIONS): number[] {
  db.exec('CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)');
  const applied = db.transaction(() => {
    const done = new Set((db.prepare('SELECT version FROM schema_migrations').all() as { version: number }[]).map((r) => r.version));
    const ran: number[] = [];
    for (const m of migrations) {
      if (done.has(m.version)) continue;
      db.exec(m.sql);
      db.prepare('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)').run(m.version, m.name, new Date().toISOString());
      ran.push(m.version);
    }
    return ran;
  });
  return applied.immediate();
}

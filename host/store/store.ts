/**
 * Opens volantd's SQLite database: WAL (readers never block the writer), foreign keys on, write
 * transactions that take turns between processes (write-turns.ts), and the migrations applied
 * once. `synchronous` defaults to NORMAL, which in WAL mode survives any process crash (SIGKILL
 * included) with a consistent database and every committed transaction; a power loss or kernel
 * crash can lose the last commits before it, never the file's consistency. FULL also survives
 * power loss at the price of an fsync per commit (docs/benchmarks.md "bench/ipam").
 */

import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import type { AddressPool } from '../ipam/pool.js';
import { migrate } from './migrations.js';
import { PluginRepository } from './plugins.js';
import { VmRepository } from './vms.js';
import { BUSY_TIMEOUT_MS } from './write-turns.js';

export { BUSY_TIMEOUT_MS } from './write-turns.js';

/**
 * Pages of a new database. A commit appends every page it changed to the WAL whole, and the rows
 * here are small (a VM row, a lease, index entries), so 1 KiB pages write a quarter of what
 * SQLite's default 4 KiB do: bench/ipam ran about 1.8× faster. It applies when the file is
 * created; an existing database keeps the page size it was made with.
 */
export const PAGE_SIZE_BYTES = 1024;
/**
 * Checkpoint the WAL into the database every this many pages instead of SQLite's 1,000. Each
 * checkpoint costs two fsyncs, and lease/release rewrites the same few pages, so checkpointing
 * less often saves most of them, while a WAL of a few MiB stays in the page cache.
 */
export const WAL_AUTOCHECKPOINT_PAGES = 4_000;
/** After a checkpoint the WAL file is cut back to at most this size. */
export const WAL_SIZE_LIMIT_BYTES = 64 * 1024 * 1024;

export interface OpenStoreOptions {
  /** The database file (created with its directory when missing). */
  path: string;
  /** The address pool bridged VMs lease from (`addressPool(config.network)`). */
  pool?: AddressPool;
  synchronous?: 'normal' | 'full';
  readonly?: boolean;
}

export interface Store {
  readonly db: Database.Database;
  readonly path: string;
  readonly pool: AddressPool | undefined;
  readonly plugins: PluginRepository;
  readonly vms: VmRepository;
  close(): void;
}

export function openStore(options: OpenStoreOptions): Store {
  if (!options.readonly) mkdirSync(dirname(options.path), { recursive: true, mode: 0o700 });
  const db = new Database(options.path, { timeout: BUSY_TIMEOUT_MS, readonly: options.readonly ?? false, fileMustExist: options.readonly ?? false });
  try {
    if (!options.readonly) {
      db.pragma(`page_size = ${PAGE_SIZE_BYTES}`);
      db.pragma('journal_mode = WAL');
      db.pragma(`wal_autocheckpoint = ${WAL_AUTOCHECKPOINT_PAGES}`);
      db.pragma(`journal_size_limit = ${WAL_SIZE_LIMIT_BYTES}`);
    }
    db.pragma(`synchronous = ${options.synchronous === 'full' ? 'FULL' : 'NORMAL'}`);
    db.pragma('foreign_keys = ON');
    if (!options.readonly) migrate(db);
  } catch (e) {
    db.close();
    throw e;
  }
  return {
    db,
    path: options.path,
    pool: options.pool,
    plugins: new PluginRepository(db),
    vms: new VmRepository(db, options.pool),
    close: () => db.close(),
  };
}

/**
 * Opens volantd's SQLite database: WAL (readers never block the writer), foreign keys on, a
 * busy timeout so processes sharing the file wait their turn instead of failing, and the
 * migrations applied once. `synchronous` defaults to NORMAL, which in WAL mode survives any
 * process crash (SIGKILL included) with a consistent database; FULL also survives power loss
 * at the price of an fsync per commit.
 */

import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import type { AddressPool } from '../ipam/pool.js';
import { migrate } from './migrations.js';
import { PluginRepository } from './plugins.js';
import { VmRepository } from './vms.js';

/** How long a writer waits for another process's transaction before SQLITE_BUSY. */
export const BUSY_TIMEOUT_MS = 10_000;
/**
 * Checkpoint the WAL into the database every this many pages instead of SQLite's 1,000. Each
 * checkpoint costs two fsyncs, and lease/release rewrites the same few pages, so checkpointing
 * less often removes most of the fsync stalls (≈ a third of the time in bench/ipam).
 */
export const WAL_AUTOCHECKPOINT_PAGES = 10_000;
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

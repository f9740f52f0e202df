/**
 * Installed plugins: a name, its version, the validated manifest (JSON) and where its image
 * lives. Installing a name again replaces the row (an upgrade); removing a plugin that VMs still
 * use is refused by the schema and reported as CONFLICT.
 */

import type Database from 'better-sqlite3';
import { VolantError } from '../../shared/errors.js';
import { assertVmName } from '../../shared/names.js';

export interface PluginRecord {
  name: string;
  version: string;
  manifest: unknown;
  imagePath: string;
  installedAt: string;
}

export interface NewPlugin {
  name: string;
  version: string;
  manifest: unknown;
  imagePath: string;
}

interface PluginRow {
  name: string;
  version: string;
  manifest: string;
  image_path: string;
  installed_at: string;
}

function toRecord(r: PluginRow): PluginRecord {
  return { name: r.name, version: r.version, manifest: JSON.parse(r.manifest), imagePath: r.image_path, installedAt: r.installed_at };
}

export class PluginRepository {
  private readonly byName: Database.Statement<[string], PluginRow>;
  private readonly all: Database.Statement<[], PluginRow>;
  private readonly upsert: Database.Statement<[string, string, string, string, string]>;
  private readonly users: Database.Statement<[string], { name: string }>;
  private readonly remove: Database.Statement<[string]>;

  constructor(db: Database.Database) {
    this.byName = db.prepare('SELECT * FROM plugins WHERE name = ?');
    this.all = db.prepare('SELECT * FROM plugins ORDER BY name');
    this.upsert = db.prepare(`INSERT INTO plugins (name, version, manifest, image_path, installed_at) VALUES (?, ?, ?, ?, ?)
      ON CONFLICT(name) DO UPDATE SET version = excluded.version, manifest = excluded.manifest, image_path = excluded.image_path, installed_at = excluded.installed_at`);
    this.users = db.prepare('SELECT name FROM vms WHERE plugin = ? ORDER BY name LIMIT 10');
    this.remove = db.prepare('DELETE FROM plugins WHERE name = ?');
  }

  get(name: string): PluginRecord | undefined {
    const row = this.byName.get(name);
    return row ? toRecord(row) : undefined;
  }

  require(name: string): PluginRecord {
    const p = this.get(name);
    if (!p) throw new VolantError('NOT_FOUND', `plugin ${JSON.stringify(String(name).slice(0, 80))} is not installed`);
    return p;
  }

  list(): PluginRecord[] {
    return this.all.all().map(toRecord);
  }

  install(p: NewPlugin): PluginRecord {
    assertVmName(p.name, 'plugin name');
    if (typeof p.version !== 'string' || p.version === '') throw new VolantError('INVALID_ARGUMENT', 'plugin version must be a non-empty string');
    if (typeof p.imagePath !== 'string' || p.imagePath === '') throw new VolantError('INVALID_ARGUMENT', 'plugin image path must be a non-empty string');
    this.upsert.run(p.name, p.version, JSON.stringify(p.manifest), p.imagePath, new Date().toISOString());
    return this.require(p.name);
  }

  /** Removes the plugin; CONFLICT while VMs use it, NOT_FOUND when it is not installed. */
  uninstall(name: string): PluginRecord {
    const p = this.require(name);
    const users = this.users.all(name).map((r) => r.name);
    if (users.length > 0) throw new VolantError('CONFLICT', `plugin ${name} is used by VM(s) ${users.join(', ')}; delete them first`, { vms: users });
    this.remove.run(name);
    return p;
  }
}

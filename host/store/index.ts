/** volantd's state: the SQLite store and its repositories. */

export * from './migrations.js';
export * from './plugins.js';
export * from './store.js';
export * from './vms.js';

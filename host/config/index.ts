/** The host configuration: schema, defaults, layered loading and the paths derived from it. */

export * from './env.js';
export * from './load.js';
export * from './schema.js';
export * from './systemd-unit.js';

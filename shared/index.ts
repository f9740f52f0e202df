/**
 * What host and guest agree on. Pure functions and schemas only: nothing here touches the
 * network, the file system or processes, so both sides (and the tests) can trust it alike.
 */

export * from './allowlist.js';
export * from './cmdline.js';
export * from './errors.js';
export * from './http-headers.js';
export * from './ip-param.js';
export * from './ipv4.js';
export * from './names.js';
export * from './network-policy.js';
export * from './schema/manifest.js';
export * from './schema/vm-config.js';
export type { Validated } from './schema/validate.js';
export * from './vsock.js';

/** volantd's HTTP API: server, auth, listen addresses, error mapping, metrics, schemas. */

export * from './auth.js';
export type { ApiContext, IngressSeam } from './context.js';
export * from './errors.js';
export * from './listen.js';
export * from './metrics.js';
export * from './schemas.js';
export * from './server.js';
export * from './views.js';

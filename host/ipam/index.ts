/** Address and vsock CID management: the pool, leasing inside the VM transaction, the report. */

export * from './leases.js';
export * from './lowest-free.js';
export * from './pool.js';
export * from './report.js';

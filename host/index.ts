/**
 * The host library (`volant/host`): what scripts and tests may use without the daemon.
 * Each line re-exports one module's public face.
 */

export * from './vmm/launcher.js';
export * from './vsock/hybrid.js';
export * from './egress/index.js';
export * from './config/index.js';
export * from './store/index.js';
export * from './ipam/index.js';
export * from './network/index.js';
export * from './ingress/index.js';
export * from './orchestrator/index.js';
export * from './agent/client.js';
export * from './api/index.js';
export * from './daemon/daemon.js';
export { ApiClient, type ClientOptions } from './cli/client.js';

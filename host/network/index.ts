/** Host networking: bridge, taps, NAT and per-VM lockdown behind `NetworkManager`. */

import { LinuxNetworkManager } from './linux.js';
import { NoopNetworkManager, type NetworkManager } from './manager.js';
import { type CommandRunner, ExecRunner } from './runner.js';

export * from './ifname.js';
export * from './linux.js';
export * from './manager.js';
export * from './neighbours.js';
export * from './resolvers.js';
export * from './rules.js';
export * from './runner.js';

/** The manager for this platform: Linux through `runner` (default: run commands here), else noop. */
export function createNetworkManager(options: { runner?: CommandRunner; platform?: NodeJS.Platform } = {}): NetworkManager {
  if ((options.platform ?? process.platform) !== 'linux') return new NoopNetworkManager();
  return new LinuxNetworkManager(options.runner ?? new ExecRunner());
}

import type { Command } from 'commander';

/** Registers the `vms` command group (being built: see the issue that owns it). */
export function register(_program: Command): void {}

/**
 * `volar [--json] debug ipam`: the address pool, its size and free count, reservations and every
 * lease, read straight from the database (works without volantd running; WAL lets it read while
 * the daemon writes). The same report is served by volantd at GET /api/v1/debug/ipam.
 */

import { existsSync } from 'node:fs';
import type { Command } from 'commander';
import { statePaths } from '../../config/load.js';
import { type IpamReport, ipamReport } from '../../ipam/report.js';
import { openStore } from '../../store/store.js';
import { emit, globalOptions } from '../output.js';
import { configFor } from './setup.js';

export function formatIpamReport(r: IpamReport): string {
  const lines = [
    `subnet    ${r.subnet} (host ${r.gateway})`,
    `pool      ${r.pool.start} - ${r.pool.end}`,
    `size      ${r.size}`,
    `free      ${r.free}`,
    `leased    ${r.leased}`,
  ];
  if (r.reservations.length > 0) {
    lines.push('', 'RESERVED IP       VM                                                              IN USE');
    for (const x of r.reservations) lines.push(`${x.ip.padEnd(17)} ${x.vm.padEnd(63)} ${x.leased ? 'yes' : 'no'}`);
  }
  lines.push('', 'IP                VM                                                              SINCE');
  for (const l of r.leases) lines.push(`${l.ip.padEnd(17)} ${l.vm.padEnd(63)} ${l.since}`);
  if (r.leases.length === 0) lines.push('(no leases)');
  return lines.join('\n');
}

export interface DebugIpamOptions {
  stateDir?: string;
  config?: string;
}

export function debugIpam(o: DebugIpamOptions): IpamReport {
  const cfg = configFor({ config: o.config, stateDir: o.stateDir });
  const path = statePaths(cfg).database;
  // No database yet (setup or volantd never ran): report the empty pool rather than create files.
  const store = existsSync(path) ? openStore({ path, readonly: true }) : openStore({ path: ':memory:' });
  try {
    return ipamReport(store, cfg);
  } finally {
    store.close();
  }
}

export function register(program: Command): void {
  const debug = program.command('debug').description('look inside volantd state');
  debug
    .command('ipam')
    .description('show the address pool, free count, reservations and leases (reads the database directly)')
    .option('--config <file>', 'config file (default VOLANT_CONFIG or /etc/volant/volantd.yaml)')
    .action((opts: { config?: string }, cmd: Command) => {
      const report = debugIpam({ config: opts.config, stateDir: globalOptions(cmd).stateDir });
      emit(cmd, report, () => formatIpamReport(report));
    });
}

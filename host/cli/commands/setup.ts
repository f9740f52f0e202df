/**
 * `volar setup` prepares a host once: the bridge with the host address, IP forwarding, NAT, the
 * state and runtime directories and the database, optionally a systemd unit, and with `--dhcp`
 * Volant's own DHCP server on the bridge (dnsmasq; host/dhcp). Running it again changes nothing
 * (the DHCP server restarts only when its config changed). `--dry-run` prints the exact commands
 * that would change the system (checks still run, read-only) and writes nothing. `volar
 * teardown` removes what setup made in the network (DHCP server, firewall rules and chains, the
 * bridge); it leaves the database and state alone.
 */

import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Command } from 'commander';
import { type ConfigOverrides, loadConfig, statePaths } from '../../config/load.js';
import type { VolantConfig } from '../../config/schema.js';
import { DEFAULT_SYSTEMD_UNIT_DIR, SYSTEMD_UNIT_NAME, systemdUnit } from '../../config/systemd-unit.js';
import { DHCP_UNIT_NAME } from '../../dhcp/dnsmasq.js';
import { ensureDhcpServer, stopDhcpServer } from '../../dhcp/server.js';
import { createNetworkManager } from '../../network/index.js';
import { LinuxNetworkManager } from '../../network/linux.js';
import type { NetworkManager } from '../../network/manager.js';
import { type CommandRunner, DryRunRunner, ExecRunner } from '../../network/runner.js';
import { openStore } from '../../store/store.js';

export interface HostOptions {
  config?: string;
  stateDir?: string;
  bridge?: string;
  cidr?: string;
  dryRun?: boolean;
  /** Where systemd units live (default /etc/systemd/system). */
  unitDir?: string;
}

export interface SetupOptions extends HostOptions {
  systemd?: boolean;
  unitDir?: string;
  /** Also run Volant's DHCP server on the bridge (config `dhcp`). */
  dhcp?: boolean;
}

type Print = (line: string) => void;

/** Config from the file/env with the command's flags on top. */
export function configFor(o: HostOptions, env: Record<string, string | undefined> = process.env): VolantConfig {
  const overrides: ConfigOverrides = {};
  if (o.stateDir !== undefined) overrides.state_dir = resolve(o.stateDir);
  if (o.bridge !== undefined || o.cidr !== undefined) overrides.network = { bridge: o.bridge, host_cidr: o.cidr };
  return loadConfig({ file: o.config, env, overrides });
}

function commandRunner(dryRun: boolean | undefined, print: Print): CommandRunner {
  return dryRun ? new DryRunRunner({ probes: new ExecRunner(), print: (l) => print(`  ${l}`) }) : new ExecRunner();
}

function networkManager(dryRun: boolean | undefined, print: Print): NetworkManager {
  if (!dryRun) return createNetworkManager();
  return new LinuxNetworkManager(commandRunner(dryRun, print));
}

/** The directory holding package.json, so the unit can point at bin/volantd.js in source and dist layouts. */
function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg) && (JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'volant') return dir;
    const up = dirname(dir);
    if (up === dir) throw new Error('cannot find the volant package root for the systemd unit');
    dir = up;
  }
}

export async function runSetup(o: SetupOptions, print: Print): Promise<void> {
  const cfg = configFor(o);
  const paths = statePaths(cfg);
  const net = networkManager(o.dryRun, print);
  const { bridge, host_cidr } = cfg.network;
  if (o.dryRun) print('dry run: these commands would run (nothing is changed):');
  await net.ensureBridge({ name: bridge, cidr: host_cidr });
  await net.ensureNat({ bridge, subnet: host_cidr });
  const dirs = [cfg.state_dir, cfg.runtime_dir, paths.logs, paths.images, paths.vms];
  if (o.dryRun) {
    for (const d of dirs) if (!existsSync(d)) print(`  mkdir -p -m 0700 ${d}`);
  } else {
    for (const d of dirs) mkdirSync(d, { recursive: true, mode: 0o700 });
    openStore({ path: paths.database }).close();
  }
  if (o.systemd) {
    const unitPath = join(o.unitDir ?? DEFAULT_SYSTEMD_UNIT_DIR, SYSTEMD_UNIT_NAME);
    const execStart = [process.execPath, join(packageRoot(), 'bin', 'volantd.js')];
    if (o.config !== undefined) execStart.push('--config', resolve(o.config));
    if (o.stateDir !== undefined) execStart.push('--state-dir', resolve(o.stateDir));
    const unit = systemdUnit({ execStart, stateDir: cfg.state_dir, runtimeDir: cfg.runtime_dir });
    if (o.dryRun) print(`  write ${unitPath}:\n${unit}`);
    else {
      mkdirSync(dirname(unitPath), { recursive: true });
      writeFileSync(unitPath, unit, { mode: 0o644 });
      print(`wrote ${unitPath}; enable it with: systemctl daemon-reload && systemctl enable --now volantd`);
    }
  }
  let dhcp: string | undefined;
  if (o.dhcp) {
    const r = await ensureDhcpServer(cfg, { runner: commandRunner(o.dryRun, print), print, dryRun: o.dryRun, unitDir: o.unitDir });
    dhcp = `DHCP ${cfg.dhcp.range_start}-${cfg.dhcp.range_end} on ${bridge} by Volant's dnsmasq (${r}); leases in ${paths.dhcpLeases}`;
  }
  if (!o.dryRun) {
    print(`bridge ${bridge} ${host_cidr} up; NAT for ${host_cidr} out of other interfaces; ip_forward=1`);
    print(`pool ${cfg.network.pool_start}-${cfg.network.pool_end}; database ${paths.database}`);
    if (dhcp) print(dhcp);
  }
}

export async function runTeardown(o: HostOptions, print: Print): Promise<void> {
  const cfg = configFor(o);
  const net = networkManager(o.dryRun, print);
  const { bridge, host_cidr } = cfg.network;
  if (o.dryRun) print('dry run: these commands would run (nothing is changed):');
  await stopDhcpServer(cfg, { runner: commandRunner(o.dryRun, print), print, dryRun: o.dryRun, unitDir: o.unitDir });
  await net.removeNat({ bridge, subnet: host_cidr });
  await net.removeBridge(bridge);
  if (!o.dryRun) print(`removed Volant's DHCP server, bridge ${bridge}, its NAT rules and the VM firewall chains (state in ${cfg.state_dir} kept)`);
}

function hostFlags(cmd: Command): Command {
  return cmd
    .option('--bridge <name>', 'bridge name (config network.bridge, default vbr0)')
    .option('--cidr <addr/len>', 'host address on the bridge with prefix (config network.host_cidr, default 192.168.127.1/24)')
    .option('--dry-run', 'print the commands that would change the system and change nothing')
    .option('--state-dir <dir>', 'keep database, sockets and logs under DIR (rootless/dev/test runs)')
    .option('--config <file>', 'config file (default VOLANT_CONFIG or /etc/volant/volantd.yaml)');
}

export function register(program: Command): void {
  const out: Print = (l) => process.stdout.write(`${l}\n`);
  hostFlags(program.command('setup').description('create the bridge, address, forwarding, NAT and state directories (idempotent)'))
    .option('--systemd', `also write a ${SYSTEMD_UNIT_NAME} unit`)
    .option('--dhcp', `also run Volant's DHCP server (dnsmasq) on the bridge for dhcp-mode VMs: config dhcp.range_start-range_end, never overlapping the pool; a ${DHCP_UNIT_NAME} unit where systemd runs`)
    .option('--unit-dir <dir>', `where --systemd and --dhcp write units (default ${DEFAULT_SYSTEMD_UNIT_DIR})`)
    .action((opts: SetupOptions) => runSetup(opts, out));
  hostFlags(program.command('teardown').description('remove what setup made in the network: NAT and VM firewall rules, the bridge')).action((opts: HostOptions) =>
    runTeardown(opts, out),
  );
}

/**
 * `volar setup` prepares a host once: the bridge with the host address, IP forwarding, NAT, the
 * state and runtime directories and the database; where systemd is in charge, the volantd unit,
 * enabled (and started when a kernel is there to boot VMs with; `--no-systemd` skips it); and with
 * `--dhcp` Volant's own DHCP server on the bridge (dnsmasq; host/dhcp). Running it again changes
 * nothing (the DHCP server restarts only when its config changed). `--dry-run` prints the exact
 * commands that would change the system (checks still run, read-only) and writes nothing.
 * `volar teardown` removes what setup made in the network (DHCP server, firewall rules and
 * chains, the bridge); it leaves the database and state alone. volantd itself restores the
 * bridge, address and NAT at every start (daemon.ts), so a reboot needs no second `volar setup`.
 */

import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import type { Command } from 'commander';
import { cachedKernel } from '../../../initramfs/kernel.js';
import { type ConfigOverrides, loadConfig, statePaths } from '../../config/load.js';
import type { VolantConfig } from '../../config/schema.js';
import { DEFAULT_SYSTEMD_UNIT_DIR, SYSTEMD_UNIT_NAME, SYSTEMD_UNIT_PATH, systemdInCharge, systemdUnit } from '../../config/systemd-unit.js';
import { DHCP_UNIT_NAME } from '../../dhcp/dnsmasq.js';
import { ensureDhcpServer, stopDhcpServer } from '../../dhcp/server.js';
import { createNetworkManager } from '../../network/index.js';
import { LinuxNetworkManager } from '../../network/linux.js';
import { ensureHostNetwork, type NetworkManager } from '../../network/manager.js';
import { type CommandRunner, DryRunRunner, ExecRunner } from '../../network/runner.js';
import { packageRoot } from '../../package-info.js';
import { openStore } from '../../store/store.js';
import { emit, globalOptions, jsonMode } from '../output.js';
import { defaultKernelDir } from './kernel.js';

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
  /** true: write the unit even where systemd is not in charge; false: skip it; undefined: install it where systemd is. */
  systemd?: boolean;
  /** Also run Volant's DHCP server on the bridge (config `dhcp`). */
  dhcp?: boolean;
}

/** What setup did (printed as JSON under --json). */
export interface SetupResult {
  dry_run: boolean;
  bridge: string;
  host_cidr: string;
  pool: { start: string; end: string };
  database: string;
  systemd: { unit?: string; enabled: boolean; started: boolean; note?: string };
  dhcp?: string;
  /** The commands a dry run would have run. */
  commands?: string[];
}

type Print = (line: string) => void;

/** Where setup acts: the host's network, command runner and systemd unless a test gives others. */
export interface SetupDeps {
  runner?: CommandRunner;
  network?: NetworkManager;
  systemd?: { inCharge: boolean; unitPath: readonly string[] };
}

/** Config from the file/env with the command's flags on top. */
export function configFor(o: HostOptions, env: Record<string, string | undefined> = process.env): VolantConfig {
  const overrides: ConfigOverrides = {};
  if (o.stateDir !== undefined) overrides.state_dir = resolve(o.stateDir);
  if (o.bridge !== undefined || o.cidr !== undefined) overrides.network = { bridge: o.bridge, host_cidr: o.cidr };
  return loadConfig({ file: o.config, env, overrides });
}

/** One runner for network, systemctl and DHCP commands: real, or (dry run) printing them instead. */
function commandRunner(dryRun: boolean | undefined, print: Print): CommandRunner {
  return dryRun ? new DryRunRunner({ probes: new ExecRunner(), print: (l) => print(`  ${l}`) }) : new ExecRunner();
}

function networkManager(dryRun: boolean | undefined, runner: CommandRunner): NetworkManager {
  return dryRun ? new LinuxNetworkManager(runner) : createNetworkManager({ runner });
}

/** Writes volantd's unit and, where systemd is in charge, enables it (and starts it when there is a kernel). */
async function installUnit(o: SetupOptions, cfg: VolantConfig, runner: CommandRunner, print: Print, systemd: NonNullable<SetupDeps['systemd']>): Promise<SetupResult['systemd']> {
  if (o.systemd === false) return { enabled: false, started: false, note: 'skipped (--no-systemd)' };
  if (!systemd.inCharge && o.systemd !== true) return { enabled: false, started: false, note: 'systemd is not in charge here: no unit installed; start volantd yourself' };
  const unitPath = join(o.unitDir ?? DEFAULT_SYSTEMD_UNIT_DIR, SYSTEMD_UNIT_NAME);
  const execStart = [process.execPath, join(packageRoot(), 'bin', 'volantd.js')];
  if (o.config !== undefined) execStart.push('--config', resolve(o.config));
  if (o.stateDir !== undefined) execStart.push('--state-dir', resolve(o.stateDir));
  const unit = systemdUnit({ execStart, stateDir: cfg.state_dir, runtimeDir: cfg.runtime_dir });
  if (o.dryRun) print(`  write ${unitPath}:\n${unit}`);
  else {
    mkdirSync(dirname(unitPath), { recursive: true });
    writeFileSync(unitPath, unit, { mode: 0o644 });
  }
  if (!systemd.inCharge) return { unit: unitPath, enabled: false, started: false, note: 'systemd is not in charge here: unit written, not enabled' };
  if (!systemd.unitPath.includes(resolve(dirname(unitPath)))) return { unit: unitPath, enabled: false, started: false, note: `systemd does not load units from ${dirname(unitPath)}: written, not enabled` };
  // volantd refuses to start without a kernel; enable it for the next boot and say how to start it.
  const kernel = cfg.kernel.path ?? (await cachedKernel(defaultKernelDir(cfg.state_dir)))?.vmlinuz;
  await runner.run({ argv: ['systemctl', 'daemon-reload'] });
  await runner.run({ argv: ['systemctl', 'enable', ...(kernel ? ['--now'] : []), SYSTEMD_UNIT_NAME] });
  return kernel
    ? { unit: unitPath, enabled: true, started: true }
    : { unit: unitPath, enabled: true, started: false, note: 'not started: no kernel yet; run `volar kernel fetch`, then `systemctl start volantd`' };
}

export async function runSetup(o: SetupOptions, print: Print, deps: SetupDeps = {}): Promise<SetupResult> {
  const cfg = configFor(o);
  const paths = statePaths(cfg);
  const runner = deps.runner ?? commandRunner(o.dryRun, print);
  const net = deps.network ?? networkManager(o.dryRun, runner);
  const { bridge, host_cidr } = cfg.network;
  if (o.dryRun) print('dry run: these commands would run (nothing is changed):');
  await ensureHostNetwork(net, cfg.network);
  const dirs = [cfg.state_dir, cfg.runtime_dir, cfg.log.dir, paths.images, paths.vms];
  if (o.dryRun) {
    for (const d of dirs) if (!existsSync(d)) print(`  mkdir -p -m 0700 ${d}`);
  } else {
    for (const d of dirs) mkdirSync(d, { recursive: true, mode: 0o700 });
    openStore({ path: paths.database }).close();
  }
  const systemd = await installUnit(o, cfg, runner, print, deps.systemd ?? { inCharge: systemdInCharge(), unitPath: SYSTEMD_UNIT_PATH });
  let dhcp: string | undefined;
  if (o.dhcp) {
    const r = await ensureDhcpServer(cfg, { runner, print, dryRun: o.dryRun, unitDir: o.unitDir });
    dhcp = `DHCP ${cfg.dhcp.range_start}-${cfg.dhcp.range_end} on ${bridge} by Volant's dnsmasq (${r}); leases in ${paths.dhcpLeases}`;
  }
  if (!o.dryRun) {
    print(`bridge ${bridge} ${host_cidr} up; NAT for ${host_cidr} out of other interfaces; ip_forward=1`);
    print(`pool ${cfg.network.pool_start}-${cfg.network.pool_end}; database ${paths.database}`);
    if (dhcp) print(dhcp);
  }
  if (systemd.unit) print(`${o.dryRun ? 'would write' : 'wrote'} ${systemd.unit}${systemd.enabled ? `; enabled${systemd.started ? ' and started' : ''}` : ''}`);
  if (systemd.note) print(`systemd: ${systemd.note}`);
  return {
    dry_run: o.dryRun === true,
    bridge,
    host_cidr,
    pool: { start: cfg.network.pool_start, end: cfg.network.pool_end },
    database: paths.database,
    systemd,
    ...(dhcp ? { dhcp } : {}),
    ...(runner instanceof DryRunRunner ? { commands: runner.commands.map((c) => c.join(' ')) } : {}),
  };
}

export async function runTeardown(o: HostOptions, print: Print): Promise<void> {
  const cfg = configFor(o);
  const runner = commandRunner(o.dryRun, print);
  const net = networkManager(o.dryRun, runner);
  const { bridge, host_cidr } = cfg.network;
  if (o.dryRun) print('dry run: these commands would run (nothing is changed):');
  await stopDhcpServer(cfg, { runner, print, dryRun: o.dryRun, unitDir: o.unitDir });
  await net.removeNat({ bridge, subnet: host_cidr });
  await net.removeBridge(bridge);
  if (!o.dryRun) print(`removed Volant's DHCP server, bridge ${bridge}, its NAT rules and the VM firewall chains (state in ${cfg.state_dir} kept)`);
}

function hostFlags(cmd: Command): Command {
  return cmd
    .option('--bridge <name>', 'bridge name (config network.bridge, default vbr0)')
    .option('--cidr <addr/len>', 'host address on the bridge with prefix (config network.host_cidr, default 192.168.127.1/24)')
    .option('--dry-run', 'print the commands that would change the system and change nothing')
    .option('--config <file>', 'config file (default VOLANT_CONFIG or /etc/volant/volantd.yaml)');
}

/** The command's own flags with the global --state-dir. */
function hostOptions<T extends HostOptions>(opts: T, cmd: Command): T {
  return { ...opts, stateDir: globalOptions(cmd).stateDir };
}

/** Human lines on stdout; under --json they go to stderr so stdout holds only the JSON result. */
function printer(cmd: Command): Print {
  const stream = jsonMode(cmd) ? process.stderr : process.stdout;
  return (l) => stream.write(`${l}\n`);
}

export function register(program: Command): void {
  hostFlags(program.command('setup').description('create the bridge, address, forwarding, NAT, state directories and (where systemd runs) the volantd unit; idempotent'))
    .option('--systemd', `write the ${SYSTEMD_UNIT_NAME} unit even where systemd is not in charge`)
    .option('--no-systemd', `do not install the ${SYSTEMD_UNIT_NAME} unit`)
    .option('--dhcp', `also run Volant's DHCP server (dnsmasq) on the bridge for dhcp-mode VMs: config dhcp.range_start-range_end, never overlapping the pool; a ${DHCP_UNIT_NAME} unit where systemd runs`)
    .option('--unit-dir <dir>', `where the volantd and DHCP units go (default ${DEFAULT_SYSTEMD_UNIT_DIR})`)
    .action(async (opts: SetupOptions, cmd: Command) => {
      const result = await runSetup(hostOptions(opts, cmd), printer(cmd));
      if (jsonMode(cmd)) emit(cmd, result, () => '');
    });
  hostFlags(program.command('teardown').description("remove what setup made in the network: Volant's DHCP server, NAT and VM firewall rules, the bridge"))
    .option('--unit-dir <dir>', `where the DHCP unit is (default ${DEFAULT_SYSTEMD_UNIT_DIR})`)
    .action(async (opts: HostOptions, cmd: Command) => {
      await runTeardown(hostOptions(opts, cmd), printer(cmd));
      if (jsonMode(cmd)) emit(cmd, { removed: true }, () => '');
    });
}

/**
 * Volant's DHCP server, the side-effect half (dnsmasq.ts decides): `volar setup --dhcp` writes
 * the config and makes the server run it; `volar teardown` stops it. Idempotent: the server is
 * (re)started only when it does not run or its config or unit changed. Commands go through a
 * CommandRunner, so `--dry-run` prints exactly what would run.
 */

import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { VolantError } from '../../shared/errors.js';
import { formatIPv4, tryParseCidr } from '../../shared/ipv4.js';
import { statePaths } from '../config/load.js';
import type { VolantConfig } from '../config/schema.js';
import { DEFAULT_SYSTEMD_UNIT_DIR, inInitNetworkNamespace, SYSTEMD_RUNTIME_DIR } from '../config/systemd-unit.js';
import type { CommandRunner } from '../network/runner.js';
import { readProcessArgv } from '../vmm/process.js';
import { findOnPath } from '../vmm/select.js';
import { DHCP_UNIT_NAME, DNSMASQ_BINARY, type DhcpSupervisor, dhcpSupervisor, dhcpUnit, type DnsmasqSettings, dnsmasqArgv, dnsmasqConfig } from './dnsmasq.js';

/** How long a replaced dnsmasq gets to exit after SIGTERM. */
export const DNSMASQ_STOP_WAIT_MS = 5_000;
const STOP_POLL_MS = 50;
/** Where dnsmasq lives on Debian (sbin is not on every user's PATH). */
const SBIN_PATH = '/usr/local/sbin:/usr/sbin:/sbin';

export interface DhcpServerOptions {
  runner: CommandRunner;
  print: (line: string) => void;
  dryRun?: boolean;
  /** Where the systemd unit goes (default /etc/systemd/system). */
  unitDir?: string;
  /** Default: systemd where it runs in this network namespace, else a process (dnsmasq.ts). */
  supervisor?: DhcpSupervisor;
  binary?: string;
}

/** dnsmasq's settings from the Volant config; INVALID_ARGUMENT when no DHCP range is configured or derivable. */
export function dhcpSettings(cfg: VolantConfig): DnsmasqSettings {
  const subnet = tryParseCidr(cfg.network.host_cidr);
  const { range_start, range_end } = cfg.dhcp;
  if (!subnet) throw new VolantError('INVALID_ARGUMENT', `network.host_cidr ${JSON.stringify(cfg.network.host_cidr)} is not usable`);
  if (range_start === undefined || range_end === undefined) {
    throw new VolantError('INVALID_ARGUMENT', `no DHCP range: there is no room below the pool (${cfg.network.pool_start}); set dhcp.range_start and dhcp.range_end outside the pool`);
  }
  const paths = statePaths(cfg);
  return {
    bridge: cfg.network.bridge,
    gateway: formatIPv4(subnet.address),
    netmask: formatIPv4(subnet.mask),
    rangeStart: range_start,
    rangeEnd: range_end,
    leaseTimeS: cfg.dhcp.lease_time_s,
    // Only resolvers the config names: guests get the host's default ones on their command line (volant.dns).
    dns: cfg.network.dns ?? [],
    leaseFile: paths.dhcpLeases,
  };
}

function readText(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}

/** The supervisor this host calls for (see `dhcpSupervisor`). */
export function detectDhcpSupervisor(): DhcpSupervisor {
  return dhcpSupervisor({ systemdRunning: existsSync(SYSTEMD_RUNTIME_DIR), inInitNetworkNamespace: inInitNetworkNamespace() });
}

/** The PID of the dnsmasq running our config (pid file, checked against its command line), if any. */
export function runningDhcpServer(cfg: VolantConfig): number | undefined {
  const paths = statePaths(cfg);
  const pid = Number((readText(paths.dhcpPid) ?? '').trim());
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  const argv = readProcessArgv(pid);
  return argv?.some((a) => a === `--conf-file=${paths.dhcpConfig}`) ? pid : undefined;
}

async function stopProcess(pid: number): Promise<void> {
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    return;
  }
  const deadline = Date.now() + DNSMASQ_STOP_WAIT_MS;
  while (readProcessArgv(pid) !== undefined) {
    if (Date.now() > deadline) throw new VolantError('SYSTEM_COMMAND_FAILED', `dnsmasq (pid ${pid}) did not exit within ${DNSMASQ_STOP_WAIT_MS} ms of SIGTERM`);
    await sleep(STOP_POLL_MS);
  }
}

function writeIfChanged(path: string, text: string, mode: number, o: DhcpServerOptions): boolean {
  if (readText(path) === text) return false;
  if (o.dryRun) o.print(`  write ${path}:\n${text.replace(/^/gm, '    ')}`);
  else {
    mkdirSync(dirname(path), { recursive: true, mode: 0o755 });
    writeFileSync(path, text, { mode });
  }
  return true;
}

/**
 * Makes Volant's DHCP server run the configured range on the bridge. Returns what it did:
 * `started`, `restarted` (config or unit changed) or `unchanged`.
 */
export async function ensureDhcpServer(cfg: VolantConfig, o: DhcpServerOptions): Promise<'started' | 'restarted' | 'unchanged'> {
  const paths = statePaths(cfg);
  const settings = dhcpSettings(cfg);
  const binary = o.binary ?? findOnPath(DNSMASQ_BINARY, `${process.env.PATH ?? ''}:${SBIN_PATH}`);
  if (!binary) throw new VolantError('NOT_FOUND', `${DNSMASQ_BINARY} is not installed (apt-get install dnsmasq-base; scripts/install-deps.sh installs it)`);
  const configChanged = writeIfChanged(paths.dhcpConfig, dnsmasqConfig(settings), 0o644, o);
  const supervisor = o.supervisor ?? detectDhcpSupervisor();

  if (supervisor === 'systemd') {
    const unitPath = join(o.unitDir ?? DEFAULT_SYSTEMD_UNIT_DIR, DHCP_UNIT_NAME);
    const unitChanged = writeIfChanged(unitPath, dhcpUnit({ bridge: settings.bridge, execStart: dnsmasqArgv(binary, paths.dhcpConfig, { foreground: true }) }), 0o644, o);
    if (unitChanged) await o.runner.run({ argv: ['systemctl', 'daemon-reload'] });
    if ((await o.runner.run({ argv: ['systemctl', 'is-enabled', '--quiet', DHCP_UNIT_NAME], probe: true })).code !== 0) {
      await o.runner.run({ argv: ['systemctl', 'enable', DHCP_UNIT_NAME] });
    }
    const active = (await o.runner.run({ argv: ['systemctl', 'is-active', '--quiet', DHCP_UNIT_NAME], probe: true })).code === 0;
    if (!active) {
      await o.runner.run({ argv: ['systemctl', 'start', DHCP_UNIT_NAME] });
      return 'started';
    }
    if (!configChanged && !unitChanged) return 'unchanged';
    await o.runner.run({ argv: ['systemctl', 'restart', DHCP_UNIT_NAME] });
    return 'restarted';
  }

  const pid = runningDhcpServer(cfg);
  if (pid !== undefined && !configChanged) return 'unchanged';
  if (pid !== undefined) {
    if (o.dryRun) o.print(`  kill ${pid}   # dnsmasq with the old config`);
    else await stopProcess(pid);
  }
  if (!o.dryRun) mkdirSync(dirname(paths.dhcpPid), { recursive: true, mode: 0o700 });
  // dnsmasq daemonises: the command returns once the server runs and has written its pid file.
  await o.runner.run({ argv: dnsmasqArgv(binary, paths.dhcpConfig, { foreground: false, pidFile: paths.dhcpPid }) });
  return pid === undefined ? 'started' : 'restarted';
}

/** Stops Volant's DHCP server and removes its config (so `dhcp.server: auto` means external again). Idempotent. */
export async function stopDhcpServer(cfg: VolantConfig, o: DhcpServerOptions): Promise<void> {
  const paths = statePaths(cfg);
  const unitPath = join(o.unitDir ?? DEFAULT_SYSTEMD_UNIT_DIR, DHCP_UNIT_NAME);
  if (existsSync(unitPath)) {
    await o.runner.run({ argv: ['systemctl', 'disable', '--now', DHCP_UNIT_NAME] });
    if (o.dryRun) o.print(`  rm ${unitPath}`);
    else rmSync(unitPath, { force: true });
    await o.runner.run({ argv: ['systemctl', 'daemon-reload'] });
  }
  const pid = runningDhcpServer(cfg);
  if (pid !== undefined) {
    if (o.dryRun) o.print(`  kill ${pid}   # dnsmasq`);
    else await stopProcess(pid);
  }
  if (existsSync(paths.dhcpConfig)) {
    if (o.dryRun) o.print(`  rm ${paths.dhcpConfig}`);
    else rmSync(paths.dhcpConfig, { force: true });
  }
}

/** Whether `volar setup --dhcp` configured Volant's DHCP server here (what `dhcp.server: auto` follows). */
export function volantDhcpConfigured(cfg: VolantConfig): boolean {
  return existsSync(statePaths(cfg).dhcpConfig);
}

/**
 * The `volantd.service` unit `volar setup --systemd` writes. volantd needs root for taps and
 * firewall rules, so the unit runs as root but takes away what it does not need: no new
 * privileges, a read-only system except its state and runtime directories, private /tmp.
 * ExecStart is built from argv (each argument quoted the systemd way), never pasted text.
 * `systemdInCharge` says whether units installed here would serve this host's network.
 */

import { existsSync, readlinkSync } from 'node:fs';

export const SYSTEMD_UNIT_NAME = 'volantd.service';
export const DEFAULT_SYSTEMD_UNIT_DIR = '/etc/systemd/system';
/** Present exactly when systemd is the init system (what sd_booted(3) checks). */
export const SYSTEMD_RUNTIME_DIR = '/run/systemd/system';
/** Unit folders systemd loads from; a unit written anywhere else is only written, never enabled. */
export const SYSTEMD_UNIT_PATH: readonly string[] = ['/etc/systemd/system', '/run/systemd/system', '/usr/local/lib/systemd/system', '/usr/lib/systemd/system', '/lib/systemd/system'];

/** This process shares PID 1's network namespace (not a test's or a container's own). */
export function inInitNetworkNamespace(): boolean {
  try {
    return readlinkSync('/proc/self/ns/net') === readlinkSync('/proc/1/ns/net');
  } catch {
    return false;
  }
}

/** systemd is the init system and its services would run in this network namespace. */
export function systemdInCharge(): boolean {
  return existsSync(SYSTEMD_RUNTIME_DIR) && inInitNetworkNamespace();
}

export interface SystemdUnitOptions {
  /** The command volantd runs as, e.g. [node, /opt/volant/bin/volantd.js, --config, F]. */
  execStart: string[];
  stateDir: string;
  runtimeDir: string;
}

/** systemd's command-line quoting: double quotes with \\ and \" escaped, `%` doubled, `$` doubled. */
export function quoteSystemdArg(arg: string): string {
  if (/[\n\r]/.test(arg)) throw new Error(`a unit argument cannot contain a line break: ${JSON.stringify(arg)}`);
  const escaped = arg.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/%/g, '%%').replace(/\$/g, '$$$$');
  return /^[A-Za-z0-9_./:=@+,-]+$/.test(arg) ? escaped : `"${escaped}"`;
}

/** A simple service started at boot and restarted on failure; `unit` and `service` add their sections' own lines. */
export function serviceUnit(o: { description: string; unit: string[]; execStart: string[]; service: string[] }): string {
  return [
    '[Unit]',
    `Description=${o.description}`,
    ...o.unit,
    '',
    '[Service]',
    'Type=simple',
    `ExecStart=${o.execStart.map(quoteSystemdArg).join(' ')}`,
    'Restart=on-failure',
    'RestartSec=2s',
    ...o.service,
    '',
    '[Install]',
    'WantedBy=multi-user.target',
    '',
  ].join('\n');
}

export function systemdUnit(o: SystemdUnitOptions): string {
  return serviceUnit({
    description: 'Volant microVM daemon (volantd)',
    unit: ['After=network-online.target', 'Wants=network-online.target'],
    execStart: o.execStart,
    service: [
      // VMs are separate processes the daemon re-adopts after a restart; stopping the unit must not kill them.
      'KillMode=process',
      'NoNewPrivileges=yes',
      'ProtectSystem=full',
      'PrivateTmp=yes',
      `ReadWritePaths=${quoteSystemdArg(o.stateDir)} ${quoteSystemdArg(o.runtimeDir)}`,
      'LimitNOFILE=65536',
    ],
  });
}

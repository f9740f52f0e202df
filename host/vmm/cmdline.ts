/**
 * The kernel command line a VM boots with (docs/CONTRACTS.md "Kernel command line"). The host writes
 * it, kestrel reads it with shared `parseCmdline`/`parseIpParam`. What must hold:
 *
 *  - Every parameter goes through `formatCmdlineParam`, so no value (VM name, env, DNS) can end
 *    early and smuggle a parameter of its own; env and the manifest override travel encoded.
 *  - `console=ttyS0` (the serial log), `reboot=k panic=-1`: a guest power-off or panic ends the
 *    VMM (QEMU runs with `-no-reboot`), so the orchestrator sees it as an exit.
 *  - `volant.runtime=pmem|blk` (+ `swiotlb=noforce` for pmem) when the image uses the shared runtime.
 *  - `ip=` is what the network policy chose: static settings through `formatIpParam`, `ip=dhcp`,
 *    or none (a VM without an interface, only lo). `volant.mode` names the mode alongside.
 *  - The result fits the kernel's COMMAND_LINE_SIZE; the kernel would truncate silently.
 */

import { gzipSync } from 'node:zlib';
import { formatCmdlineParam } from '../../shared/cmdline.js';
import { VolantError } from '../../shared/errors.js';
import { formatIpParam } from '../../shared/ip-param.js';
import { formatIPv4, tryParseIPv4 } from '../../shared/ipv4.js';
import { assertVmName, guestHostname } from '../../shared/names.js';
import { RUNTIME_DEVICES, RUNTIME_PARAM, type RuntimeDevice } from '../../shared/runtime-image.js';
import { ENV_NAME, type NetworkMode } from '../../shared/schema/manifest.js';

/** x86 COMMAND_LINE_SIZE is 2048 bytes including the terminating NUL. */
export const MAX_KERNEL_CMDLINE_BYTES = 2047;
/** resolv.conf honours at most three `nameserver` lines. */
export const MAX_DNS_SERVERS = 3;

/**
 * The network part of the command line, as the network policy decided it: `volant.mode`, and
 * `ip=` with static settings (from the lease), `dhcp`, or none at all (no interface).
 */
export interface CmdlineNetwork {
  mode: NetworkMode;
  ip?: { address: string; gateway: string; prefix: number } | 'dhcp';
}

/** How kestrel's egress forwarder reaches the host proxy; absent when outbound is not allowed. */
export type CmdlineEgress = { kind: 'vsock' } | { kind: 'tcp'; host: string; port: number };

export interface KernelCmdlineSpec {
  vmName: string;
  network: CmdlineNetwork;
  /** Per-VM environment merged by kestrel over the manifest's. */
  env?: Record<string, string>;
  dns?: string[];
  egress?: CmdlineEgress;
  /** Any JSON value; sent as base64url(gzip(JSON)) to override /etc/volant/plugin.json. */
  manifestOverride?: unknown;
  selftest?: 'vsock';
  /** How the shared runtime image is attached (absent for a `single`-layout image). */
  runtime?: RuntimeDevice;
}

const BASE_PARAMS = ['console=ttyS0', 'reboot=k', 'panic=-1'] as const;
const MODES: readonly NetworkMode[] = ['bridged', 'dhcp', 'vsock'];

function bad(message: string): never {
  throw new VolantError('INVALID_ARGUMENT', `kernel command line: ${message}`);
}

const base64url = (data: Buffer | string): string => Buffer.from(data).toString('base64url');

function ipv4(text: unknown, what: string): string {
  const n = typeof text === 'string' ? tryParseIPv4(text) : undefined;
  if (n === undefined) bad(`${what} ${JSON.stringify(text)} is not a dotted-quad IPv4 address`);
  return formatIPv4(n);
}

function envParam(env: Record<string, string>): string {
  if (typeof env !== 'object' || env === null || Array.isArray(env)) bad('env must be an object of string values');
  for (const [k, v] of Object.entries(env)) {
    if (!ENV_NAME.test(k)) bad(`env name ${JSON.stringify(k.slice(0, 64))} is not allowed (letters, digits, '_'; not starting with a digit; at most 128)`);
    if (typeof v !== 'string') bad(`env ${k} must be a string, got ${v === null ? 'null' : typeof v}`);
    if (v.includes('\0')) bad(`env ${k} contains a NUL byte`);
  }
  return formatCmdlineParam('volant.env', base64url(JSON.stringify(env)));
}

function egressValue(egress: CmdlineEgress): string {
  if (egress.kind === 'vsock') return 'vsock';
  if (egress.kind !== 'tcp') bad(`egress kind ${JSON.stringify((egress as { kind: unknown }).kind)} is not vsock or tcp`);
  const host = ipv4(egress.host, 'egress host');
  if (!Number.isInteger(egress.port) || egress.port < 1 || egress.port > 65535) bad(`egress port ${JSON.stringify(egress.port)} is not 1-65535`);
  return `tcp:${host}:${egress.port}`;
}

function networkParams(vmName: string, network: CmdlineNetwork): string[] {
  const mode = network?.mode;
  if (!MODES.includes(mode)) bad(`network mode ${JSON.stringify(mode)} is not one of ${MODES.join(', ')}`);
  const out = [formatCmdlineParam('volant.mode', mode)];
  const ip = network.ip;
  if (ip === 'dhcp') out.unshift(formatCmdlineParam('ip', 'dhcp'));
  else if (ip !== undefined) {
    if (typeof ip !== 'object' || ip === null) bad(`ip ${JSON.stringify(ip)} is not static settings or dhcp`);
    out.unshift(formatIpParam({ ip: ip.address, gateway: ip.gateway, netmask: ip.prefix, hostname: guestHostname(vmName), device: 'eth0' }));
  }
  return out;
}

/**
 * `volant.runtime=` tells stage-1 which device holds the runtime image. With pmem, the image is
 * device memory above 4 GiB (QEMU's maxmem), which makes the kernel reserve a 64 MiB swiotlb
 * bounce buffer; `swiotlb=noforce` drops it (virtio without ACCESS_PLATFORM never bounces).
 */
function runtimeParams(device: RuntimeDevice | undefined): string[] {
  if (device === undefined) return [];
  if (!RUNTIME_DEVICES.includes(device)) bad(`runtime device ${JSON.stringify(device)} is not one of ${RUNTIME_DEVICES.join(', ')}`);
  return [formatCmdlineParam(RUNTIME_PARAM, device), ...(device === 'pmem' ? ['swiotlb=noforce'] : [])];
}

/** The whole command line, parameters separated by single spaces. */
export function buildKernelCmdline(spec: KernelCmdlineSpec): string {
  const vmName = assertVmName(spec.vmName);
  const params: string[] = [...BASE_PARAMS, ...runtimeParams(spec.runtime), ...networkParams(vmName, spec.network), formatCmdlineParam('volant.name', vmName)];
  if (spec.env !== undefined && Object.keys(spec.env).length > 0) params.push(envParam(spec.env));
  if (spec.dns !== undefined && spec.dns.length > 0) {
    if (!Array.isArray(spec.dns) || spec.dns.length > MAX_DNS_SERVERS) bad(`dns takes at most ${MAX_DNS_SERVERS} IPv4 addresses`);
    params.push(formatCmdlineParam('volant.dns', spec.dns.map((d) => ipv4(d, 'DNS server')).join(',')));
  }
  if (spec.egress !== undefined) params.push(formatCmdlineParam('volant.egress', egressValue(spec.egress)));
  if (spec.manifestOverride !== undefined) {
    params.push(formatCmdlineParam('volant.manifest', base64url(gzipSync(JSON.stringify(spec.manifestOverride)))));
  }
  if (spec.selftest !== undefined) {
    if (spec.selftest !== 'vsock') bad(`selftest ${JSON.stringify(spec.selftest)} is not vsock`);
    params.push(formatCmdlineParam('volant.selftest', 'vsock'));
  }
  const line = params.join(' ');
  const bytes = Buffer.byteLength(line);
  if (bytes > MAX_KERNEL_CMDLINE_BYTES) {
    throw new VolantError(
      'INVALID_ARGUMENT',
      `kernel command line is ${bytes} bytes; the kernel keeps at most ${MAX_KERNEL_CMDLINE_BYTES} (make env or the manifest override smaller)`,
      { bytes, limit: MAX_KERNEL_CMDLINE_BYTES },
    );
  }
  return line;
}

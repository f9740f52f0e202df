/**
 * Step 3 of boot: the kernel command line, read once, becomes a typed BootConfig. This is a pure
 * function of the text (the table tests feed it strings), so every later step decides from
 * BootConfig alone and never looks at /proc/cmdline again.
 *
 * What must hold:
 *  - `ip=` is read with the shared `parseIpParam`, the same codec the host writes with.
 *  - The mode comes from `volant.mode`; without it, from `ip=` (static → bridged, dhcp → dhcp,
 *    none → vsock). A mode that contradicts `ip=` is an error, never a guess.
 *  - Encoded values (env, manifest) are size-capped before and after decoding and validated with
 *    the shared schemas; garbage is a VolantError that names the parameter.
 */

import { gunzipSync } from 'node:zlib';
import { parseCmdline } from '../../shared/cmdline.js';
import { VolantError } from '../../shared/errors.js';
import { type IpParam, parseIpParam } from '../../shared/ip-param.js';
import { formatIPv4, tryParseIPv4 } from '../../shared/ipv4.js';
import { ENV_NAME, type NetworkMode, type PluginManifest, validateManifest } from '../../shared/schema/manifest.js';
import { EGRESS_VSOCK_PORT, HOST_CID } from '../../shared/vsock.js';
import type { Endpoint } from '../server/endpoint.js';
import { parseEndpoint } from '../server/endpoint.js';

/** A decoded manifest override may not exceed this (gzip bombs stop here). */
export const MAX_MANIFEST_OVERRIDE_BYTES = 1024 * 1024;
/** resolv.conf honours at most three nameservers. */
export const MAX_DNS_SERVERS = 3;
export const MAX_ENV_VALUE_BYTES = 32768;

export interface BootConfig {
  mode: NetworkMode;
  /** The VM's name (`volant.name`), if the host gave one. */
  name?: string;
  /** Static eth0 settings (bridged), from `ip=`. */
  ip?: Required<Pick<IpParam, 'client' | 'prefix'>> & Pick<IpParam, 'gateway' | 'device'>;
  hostname: string;
  /** Resolvers: `volant.dns` first, then those from `ip=`, at most MAX_DNS_SERVERS. */
  dns: string[];
  /** Per-VM environment, merged over the manifest's. */
  env: Record<string, string>;
  /** How the egress forwarder reaches the host proxy; absent when outbound is not allowed. */
  egress?: Endpoint;
  /** A validated manifest that replaces /etc/volant/plugin.json. */
  manifestOverride?: PluginManifest;
  selftest?: 'vsock';
}

export const DEFAULT_HOSTNAME = 'volant';

function bad(param: string, message: string): never {
  throw new VolantError('INVALID_ARGUMENT', `kernel command line ${param}: ${message}`);
}

function decodeBase64url(param: string, text: string): Buffer {
  if (!/^[A-Za-z0-9_-]*$/.test(text)) bad(param, 'is not base64url (letters, digits, - and _ only)');
  return Buffer.from(text, 'base64url');
}

function decodeEnv(text: string): Record<string, string> {
  let value: unknown;
  try {
    value = JSON.parse(decodeBase64url('volant.env', text).toString('utf8'));
  } catch (e) {
    if (e instanceof VolantError) throw e;
    bad('volant.env', 'is not base64url-encoded JSON');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) bad('volant.env', 'must encode a JSON object');
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(value)) {
    if (!ENV_NAME.test(k) || k === '__proto__') bad('volant.env', `name ${JSON.stringify(k.slice(0, 64))} is not allowed ([A-Za-z_][A-Za-z0-9_]*, not __proto__)`);
    if (typeof v !== 'string') bad('volant.env', `${k} must be a string, got ${v === null ? 'null' : typeof v}`);
    if (v.includes('\0')) bad('volant.env', `${k} contains a NUL byte`);
    if (Buffer.byteLength(v) > MAX_ENV_VALUE_BYTES) bad('volant.env', `${k} is longer than ${MAX_ENV_VALUE_BYTES} bytes`);
    env[k] = v;
  }
  return env;
}

function decodeManifest(text: string): PluginManifest {
  const gz = decodeBase64url('volant.manifest', text);
  let json: unknown;
  try {
    json = JSON.parse(gunzipSync(gz, { maxOutputLength: MAX_MANIFEST_OVERRIDE_BYTES }).toString('utf8'));
  } catch (e) {
    const why = (e as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE' ? `decodes to more than ${MAX_MANIFEST_OVERRIDE_BYTES} bytes` : 'is not base64url(gzip(JSON))';
    bad('volant.manifest', why);
  }
  const v = validateManifest(json);
  if (!v.ok) throw new VolantError('VALIDATION_FAILED', `kernel command line volant.manifest: invalid manifest: ${v.problems.map((p) => `${p.path}: ${p.message}`).join('; ')}`, v.problems);
  return v.value;
}

function decodeDns(text: string): string[] {
  const out: string[] = [];
  for (const part of text.split(',')) {
    const n = tryParseIPv4(part);
    if (n === undefined) bad('volant.dns', `${JSON.stringify(part.slice(0, 40))} is not a dotted-quad IPv4 address`);
    out.push(formatIPv4(n));
  }
  if (out.length > MAX_DNS_SERVERS) bad('volant.dns', `lists ${out.length} servers; at most ${MAX_DNS_SERVERS}`);
  return out;
}

function decodeEgress(text: string): Endpoint {
  if (text === 'vsock') return { kind: 'vsock', cid: HOST_CID, port: EGRESS_VSOCK_PORT };
  if (!text.startsWith('tcp:')) bad('volant.egress', `${JSON.stringify(text.slice(0, 40))} is not vsock or tcp:HOST:PORT`);
  try {
    return parseEndpoint(text);
  } catch (e) {
    return bad('volant.egress', (e as Error).message);
  }
}

const MODES: readonly NetworkMode[] = ['bridged', 'dhcp', 'vsock'];

function modeOf(explicit: string | undefined, ip: IpParam | undefined): NetworkMode {
  const fromIp: NetworkMode | undefined = ip === undefined ? 'vsock' : ip.client !== undefined ? 'bridged' : ip.autoconf === 'off' ? undefined : 'dhcp';
  if (explicit === undefined) {
    if (fromIp === undefined) bad('ip=', 'autoconf off without a client address configures nothing');
    return fromIp;
  }
  if (!MODES.includes(explicit as NetworkMode)) bad('volant.mode', `${JSON.stringify(explicit.slice(0, 40))} is not one of ${MODES.join(', ')}`);
  const mode = explicit as NetworkMode;
  if (mode === 'bridged' && ip?.client === undefined) bad('volant.mode', 'bridged needs ip=<address>::<gateway>:<netmask>:<hostname>:eth0:off');
  if (mode === 'dhcp' && ip?.client !== undefined) bad('volant.mode', `dhcp contradicts the static ip=${ip.client}`);
  if (mode === 'vsock' && ip !== undefined) bad('volant.mode', 'vsock means no network interface, but ip= is present');
  return mode;
}

/** The whole command line text (as in /proc/cmdline) → BootConfig, or a VolantError. */
export function bootConfigFromCmdline(text: string): BootConfig {
  const cmd = parseCmdline(text);
  const ipText = cmd.get('ip');
  const ip = ipText === undefined ? undefined : parseIpParam(ipText);
  const mode = modeOf(cmd.get('volant.mode'), ip);
  const name = cmd.get('volant.name');
  const config: BootConfig = { mode, hostname: ip?.hostname ?? (name || DEFAULT_HOSTNAME), dns: [], env: {} };
  if (name) config.name = name;
  if (mode === 'bridged' && ip?.client !== undefined && ip.prefix !== undefined) {
    config.ip = { client: ip.client, prefix: ip.prefix };
    if (ip.gateway) config.ip.gateway = ip.gateway;
    if (ip.device) config.ip.device = ip.device;
  }
  const dnsText = cmd.get('volant.dns');
  const dns = [...(dnsText ? decodeDns(dnsText) : []), ...(ip?.dns ?? [])];
  config.dns = [...new Set(dns)].slice(0, MAX_DNS_SERVERS);
  const envText = cmd.get('volant.env');
  if (envText) config.env = decodeEnv(envText);
  const egressText = cmd.get('volant.egress');
  if (egressText !== undefined) config.egress = decodeEgress(egressText);
  const manifestText = cmd.get('volant.manifest');
  if (manifestText) config.manifestOverride = decodeManifest(manifestText);
  const selftest = cmd.get('volant.selftest');
  if (selftest !== undefined) {
    if (selftest !== 'vsock') bad('volant.selftest', `${JSON.stringify(selftest.slice(0, 40))} is not vsock`);
    config.selftest = 'vsock';
  }
  return config;
}

/**
 * Builds the one config volantd and volar use, in layers: defaults < YAML file < `VOLANT_*`
 * environment < flags (`overrides`). When `state_dir` is set by any layer and `runtime_dir` is
 * not, the runtime directory moves under the state directory too, so `--state-dir DIR` alone
 * keeps the database, sockets and logs out of system paths (rootless, dev and test runs); the log
 * directory (`log.dir`) follows the state directory the same way unless set.
 * Nothing is created on disk here; a bad value anywhere fails the whole load with every problem.
 */

import { existsSync, readFileSync } from 'node:fs';
import { isAbsolute, join, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { type Problem, ValidationError, VolantError } from '../../shared/errors.js';
import { isPlainObject, structuralProblems } from '../../shared/schema/validate.js';
import { resolveEnvAliases, resolveFileAliases } from './aliases.js';
import { configFromEnv } from './env.js';
import { API_SOCKET_NAME, DEFAULT_CONFIG_FILE, LOG_DIR_NAME, defaultConfig, defaultDhcpRange, defaultPool, semanticProblems, VolantConfig } from './schema.js';

/** A config file bigger than this is not a config file. */
export const MAX_CONFIG_FILE_BYTES = 1024 * 1024;

export type ConfigOverrides = {
  [K in keyof VolantConfig]?: VolantConfig[K] extends object ? Partial<VolantConfig[K]> : VolantConfig[K];
};

export interface LoadConfigOptions {
  /** A YAML file; when undefined, `VOLANT_CONFIG` or /etc/volant/volantd.yaml if that exists; null reads no file. */
  file?: string | null;
  /** The environment to read `VOLANT_*` from (default: none, so tests stay hermetic). */
  env?: Record<string, string | undefined>;
  /** Flags; they win over everything else. */
  overrides?: ConfigOverrides;
}

function readYaml(file: string, required: boolean): Record<string, unknown> {
  if (!existsSync(file)) {
    if (required) throw new VolantError('NOT_FOUND', `config file ${file} does not exist`);
    return {};
  }
  const text = readFileSync(file);
  if (text.length > MAX_CONFIG_FILE_BYTES) throw new ValidationError(`config file ${file}`, [{ path: '/', message: `file is ${text.length} bytes; at most ${MAX_CONFIG_FILE_BYTES} allowed` }]);
  let doc: unknown;
  try {
    doc = parseYaml(text.toString('utf8'), { maxAliasCount: 100 });
  } catch (e) {
    throw new ValidationError(`config file ${file}`, [{ path: '/', message: `not valid YAML: ${(e as Error).message}` }]);
  }
  if (doc === null || doc === undefined) return {};
  if (!isPlainObject(doc)) throw new ValidationError(`config file ${file}`, [{ path: '/', message: 'the file must hold a YAML mapping of keys (state_dir, network, ...)' }]);
  const { layer, problems } = resolveFileAliases(doc);
  if (problems.length > 0) throw new ValidationError(`config file ${file}`, problems);
  return layer;
}

/** The `VOLANT_*` layer: canonical variables and the original volantd's names (aliases.ts). */
function readEnv(env: Record<string, string | undefined>): Record<string, unknown> {
  const aliases = resolveEnvAliases(env);
  if (aliases.problems.length > 0) throw new ValidationError('environment', aliases.problems);
  return merge(configFromEnv(env), aliases.layer);
}

/** Section by section merge: a layer replaces the keys it sets and keeps the rest. */
function merge(base: Record<string, unknown>, layer: Record<string, unknown> | undefined): Record<string, unknown> {
  if (!layer) return base;
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(layer)) {
    if (v === undefined) continue;
    out[k] = isPlainObject(v) && isPlainObject(out[k]) && k !== 'reservations' ? merge(out[k] as Record<string, unknown>, v) : v;
  }
  return out;
}

function valueAt(root: unknown, path: string): unknown {
  let cur: unknown = root;
  for (const part of path.split('/').filter(Boolean)) {
    if (!isPlainObject(cur) && !Array.isArray(cur)) return undefined;
    cur = (cur as Record<string, unknown>)[part];
  }
  return cur;
}

function sets(layer: Record<string, unknown> | undefined, key: string): boolean {
  return layer !== undefined && layer[key] !== undefined;
}

export function loadConfig(options: LoadConfigOptions = {}): VolantConfig {
  const env = options.env ?? {};
  const fileName = options.file === undefined ? env.VOLANT_CONFIG : options.file;
  const fileLayer = fileName === null ? {} : readYaml(fileName ?? DEFAULT_CONFIG_FILE, fileName !== undefined);
  const envLayer = readEnv(env);
  const flagLayer = options.overrides as Record<string, unknown> | undefined;

  let merged = merge(merge(merge(defaultConfig() as unknown as Record<string, unknown>, fileLayer), envLayer), flagLayer);
  const layers = [fileLayer, envLayer, flagLayer];
  const network = merged.network as Record<string, unknown> | undefined;
  if (isPlainObject(network) && typeof network.host_cidr === 'string') {
    const pool = defaultPool(network.host_cidr);
    if (pool) merged = { ...merged, network: { ...pool, ...network } };
  }
  if (layers.some((l) => sets(l, 'state_dir')) && !layers.some((l) => sets(l, 'runtime_dir')) && typeof merged.state_dir === 'string') {
    merged.runtime_dir = join(merged.state_dir, 'run');
  }
  for (const key of ['state_dir', 'runtime_dir'] as const) {
    const v = merged[key];
    if (typeof v === 'string' && v !== '' && !isAbsolute(v)) merged[key] = resolve(v);
  }
  // The API socket follows the runtime directory and the log directory the state directory unless set; the DHCP range fits below the pool unless set.
  const api = merged.api as Record<string, unknown> | undefined;
  if (isPlainObject(api) && api.socket === undefined && typeof merged.runtime_dir === 'string') merged.api = { ...api, socket: join(merged.runtime_dir, API_SOCKET_NAME) };
  const log = merged.log as Record<string, unknown> | undefined;
  if (isPlainObject(log) && typeof merged.state_dir === 'string') {
    const logDir = log.dir ?? join(merged.state_dir, LOG_DIR_NAME);
    merged.log = { ...log, dir: typeof logDir === 'string' && logDir !== '' && !isAbsolute(logDir) ? resolve(logDir) : logDir };
  }
  const dhcp = merged.dhcp as Record<string, unknown> | undefined;
  const pooled = merged.network as Record<string, unknown> | undefined;
  if (isPlainObject(dhcp) && dhcp.range_start === undefined && dhcp.range_end === undefined && isPlainObject(pooled) && typeof pooled.host_cidr === 'string' && typeof pooled.pool_start === 'string') {
    const range = defaultDhcpRange(pooled.host_cidr, pooled.pool_start);
    if (range) merged.dhcp = { ...dhcp, ...range };
  }

  const structural = structuralProblems(VolantConfig, merged);
  const net = merged.network as Record<string, unknown> | undefined;
  if (isPlainObject(net) && typeof net.host_cidr === 'string' && (net.pool_start === undefined || net.pool_end === undefined)) {
    structural.unshift({ path: '/network/host_cidr', message: `${JSON.stringify(net.host_cidr)} is not allowed: use the host's address and prefix 8-30, like 192.168.127.1/24` });
  }
  const seen = new Set<string>();
  const problems: Problem[] = [];
  for (const p of structural) {
    if (seen.has(p.path)) continue;
    seen.add(p.path);
    const v = valueAt(merged, p.path);
    const shown = JSON.stringify(v)?.slice(0, 80);
    problems.push(v === undefined || isPlainObject(v) || p.message.includes(shown) ? p : { path: p.path, message: `${p.message} (got ${shown})` });
  }
  // A pool that is missing only because host_cidr is unusable is not a second problem to report.
  const cidrBroken = problems.some((p) => p.path === '/network/host_cidr');
  const reported = cidrBroken ? problems.filter((p) => !/^\/network\/pool_(start|end)$/.test(p.path) || valueAt(merged, p.path) !== undefined) : problems;
  if (reported.length > 0) throw new ValidationError('config', reported);
  const cfg = merged as VolantConfig;
  const semantic = semanticProblems(cfg);
  if (semantic.length > 0) throw new ValidationError('config', semantic);
  return cfg;
}

/** Where volantd keeps what it writes; all under `state_dir` and `runtime_dir`. */
export interface StatePaths {
  database: string;
  /** Where `volar kernel fetch` keeps kernels and `current.json`. */
  kernels: string;
  images: string;
  /** Shared runtime images, `<hash>.erofs` (docs/runtime-image.md). */
  runtimes: string;
  /** Per-VM run directories (VMM API and vsock sockets). */
  vms: string;
  /** The daemon's own sockets. */
  runtime: string;
  /** Volant's DHCP server: its config (written by `volar setup --dhcp`), lease file and pid file. */
  dhcpConfig: string;
  dhcpLeases: string;
  dhcpPid: string;
}

/** `<state_dir>/kernels`: where `volar kernel fetch` puts kernels and volantd looks for one. */
export function kernelsDir(stateDir: string): string {
  return join(stateDir, 'kernels');
}

export function statePaths(cfg: Pick<VolantConfig, 'state_dir' | 'runtime_dir'>): StatePaths {
  return {
    database: join(cfg.state_dir, 'volant.db'),
    kernels: kernelsDir(cfg.state_dir),
    images: join(cfg.state_dir, 'plugins'),
    runtimes: join(cfg.state_dir, 'runtimes'),
    vms: join(cfg.runtime_dir, 'vms'),
    runtime: cfg.runtime_dir,
    dhcpConfig: join(cfg.state_dir, 'dhcp', 'dnsmasq.conf'),
    dhcpLeases: join(cfg.state_dir, 'dhcp', 'dnsmasq.leases'),
    dhcpPid: join(cfg.runtime_dir, 'dnsmasq.pid'),
  };
}

/**
 * volantd assembled: config → store → plugin images → launcher → orchestrator (reconcile) →
 * ingress → API server. `runDaemon` is what `main.ts` calls and what tests call with a launcher
 * double. Shutdown (SIGTERM/SIGINT) stops accepting connections, closes the API, ingress and
 * egress listeners and the store, and leaves VMMs running: their rows stay `running` and the next
 * volantd re-adopts them in `reconcile()` (a daemon upgrade does not reboot workloads). To stop
 * VMs, stop them through the API first.
 *
 * At every start, before reconciling, volantd restores this host's bridge, its address and NAT
 * (a reboot removes what `volar setup` made; see network.ts) and settles the guests' DNS
 * resolvers: `network.dns` when configured, else the host's own (host/network/resolvers.ts).
 *
 * Auth (host/api/auth.ts): volantd listens on `listen` and on its Unix socket `api.socket`
 * (default `<runtime_dir>/volantd.sock`; mode 0660, group `volant` when that group exists). The
 * socket needs no token; every TCP listener needs the bearer token on every route but health,
 * loopback included, unless `api.unsafe_loopback_without_token` waives it for loopback. The
 * token is `VOLANT_API_TOKEN` from volantd's environment, else `<state_dir>/api-token`, made
 * (0600) on first start; `volar --state-dir D` reads it from there when it talks TCP.
 *
 * DHCP (host/dhcp): with Volant's own DHCP server (`volar setup --dhcp`, or `dhcp.server:
 * volant`) volantd watches its lease file, so dhcp VMs are bound to their leases.
 *
 * Logs (docs/logging.md): one pino logger, made here from `log.level` (or given by the caller),
 * writes JSON lines to stderr; every module gets a child naming it. The egress proxies' decisions
 * go to their own size-capped file under `log.dir` (host/log/audit-file.ts), never to that log.
 * Metrics (docs/metrics.md): one prom-client registry, every family registered here; per-VM
 * series are removed when their VM is deleted.
 */

import { chmodSync, chownSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { VolantError } from '../../shared/errors.js';
import { tryParseCidr } from '../../shared/ipv4.js';
import { ensureTokenFile, groupIdIn, SOCKET_GROUP, tokenRequired } from '../api/auth.js';
import { parseListenAddress } from '../api/listen.js';
import { type ApiServer, createApiServer } from '../api/server.js';
import { loadConfig, statePaths } from '../config/load.js';
import type { VolantConfig } from '../config/schema.js';
import { watchLeaseFile } from '../dhcp/leases.js';
import { volantDhcpConfigured } from '../dhcp/server.js';
import type { AfVsockConnect } from '../ingress/dialer.js';
import { createIngress, type Ingress } from '../ingress/index.js';
import { ipamReport } from '../ipam/report.js';
import { EgressMetrics } from '../egress/metrics.js';
import { AuditFile } from '../log/audit-file.js';
import { createLogger, type DestinationStream, type Logger } from '../log/logger.js';
import { registerIngressMetrics } from '../metrics/ingress.js';
import { createMetricsRegistry, type PerVmSeries } from '../metrics/registry.js';
import { registerVmMetrics } from '../metrics/vms.js';
import { VsockDeviceMetrics } from '../metrics/vsock-device.js';
import { vsockBackendMetricsPath } from '../vmm/vsock-backend.js';
import { Orchestrator } from '../orchestrator/orchestrator.js';
import { PluginImages } from '../orchestrator/plugin-images.js';
import type { DhcpLeaseSource, EgressStarter, TapNetwork } from '../orchestrator/ports.js';
import { packageVersion } from '../package-info.js';
import { openStore, type Store } from '../store/store.js';
import { addressPool } from '../ipam/pool.js';
import type { Launcher } from '../vmm/launcher.js';
import { createEgressStarter } from './egress.js';
import { restoreHostNetwork, tapNetwork } from './network.js';
import { createNetworkManager } from '../network/index.js';
import { hostResolvers } from '../network/resolvers.js';
import { cachedKernel } from '../../initramfs/kernel.js';

export interface DaemonOptions {
  configFile?: string | null;
  stateDir?: string;
  listen?: string;
  env?: Record<string, string | undefined>;
  /** Which VMM launcher to use (tests: a double); a function gets the config and the launcher's logger. */
  launcher: Launcher | ((cfg: VolantConfig, log: Logger) => Promise<Launcher> | Launcher);
  /** Host networking for bridged/dhcp VMs (default: this host's, on the configured bridge); null: none, those VMs are refused. */
  network?: TapNetwork | null;
  /** Overrides the egress proxy wiring (null: no egress). */
  egress?: EgressStarter | null;
  /** Overrides Volant's DHCP lease source (default: its lease file when Volant runs the DHCP server; null: none). */
  dhcpLeases?: DhcpLeaseSource | null;
  /** AF_VSOCK connect for VMs whose VMM uses the host kernel's vhost-vsock (default: the native addon's); tests pass a stand-in. */
  afVsockConnect?: AfVsockConnect;
  /** Overrides the configured kernel path. */
  kernelPath?: string;
  healthTimeoutMs?: number;
  /** volantd's logger, level and all (tests: a silent or capturing one); default: one made from `log.level`. */
  logger?: Logger;
  /** Where the logger volantd makes writes (default: stderr). */
  logDestination?: DestinationStream;
}

export interface Daemon {
  config: VolantConfig;
  /** The primary listener (`listen`). */
  address: string;
  /** The Unix socket that needs no token, unless `api.socket` is '' (or it is the primary listener). */
  socket: string | undefined;
  /** The token TCP listeners require, if any. */
  token: string | undefined;
  orchestrator: Orchestrator;
  store: Store;
  /** volantd's logger (the root: children name their module). */
  log: Logger;
  close(): Promise<void>;
}

/** Guests' resolvers when the config names none: the host's (host/network/resolvers.ts). */
function guestDns(log: Logger): string[] {
  const r = hostResolvers();
  log.info({ servers: r.servers, source: r.source }, `guest DNS: ${r.servers.join(', ')} (${r.source})`);
  return r.servers;
}

export async function runDaemon(opts: DaemonOptions): Promise<Daemon> {
  const config = loadConfig({
    file: opts.configFile,
    env: opts.env ?? process.env,
    overrides: { ...(opts.stateDir ? { state_dir: opts.stateDir } : {}), ...(opts.listen ? { listen: opts.listen } : {}) },
  });
  const root = opts.logger ?? createLogger({ name: 'volantd', level: config.log.level }, opts.logDestination);
  const log = root.child({ module: 'daemon' });
  const paths = statePaths(config);
  const listen = parseListenAddress(config.listen);
  const hostCidr = tryParseCidr(config.network.host_cidr)!;
  // The kernel `volar kernel fetch` recorded in <state_dir>/kernels/current.json (docs/CONTRACTS.md) unless one is named.
  const kernelPath = opts.kernelPath ?? config.kernel.path ?? (await cachedKernel(paths.kernels))?.vmlinuz;
  if (!kernelPath || !existsSync(kernelPath)) {
    throw new VolantError('INVALID_ARGUMENT', `no kernel at ${JSON.stringify(kernelPath ?? join(paths.kernels, 'current.json'))}: run \`volar kernel fetch\` or set kernel.path (--kernel)`);
  }
  // This host's networking (not a test's): bring back what a reboot removed before anything uses it.
  const hostNetwork = opts.network === undefined ? createNetworkManager() : undefined;
  if (hostNetwork) await restoreHostNetwork(hostNetwork, config.network, root.child({ module: 'network' }));
  const dns = config.network.dns ?? guestDns(log);

  const launcher = typeof opts.launcher === 'function' ? await opts.launcher(config, root.child({ module: 'vmm' })) : opts.launcher;
  const egressLog = root.child({ module: 'egress' });
  const store = openStore({ path: paths.database, pool: addressPool(config.network) });
  let audit: AuditFile | undefined;
  try {
    if (opts.egress === undefined) {
      const onError = (err: unknown): void => egressLog.error({ err }, 'egress audit records are being dropped: the audit file cannot be written');
      audit = new AuditFile({ dir: config.log.dir, maxBytes: config.log.audit_max_bytes, keep: config.log.audit_files, onError });
    }
  } catch (e) {
    store.close();
    throw e;
  }
  const auditFile = audit;
  // The shared runtime images: found in <state_dir>/runtimes or built there from this kernel's modules.
  const cachedKernelInfo = config.kernel.modules_dir ? undefined : await cachedKernel(paths.kernels);
  const modulesDir = config.kernel.modules_dir ?? cachedKernelInfo?.modulesDir;
  const plugins = new PluginImages(store.plugins, paths.images, {
    dir: paths.runtimes,
    device: config.vmm.runtime_device,
    ...(modulesDir ? { kernel: { version: cachedKernelInfo?.version ?? basename(modulesDir), modulesDir } } : {}),
    cacheDir: join(config.state_dir, 'cache'),
  });
  const metrics = createMetricsRegistry();
  const egressMetrics = new EgressMetrics(metrics);
  const defaultEgress = auditFile ? createEgressStarter(config, hostCidr, { bridge: config.network.bridge }, { log: egressLog, audit: (r) => auditFile.write(r), metrics: egressMetrics }) : undefined;
  const egress = opts.egress === null ? undefined : (opts.egress ?? defaultEgress?.start);
  const network = opts.network === null ? undefined : (opts.network ?? tapNetwork(hostNetwork!, config.network.bridge, hostCidr));
  const volantDhcp = config.dhcp.server === 'volant' || (config.dhcp.server === 'auto' && volantDhcpConfigured(config));
  const leaseFile = opts.dhcpLeases === undefined && volantDhcp && network ? watchLeaseFile(paths.dhcpLeases, { log: root.child({ module: 'dhcp' }) }) : undefined;
  const dhcpLeases = opts.dhcpLeases === null ? undefined : (opts.dhcpLeases ?? leaseFile);
  if (leaseFile) log.info({ lease_file: paths.dhcpLeases }, `dhcp VMs are bound to the leases of Volant's DHCP server (${paths.dhcpLeases})`);
  const orchestrator = new Orchestrator({
    store,
    plugins,
    launcher,
    network,
    egress,
    dhcpLeases,
    afVsockConnect: opts.afVsockConnect,
    kernelPath,
    runtimeDir: config.runtime_dir,
    stateDir: config.state_dir,
    hostCidr,
    dns,
    healthTimeoutMs: opts.healthTimeoutMs,
    log: root.child({ module: 'orchestrator' }),
  });
  let ingress: Ingress | undefined;
  let api: ApiServer | undefined;
  try {
    const r = await orchestrator.reconcile();
    log.info(r, `reconciled: adopted [${r.adopted.join(', ')}], failed [${r.failed.join(', ')}], removed [${r.removed.join(', ')}], taps removed [${r.tapsRemoved.join(', ')}]`);
    ingress = createIngress({
      timeoutMs: config.ingress.timeout_ms,
      log: root.child({ module: 'ingress' }),
      lookup: async (name) => {
        const vm = orchestrator.get(name);
        const transport = await orchestrator.reachAgent(name);
        if (!transport && vm.state === 'running') throw new VolantError('UPSTREAM_UNREACHABLE', `VM ${name} runs, but its ${vm.mode} address has not been seen on the bridge`);
        if (!transport) throw new VolantError('INVALID_STATE', `VM ${name} is ${vm.state}, not running`, { state: vm.state });
        return { vmName: name, transport };
      },
    });
    const ing = ingress;
    registerVmMetrics(metrics, { vms: () => orchestrator.list(), ipam: () => ipamReport(store, config) });
    registerIngressMetrics(metrics, () => ing.metrics);
    const vmNames = (): string[] => orchestrator.list().map((vm) => vm.name);
    const deviceMetrics = new VsockDeviceMetrics(metrics, { vms: vmNames, metricsFile: (vm) => vsockBackendMetricsPath({ runDir: orchestrator.vmRunDir(vm) }) });
    const perVm: PerVmSeries[] = [egressMetrics, deviceMetrics];
    orchestrator.events.subscribe((e) => {
      if (e.type === 'vm.deleted' || (e.type === 'vm.state' && e.state !== 'running')) ing.forget(e.vm);
      if (e.type === 'vm.deleted') for (const series of perVm) series.forgetVm(e.vm);
    });
    const env = opts.env ?? process.env;
    const enforce = tokenRequired(listen, { unsafeLoopbackWithoutToken: config.api.unsafe_loopback_without_token }) ? env.VOLANT_API_TOKEN || ensureTokenFile(config.state_dir) : undefined;
    api = await createApiServer({
      orchestrator,
      plugins,
      ipamReport: () => ipamReport(store, config),
      metrics,
      version: packageVersion(),
      startedAt: Date.now(),
      token: enforce,
      ingress,
      log: root.child({ module: 'api' }),
    });
    const address = await api.listen(listen);
    const tokenNote = enforce ? ' (bearer token required)' : listen.kind === 'tcp' ? ' WITHOUT a token (api.unsafe_loopback_without_token)' : '';
    log[enforce || listen.kind === 'unix' ? 'info' : 'warn']({ address, token: enforce !== undefined }, `listening on ${address}${tokenNote}`);
    const socketPath = config.api.socket === '' ? undefined : resolve(config.api.socket);
    let socket: string | undefined;
    if (socketPath !== undefined && !(listen.kind === 'unix' && resolve(listen.path) === socketPath)) {
      socket = await api.listenUnix(socketPath, { gid: prepareSocketDir(socketPath, config.runtime_dir) });
      log.info({ address: socket, token: false }, `listening on ${socket} (no token; mode 0660)`);
    }
    const apiServer = api;
    return {
      config,
      address,
      socket,
      token: enforce,
      orchestrator,
      store,
      log: root,
      async close() {
        await apiServer.close();
        await ing.close();
        await orchestrator.close();
        leaseFile?.close();
        audit?.close();
        store.close();
      },
    };
  } catch (e) {
    await api?.close().catch(() => undefined);
    await ingress?.close().catch(() => undefined);
    await orchestrator.close();
    leaseFile?.close();
    audit?.close();
    store.close();
    throw e;
  }
}

/**
 * Makes the socket's directory and returns the `volant` group's id when that group exists; then
 * the runtime directory (only that one, never a system directory a socket was put in) lets the
 * group traverse it (0750, group volant).
 */
function prepareSocketDir(socketPath: string, runtimeDir: string): number | undefined {
  const dir = dirname(socketPath);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  let gid: number | undefined;
  try {
    gid = groupIdIn(readFileSync('/etc/group', 'utf8'), SOCKET_GROUP);
  } catch {
    gid = undefined;
  }
  if (gid !== undefined && dir === resolve(runtimeDir)) {
    chownSync(dir, -1, gid);
    chmodSync(dir, 0o750);
  }
  return gid;
}

/**
 * kestrel, the Volant guest agent. This file is the boot sequence, top to bottom:
 *
 *   1 mounts   2 modules   3 command line + manifest   4 network
 *   5 workload   6 agent servers   7 egress forwarder   8 PID-1 duties
 *
 * As PID 1 in a VM it does all of it; run as an ordinary process (development, tests) it skips
 * the PID-1 steps (mounts, modules, network, reaping, power-off) and takes its settings from
 * flags:
 *
 *   node guest/main.ts --listen unix:/path|tcp:HOST:PORT|vsock:PORT [--listen ...]
 *        --manifest FILE [--cmdline TEXT] [--egress-listen tcp:127.0.0.1:3128]
 *        [--egress-upstream vsock:2:3128|tcp:HOST:PORT|unix:PATH] [--reap-orphans]
 *        [--relay-listen unix:PATH|tcp:HOST:PORT|vsock:PORT ...]
 *
 * It must stay bundleable by esbuild into one file: no dynamic imports of our own modules; the
 * native addon is reached only through native/index.ts.
 */

import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { nativeAvailable } from '../native/index.js';
import { workloadBaseUrl, workloadRelayTarget } from '../shared/schema/manifest.js';
import { type BootConfig, bootConfigFromCmdline, DEFAULT_HOSTNAME } from './boot/cmdline.js';
import { IMAGE_MANIFEST_PATH, loadManifestFile } from './boot/manifest.js';
import { loadImageModules } from './boot/modules.js';
import { watchPowerButton } from './boot/power-button.js';
import { mountEarlyFileSystems } from './boot/mounts.js';
import { say } from './console.js';
import { guestMemory } from './memory.js';
import { startupNote } from './startup.js';
import { createEgressForwarder, DEFAULT_EGRESS_LISTEN, type EgressForwarder } from './egress/forwarder.js';
import { LogRing } from './logs/ring.js';
import { applyNetworkPlan } from './network/apply.js';
import { type NetworkPlan, planNetwork } from './network/plan.js';
import { endKestrel, fatal, isPid1, onShutdownSignals, reapedCount, startReaper } from './pid1.js';
import { runVsockSelftest } from './selftest.js';
import { createAgentServer } from './server/agent.js';
import { agentEndpoints, type Endpoint, formatEndpoint, parseEndpoint, relayEndpoints, VSOCK_CID_ANY } from './server/endpoint.js';
import { createWorkloadProxy } from './server/proxy.js';
import { createWorkloadRelay, relayAdmits } from './server/relay.js';
import { type Listener, listen } from './server/transports.js';
import { workloadEnv, DEFAULT_PATH } from './workload/env.js';
import { Supervisor } from './workload/supervisor.js';
import { KESTREL_VERSION } from './version.js';

interface Flags {
  listen: Endpoint[];
  reapOrphans?: boolean;
  manifest?: string;
  cmdline?: string;
  egressListen?: Endpoint;
  egressUpstream?: Endpoint;
  /** Where the raw relay listens outside a VM (as PID 1: `relayEndpoints`). */
  relayListen: Endpoint[];
}

function readFlags(argv: string[]): Flags {
  const { values } = parseArgs({
    args: argv,
    options: {
      listen: { type: 'string', multiple: true },
      'relay-listen': { type: 'string', multiple: true },
      manifest: { type: 'string' },
      cmdline: { type: 'string' },
      'egress-listen': { type: 'string' },
      'egress-upstream': { type: 'string' },
      'reap-orphans': { type: 'boolean' },
    },
    strict: true,
    allowPositionals: false,
  });
  const flags: Flags = {
    listen: (values.listen ?? []).map((s) => parseEndpoint(s, VSOCK_CID_ANY)),
    relayListen: (values['relay-listen'] ?? []).map((s) => parseEndpoint(s, VSOCK_CID_ANY)),
  };
  if (values.manifest) flags.manifest = values.manifest;
  if (values.cmdline !== undefined) flags.cmdline = values.cmdline;
  if (values['egress-listen']) flags.egressListen = parseEndpoint(values['egress-listen']);
  if (values['egress-upstream']) flags.egressUpstream = parseEndpoint(values['egress-upstream']);
  if (values['reap-orphans']) flags.reapOrphans = true;
  return flags;
}

/** Outside a VM without --cmdline: no network of our own to set up. */
const DEV_BOOT_CONFIG: BootConfig = { mode: 'vsock', hostname: DEFAULT_HOSTNAME, dns: [], env: {} };

async function boot(): Promise<void> {
  const pid1 = isPid1();
  const startedAt = Date.now();
  const flags: Flags = pid1 ? { listen: [], relayListen: [] } : readFlags(process.argv.slice(2));
  say(`starting ${KESTREL_VERSION}${pid1 ? ' as PID 1' : ''} (${startupNote()})`);

  // 1, 2: file systems and kernel modules.
  if (pid1) {
    mountEarlyFileSystems();
    loadImageModules();
  }

  // 3: what this VM is: command line, then the manifest it runs.
  const cmdlineText = pid1 ? readFileSync('/proc/cmdline', 'utf8') : flags.cmdline;
  const config = cmdlineText === undefined ? DEV_BOOT_CONFIG : bootConfigFromCmdline(cmdlineText);
  const manifest = config.manifestOverride ?? loadManifestFile(flags.manifest ?? IMAGE_MANIFEST_PATH);
  say(`plugin ${manifest.name} ${manifest.version}, network ${config.mode}, hostname ${config.hostname}`);

  const wanted = pid1 ? agentEndpoints(config.mode, nativeAvailable()) : flags.listen;
  if (wanted.length === 0) throw new Error('nothing to listen on: give --listen unix:PATH, tcp:HOST:PORT or vsock:PORT');

  // 4: network.
  let eth0: () => NetworkPlan['eth0'] = () => null;
  if (pid1) eth0 = await applyNetworkPlan(planNetwork(config));

  // 7 (before the workload, so its proxy is there when it starts): egress forwarder.
  const egressUpstream = flags.egressUpstream ?? config.egress;
  let egressListener: Listener | undefined;
  let forwarder: EgressForwarder | undefined;
  let proxyUrl: string | undefined;
  if (egressUpstream) {
    forwarder = createEgressForwarder({ upstream: egressUpstream });
    const at = flags.egressListen ?? { kind: 'tcp', ...DEFAULT_EGRESS_LISTEN };
    egressListener = await listen(at, forwarder.handle);
    if (egressListener.address.startsWith('tcp:')) proxyUrl = `http://${egressListener.address.slice(4)}`;
    say(`egress forwarder on ${egressListener.address} → ${formatEndpoint(egressUpstream)}`);
  }

  // 5: workload.
  const logs = new LogRing();
  const baseUrl = workloadBaseUrl(manifest);
  const supervisor = new Supervisor(
    {
      entrypoint: manifest.workload.entrypoint,
      env: workloadEnv({ base: { PATH: process.env.PATH ?? DEFAULT_PATH, HOME: process.env.HOME ?? '/' }, manifest: manifest.workload.env, vm: config.env, proxyUrl }),
      workdir: manifest.workload.workdir,
      restart: manifest.workload.restart,
      health: baseUrl && manifest.health_check ? { baseUrl, path: manifest.health_check.endpoint, timeoutMs: manifest.health_check.timeout_ms } : undefined,
    },
    logs,
  );
  supervisor.on('finished', (status) => endKestrel(`workload finished`, status.code ?? 1));
  // However kestrel ends, the workload's process group does not outlive it.
  process.once('exit', () => supervisor.killNow());
  supervisor.start();

  // 6: agent servers.
  const listeners: Listener[] = [];
  const proxy = baseUrl ? createWorkloadProxy({ baseUrl, workload: () => supervisor.snapshot() }) : undefined;
  const health = () => {
    const workload = supervisor.snapshot();
    return {
      status: workload.state === 'running' ? 'ok' : 'degraded',
      version: KESTREL_VERSION,
      uptime_s: Math.floor((Date.now() - startedAt) / 1000),
      mode: config.mode,
      hostname: config.hostname,
      plugin: { name: manifest.name, version: manifest.version },
      network: { eth0: eth0() },
      workload,
      egress: { enabled: egressUpstream !== undefined, upstream: egressUpstream ? formatEndpoint(egressUpstream) : null },
      vsock: { listening: listeners.some((l) => l.endpoint.kind === 'vsock') },
      orphans_reaped: reapedCount(),
      memory: guestMemory(),
    };
  };
  const server = createAgentServer({ health, logs, proxy });
  // The raw relay for the host's ingress (docs/agent.md): only for a workload without a path prefix.
  const relayTarget = workloadRelayTarget(manifest);
  const hostAddress = config.ip?.gateway;
  const relay = relayTarget
    ? createWorkloadRelay({
        target: relayTarget,
        workload: () => supervisor.snapshot(),
        // As PID 1, on TCP only the host's bridge address may use it (vsock peers from outside are the host
        // alone); outside a VM the --relay-listen endpoints are the caller's choice.
        admit: pid1 ? (socket) => relayAdmits(socket.remoteAddress, hostAddress) : undefined,
      })
    : undefined;
  const relayWanted = relay ? (pid1 ? relayEndpoints(config.mode, nativeAvailable(), hostAddress) : flags.relayListen) : [];
  onShutdownSignals(async () => {
    await supervisor.stop();
    // Stop accepting, then cut what is still open (keep-alive clients, log followers, tunnels).
    const closing = [...listeners, ...(egressListener ? [egressListener] : [])].map((l) => l.close());
    server.closeAllConnections();
    relay?.closeAll();
    forwarder?.closeAll();
    await Promise.all(closing);
    await proxy?.close();
  });
  // The VMM's graceful shutdown arrives as an ACPI power-button press: treat it like SIGTERM.
  if (pid1 && watchPowerButton(() => process.kill(process.pid, 'SIGTERM')) === 0) say('no ACPI power button: graceful shutdown only by signal');
  for (const endpoint of wanted) {
    try {
      const l = await listen(endpoint, (socket) => server.emit('connection', socket));
      listeners.push(l);
      say(`agent listening on ${l.address}`);
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      if (!pid1) throw e;
      say(`agent cannot listen on ${formatEndpoint(endpoint)}: ${err.code ?? ''} ${err.message}`);
    }
  }
  if (listeners.length === 0) throw new Error('the agent could not listen anywhere');
  for (const endpoint of relayWanted) {
    try {
      const l = await listen(endpoint, (socket) => relay!.handle(socket));
      listeners.push(l);
      say(`relay listening on ${l.address} → ${relayTarget!.host}:${relayTarget!.port}`);
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      if (!pid1) throw e;
      // The host then finds no relay and its request fails: say so on the console.
      say(`relay cannot listen on ${formatEndpoint(endpoint)}: ${err.code ?? ''} ${err.message}`);
    }
  }
  say(`ready (${startupNote()})`);

  if (config.selftest === 'vsock') void runVsockSelftest();

  // 8: PID-1 duties and a clean stop.
  if (pid1 || flags.reapOrphans) startReaper();
}

// The kernel starts init with almost no environment; busybox applets (mount, udhcpc, sync) need PATH.
if (isPid1() && !process.env.PATH) process.env.PATH = DEFAULT_PATH;
// PID 1 must never just die (the kernel would panic): anything unexpected ends in one console line.
process.on('uncaughtException', (e) => fatal(`uncaught: ${e.stack ?? e.message}`));
boot().catch((e: unknown) => fatal(e instanceof Error ? e.message : String(e)));

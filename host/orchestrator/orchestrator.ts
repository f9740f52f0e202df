/**
 * The VM life cycle (see state.ts for the states and what each holds). What must hold:
 *
 *  - One operation per VM at a time (`KeyedMutex` by name); VMs proceed in parallel.
 *  - Bring-up is a list of steps, each pushing its undo; any failure runs the undos in reverse
 *    (VMM process, firewall lockdown, egress listener, tap, run directory) and records why, with
 *    one rule: everything the failed operation acquired is released. A failed *create* acquired
 *    the row with its lease and CID, so the row is deleted (the error goes back to the caller,
 *    onto the event bus as `vm.state failed` + `vm.deleted`, and into the log). A failed *start*
 *    of an existing VM leaves the row in `failed` with `error` naming the step and the cause; the
 *    row keeps its lease and CID (they belong to the row until `delete`).
 *  - A VMM that exits on its own (crash, guest power-off) is noticed through `VmProcess.exited`:
 *    clean exit of a running VM → stopped, anything else → failed; tap and egress are released.
 *  - `reconcile()` at start-up re-adopts VMMs that still run for `running` rows; a row caught in
 *    `creating` is a create that never answered, so it is rolled back like a failed create (row,
 *    lease and CID gone); `starting`/`stopping` rows and running rows whose VMM is gone become
 *    `failed`; their VMMs are stopped; Volant taps no live VM owns are deleted.
 *  - What the network mode implies (tap, lease, `ip=`, how kestrel is reached, the egress
 *    route and its peers, the lockdown) is the network policy's answer (shared/network-policy.ts),
 *    asked with the launcher's vsock capability before anything is made; nothing here looks at
 *    the mode itself. A policy the host cannot serve is refused before the row exists.
 *  - A dhcp VM holds no IPAM lease. With Volant's DHCP server its address is the lease for its
 *    MAC (`DhcpLeaseSource`): its tap passes only DHCP until that lease is known, then is bound
 *    to it, and every lease change re-binds tap and egress listener. With another DHCP server
 *    the address is the one the guest announced on the bridge (neighbour table, by MAC). Either
 *    way it is kept in memory only (learnt again when a restarted volantd re-adopts the VM).
 *  - Every promise a bring-up makes has an owner from the moment it exists, so a create that
 *    fails at any step (or a VMM that exits at any moment) never becomes an unhandled rejection.
 */

import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { isVolantError, ValidationError, VolantError } from '../../shared/errors.js';
import { type Cidr, formatIPv4 } from '../../shared/ipv4.js';
import { type NetworkPolicy, networkPolicy, type VsockCapability } from '../../shared/network-policy.js';
import { workloadRelayTarget } from '../../shared/schema/manifest.js';
import { type CreateVmRequest, validateCreateVmRequest } from '../../shared/schema/vm-config.js';
import { AGENT_TCP_PORT } from '../../shared/vsock.js';
import { AgentClient } from '../agent/client.js';
import { type AfVsockConnect, type AgentTransport, transportKey } from '../ingress/dialer.js';
import { type Logger, silentLogger } from '../log/logger.js';
import type { Store } from '../store/store.js';
import type { VmRecord } from '../store/vms.js';
import { buildKernelCmdline, type CmdlineEgress, type CmdlineNetwork } from '../vmm/cmdline.js';
import type { LaunchSpec, Launcher, VmProcess } from '../vmm/launcher.js';
import { EventBus } from './events.js';
import { KeyedMutex } from './keyed-mutex.js';
import type { InstalledPlugin, PluginImages } from './plugin-images.js';
import type { DhcpLeaseSource, EgressHandle, EgressStarter, TapNetwork, VmLockdown } from './ports.js';
import { assertTransition, hasProcess, isAtRest, stateAfterExit, type VmState } from './state.js';

/** From VMM launch to kestrel's first 200 on /healthz. TCG boots are slow; KVM needs a fraction. */
export const BOOT_HEALTH_TIMEOUT_MS = 120_000;
/** Graceful shutdown before the launcher escalates to SIGTERM/SIGKILL. */
export const VMM_STOP_TIMEOUT_MS = 10_000;
export const DEFAULT_CPUS = 1;
/**
 * Guest memory when neither the request nor the manifest says: the least with which
 * examples/hello boots and serves reliably on the shared runtime (virtio-pmem) under QEMU/TCG,
 * found by booting it (docs/runtime-image.md "Memory"): at 104 MiB it boots and answers, at 128
 * a 3 MB streamed response gets the workload OOM-killed, at 160 it serves everything the e2e
 * suite asks. An image that needs more (plugin.json `image.min_memory_mb`, e.g. a `single`
 * layout) gets what it needs.
 */
export const DEFAULT_MEMORY_MB = 160;

/**
 * The VM's memory: asked for, else the manifest's, else the default raised to the image's need.
 * Less than the image needs is MEMORY_TOO_SMALL: the guest kernel would die unpacking or
 * running it (out of memory, "System is deadlocked on memory"), so nothing is created.
 */
export function memoryFor(req: Pick<CreateVmRequest, 'memory_mb'>, plugin: Pick<InstalledPlugin, 'name' | 'manifest'>): number {
  const need = plugin.manifest.image?.min_memory_mb;
  const asked = req.memory_mb ?? plugin.manifest.resources?.memory_mb;
  if (asked === undefined) return Math.max(DEFAULT_MEMORY_MB, need ?? 0);
  if (need !== undefined && asked < need) {
    const from = req.memory_mb !== undefined ? 'memory_mb' : `plugin ${plugin.name}'s resources.memory_mb`;
    throw new VolantError(
      'MEMORY_TOO_SMALL',
      `${from} ${asked} is below the ${need} MiB plugin ${plugin.name}'s ${plugin.manifest.image?.layout} image needs to boot (kernel, initramfs and runtime, kestrel and the workload; plugin.json image.min_memory_mb): ask for at least ${need}`,
      { memory_mb: asked, min_memory_mb: need },
    );
  }
  return asked;
}
/** In a VM's run directory: the port of its TCP egress listener (its kernel command line names it). */
export const EGRESS_PORT_FILE = 'egress-port';
/** Pause between neighbour-table lookups while a dhcp guest boots and leases. */
export const ADDRESS_POLL_INTERVAL_MS = 500;

export interface OrchestratorOptions {
  store: Pick<Store, 'vms'>;
  plugins: PluginImages;
  launcher: Launcher;
  /** Absent: taps cannot be made here, so bridged/dhcp VMs are refused (NOT_SUPPORTED). */
  network?: TapNetwork;
  /** Absent: VMs that allow outbound traffic are refused (NOT_SUPPORTED). */
  egress?: EgressStarter;
  /** Volant's own DHCP server's leases. Absent: dhcp VMs get addresses from a server Volant does not run. */
  dhcpLeases?: DhcpLeaseSource;
  /** AF_VSOCK connect for `af-vsock` agents (default: the native addon's); tests pass a stand-in. */
  afVsockConnect?: AfVsockConnect;
  kernelPath: string;
  /** Per-VM sockets: `<runtimeDir>/vms/<name>/`. */
  runtimeDir: string;
  /** Per-VM serial logs: `<stateDir>/vms/<name>/serial.log`. */
  stateDir: string;
  /** The host side of the bridge (gateway and prefix for `ip=`). */
  hostCidr: Cidr;
  dns?: string[];
  healthTimeoutMs?: number;
  stopTimeoutMs?: number;
  events?: EventBus;
  commandPrefix?: string[];
  /** The orchestrator's logger (lines about one VM carry `vm`); default: none. */
  log?: Logger;
}

/** The network side of a VM being brought up or running: its policy and what volantd knows of it now. */
interface VmNet {
  name: string;
  mac: string;
  tap: string | null;
  policy: NetworkPolicy;
  /** The guest's address when it is not its IPAM lease: Volant's DHCP lease, or its neighbour entry. */
  address?: string;
  /** The TCP egress listener's port (the confined VM may reach only that on the host). */
  egressPort?: number;
  /** The tap's rules exist and follow `address` (lease changes re-bind them). */
  locked: boolean;
  /** False once the VM is torn down: a late lease event must not touch its tap again. */
  bound: boolean;
}

interface LiveVm {
  proc: VmProcess;
  egress?: EgressHandle;
  net: VmNet;
  /** The one HTTP client for its kestrel (host/agent/client.ts), over the transport as known now; made on first use after a re-adoption. */
  agent?: AgentClient;
}

interface Undo {
  what: string;
  run: () => Promise<unknown> | unknown;
}

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** The create request a row was made from (stored as the row's config). */
export function requestOf(vm: VmRecord): CreateVmRequest {
  return vm.config as CreateVmRequest;
}

export class Orchestrator {
  readonly events: EventBus;
  private readonly mutex = new KeyedMutex();
  /** Serialises the firewall changes of one VM (its bring-up, lease re-binding, teardown). */
  private readonly netMutex = new KeyedMutex();
  private readonly live = new Map<string, LiveVm>();
  /** VMs being brought up or running, by name: what a lease change must re-bind. */
  private readonly nets = new Map<string, VmNet>();
  private readonly healthTimeoutMs: number;
  private readonly stopTimeoutMs: number;
  private readonly unsubscribeLeases?: () => void;
  private readonly log: Logger;
  private closed = false;

  constructor(private readonly opts: OrchestratorOptions) {
    this.events = opts.events ?? new EventBus();
    this.log = opts.log ?? silentLogger();
    this.healthTimeoutMs = opts.healthTimeoutMs ?? BOOT_HEALTH_TIMEOUT_MS;
    this.stopTimeoutMs = opts.stopTimeoutMs ?? VMM_STOP_TIMEOUT_MS;
    this.unsubscribeLeases = opts.dhcpLeases?.subscribe((macs) => this.onLeasesChanged(macs));
  }

  private get vms() {
    return this.opts.store.vms;
  }

  list(): VmRecord[] {
    return this.vms.list();
  }

  get(name: string): VmRecord {
    const vm = this.vms.get(name);
    if (!vm) throw new VolantError('NOT_FOUND', `no VM named ${JSON.stringify(name.slice(0, 80))}`);
    return vm;
  }

  vmRunDir(name: string): string {
    return join(this.opts.runtimeDir, 'vms', name);
  }

  vmStateDir(name: string): string {
    return join(this.opts.stateDir, 'vms', name);
  }

  serialLogPath(name: string): string {
    return join(this.vmStateDir(name), 'serial.log');
  }

  vsockSocketPath(name: string): string {
    return join(this.vmRunDir(name), 'vsock.sock');
  }

  /** The VMM process of a running VM, if this volantd supervises one. */
  processOf(name: string): VmProcess | undefined {
    return this.live.get(name)?.proc;
  }

  /** How to reach the VM's kestrel now, or undefined when it does not run (or its address is not known). */
  agentFor(name: string): AgentTransport | undefined {
    const vm = this.get(name);
    const live = this.live.get(name);
    if (!live || vm.state !== 'running') return undefined;
    return this.transportFor(vm, live.net);
  }

  /**
   * The HTTP client for a running VM's kestrel (health, logs, its API), or undefined when it does
   * not run. A transport that changed since (a dhcp VM's new lease) gets a fresh client; the old
   * one is closed.
   */
  agentClient(name: string): AgentClient | undefined {
    const transport = this.agentFor(name);
    const live = this.live.get(name);
    if (transport === undefined || live === undefined) return undefined;
    if (live.agent?.key !== transportKey(transport)) {
      void live.agent?.close();
      live.agent = this.newAgentClient(transport);
    }
    return live.agent;
  }

  private newAgentClient(transport: AgentTransport): AgentClient {
    return new AgentClient(transport, { afVsock: this.opts.afVsockConnect });
  }

  /**
   * `agentFor`, except that a running VM reached at its neighbour entry whose address this
   * volantd has not seen (re-adopted after the entry was gone) is looked up on the bridge first.
   */
  async reachAgent(name: string): Promise<AgentTransport | undefined> {
    const vm = this.get(name);
    const live = this.live.get(name);
    const agent = live?.net.policy.agent;
    if (live && vm.state === 'running' && agent?.via === 'tcp' && agent.address === 'neighbour' && live.net.address === undefined) {
      live.net.address = await this.lookUpGuestAddress(vm);
    }
    return this.agentFor(name);
  }

  /** The address a running dhcp VM got from its DHCP server, when this volantd knows it. */
  discoveredAddress(name: string): string | undefined {
    return this.live.get(name)?.net.address;
  }

  /** Validates, records, brings up; resolves when kestrel answers, rejects after rolling back. */
  async create(input: unknown): Promise<VmRecord> {
    const checked = validateCreateVmRequest(input);
    if (!checked.ok) throw new ValidationError('VM create request', checked.problems);
    const req = checked.value;
    const plugin = this.pluginOf(req.plugin);
    const policy = this.policyFor(plugin, req, this.opts.launcher.vsockCapability());
    memoryFor(req, plugin);
    const runtime = await this.opts.plugins.runtimeFor(plugin);
    return this.mutex.run(req.name, async () => {
      const vm = this.vms.createWithLease({ name: req.name, plugin: plugin.name, config: req }, { mode: policy.mode, requestedIp: req.ip });
      this.publishState(vm);
      return this.bringUp(vm, plugin, policy, 'create', runtime);
    });
  }

  async start(name: string): Promise<VmRecord> {
    return this.mutex.run(name, async () => {
      const vm = this.get(name);
      if (vm.state === 'running') return vm;
      if (!isAtRest(vm.state)) throw new VolantError('INVALID_STATE', `VM ${name} is ${vm.state}; start needs it stopped or failed`, { state: vm.state });
      const plugin = this.pluginOf(vm.plugin);
      const policy = this.policyFor(plugin, requestOf(vm), this.opts.launcher.vsockCapability());
      memoryFor(requestOf(vm), plugin);
      return this.bringUp(vm, plugin, policy, 'start', await this.opts.plugins.runtimeFor(plugin));
    });
  }

  async stop(name: string): Promise<VmRecord> {
    return this.mutex.run(name, async () => {
      const vm = this.get(name);
      if (isAtRest(vm.state)) return vm;
      assertTransition(name, vm.state, 'stopping');
      this.publishState(this.vms.update(name, { state: 'stopping' }));
      await this.teardown(vm, { killProcess: true });
      const stopped = this.vms.update(name, { state: 'stopped', pid: null, error: null });
      this.publishState(stopped);
      return stopped;
    });
  }

  /** Without `force` only a VM at rest may be deleted. Releases process, tap, lease, CID and files. */
  async delete(name: string, options: { force?: boolean } = {}): Promise<void> {
    await this.mutex.run(name, async () => {
      const vm = this.get(name);
      if (!isAtRest(vm.state) && !options.force) {
        throw new VolantError('INVALID_STATE', `VM ${name} is ${vm.state}; stop it first or delete with force`, { state: vm.state });
      }
      await this.teardown(vm, { killProcess: true });
      this.vms.deleteWithRelease(name);
      await rm(this.vmStateDir(name), { recursive: true, force: true });
      this.events.publish({ type: 'vm.deleted', vm: name });
    });
  }

  /** Start-up reconciliation (see the module comment). */
  async reconcile(): Promise<{ adopted: string[]; failed: string[]; removed: string[]; tapsRemoved: string[] }> {
    const adopted: string[] = [];
    /** Rows whose VMM was stopped or gone (now failed, or stopped when a stop was under way). */
    const failed: string[] = [];
    const removed: string[] = [];
    for (const vm of this.vms.list()) {
      if (!hasProcess(vm.state) && vm.state !== 'creating') continue;
      await this.mutex.run(vm.name, async () => {
        const plugin = this.opts.plugins.get(vm.plugin);
        let proc: VmProcess | undefined;
        if (vm.pid !== null && plugin) {
          proc = await this.opts.launcher.adopt(vm.pid, this.launchSpec(vm, plugin, undefined)).catch((e: unknown) => {
            this.vmLog(vm.name).warn({ err: e, pid: vm.pid }, `reconcile: adopting pid ${vm.pid}: ${message(e)}`);
            return undefined;
          });
        }
        if (proc && plugin && vm.state === 'running') {
          try {
            await this.readopt(vm, plugin, proc);
            adopted.push(vm.name);
            return;
          } catch (e) {
            this.vmLog(vm.name).warn({ err: e }, `reconcile: re-adopting its network failed: ${message(e)}`);
          }
        }
        if (proc) await proc.stop({ timeoutMs: this.stopTimeoutMs }).catch(() => undefined);
        await this.teardown(vm, { killProcess: false });
        const why = `volantd restarted while the VM was ${vm.state}; ${proc ? 'its VMM was stopped' : 'its VMM was gone'}`;
        this.vmLog(vm.name).warn(`reconcile: ${why}`);
        if (vm.state === 'stopping') {
          this.publishState(this.vms.update(vm.name, { state: 'stopped', error: null, pid: null }));
          failed.push(vm.name);
        } else if (vm.state === 'creating') {
          this.vms.deleteWithRelease(vm.name);
          await rm(this.vmStateDir(vm.name), { recursive: true, force: true });
          this.events.publish({ type: 'vm.state', vm: vm.name, state: 'failed', error: why });
          this.events.publish({ type: 'vm.deleted', vm: vm.name });
          removed.push(vm.name);
        } else {
          this.publishState(this.vms.update(vm.name, { state: 'failed', error: why, pid: null }));
          failed.push(vm.name);
        }
      });
    }
    const tapsRemoved: string[] = [];
    if (this.opts.network) {
      const owned = new Set<string>();
      for (const name of this.live.keys()) {
        const tap = this.vms.get(name)?.tap;
        if (tap) owned.add(tap);
      }
      for (const tap of await this.opts.network.listTaps()) {
        if (owned.has(tap)) continue;
        await this.opts.network.unlock(tap).catch(() => undefined);
        await this.opts.network.deleteTap(tap);
        tapsRemoved.push(tap);
      }
    }
    return { adopted, failed, removed, tapsRemoved };
  }

  /**
   * Stops supervising and closes egress listeners; VMMs keep running for the next volantd to
   * adopt (their rows stay `running`, their taps keep their rules).
   */
  async close(): Promise<void> {
    this.closed = true;
    this.unsubscribeLeases?.();
    for (const net of this.nets.values()) net.bound = false;
    this.nets.clear();
    const lives = [...this.live.values()];
    this.live.clear();
    await Promise.all(lives.flatMap((l) => [l.agent?.close(), l.egress?.close().catch(() => undefined)]));
  }

  private pluginOf(name: string): InstalledPlugin {
    const plugin = this.opts.plugins.get(name);
    if (!plugin) throw new VolantError('NOT_FOUND', `no plugin named ${JSON.stringify(name)} is installed (volar plugins install DIR)`);
    return plugin;
  }

  /** The network policy for a VM of this plugin and request on a VMM with this vsock capability (throws what it refuses). */
  private policyFor(plugin: InstalledPlugin, request: CreateVmRequest, vsock: VsockCapability): NetworkPolicy {
    return networkPolicy({
      manifest: plugin.manifest,
      request,
      vsock,
      host: { taps: this.opts.network !== undefined, egress: this.opts.egress !== undefined, dhcpServer: this.opts.dhcpLeases ? 'volant' : 'external' },
    });
  }

  private async bringUp(initial: VmRecord, plugin: InstalledPlugin, policy: NetworkPolicy, operation: 'create' | 'start', runtime: LaunchSpec['runtime']): Promise<VmRecord> {
    const name = initial.name;
    const undos: Undo[] = [];
    let step = 'start';
    const enter = (phase: string): void => {
      step = phase;
      this.events.publish({ type: 'vm.phase', vm: name, phase });
    };
    let vm = initial;
    const net: VmNet = { name, mac: vm.mac, tap: vm.tap, policy, locked: false, bound: true };
    try {
      if (operation === 'start') {
        assertTransition(name, vm.state, 'starting');
        vm = this.vms.update(name, { state: 'starting', error: null });
        this.publishState(vm);
      }
      this.nets.set(name, net);
      undos.push({ what: 'network state', run: () => this.forgetNet(net) });

      enter('create run directory');
      await mkdir(this.vmStateDir(name), { recursive: true, mode: 0o700 });
      undos.push({ what: 'run directory', run: () => rm(this.vmRunDir(name), { recursive: true, force: true }) });
      await mkdir(this.vmRunDir(name), { recursive: true, mode: 0o700 });

      const tap = vm.tap;
      if (policy.tap && tap !== null) {
        enter(`create tap ${tap}`);
        undos.push({ what: 'tap', run: () => this.opts.network!.deleteTap(tap) });
        await this.opts.network!.createTap(tap, vm.mac);
      }

      let egress: EgressHandle | undefined;
      if (policy.egress) {
        enter('start egress proxy');
        egress = await this.startEgress(vm, policy.egress, net);
        const e = egress;
        undos.push({ what: 'egress proxy', run: () => e.close() });
      }

      if (policy.lockdown && tap !== null) {
        enter('lock down the tap');
        undos.push({ what: 'firewall lockdown', run: () => this.unlockTap(net, tap) });
        if (policy.lockdown.address === 'dhcp-lease') net.address = this.opts.dhcpLeases?.addressOf(vm.mac);
        await this.netMutex.run(name, async () => {
          await this.opts.network!.lockdown(this.lockdownOf(vm, net));
          net.locked = true;
        });
      }

      enter('launch VMM');
      const proc = await this.opts.launcher.launch(this.launchSpec(vm, plugin, { policy, egress: egress?.route, runtime }));
      undos.push({ what: 'VMM process', run: () => proc.stop({ timeoutMs: this.stopTimeoutMs }) });
      vm = this.vms.update(name, { pid: proc.pid, vmm: proc.kind });

      const deadline = Date.now() + this.healthTimeoutMs;
      const exitedEarly = proc.exited.then((x) => {
        throw new VolantError('VMM_FAILED', `the ${proc.kind} VMM exited during boot (code ${x.code}, signal ${x.signal}); see ${this.serialLogPath(name)}`);
      });
      // Owned here, at once: the waits below race it, but a step that fails first (or a VMM that
      // exits after the create was rolled back) must not leave it rejecting with no handler.
      exitedEarly.catch(() => undefined);
      const predicted = this.opts.launcher.vsockCapability();
      if (proc.capabilities.vsock !== predicted) {
        throw new VolantError('VMM_FAILED', `the ${proc.kind} VMM came up with vsock ${proc.capabilities.vsock}, not the ${predicted} its network was planned for`);
      }

      const agent = policy.agent;
      if (agent.via === 'tcp' && agent.address !== 'ipam') {
        enter(agent.address === 'dhcp-lease' ? "wait for the VM's DHCP lease" : 'discover the DHCP address');
        await this.waitForGuestAddress(vm, net, deadline, exitedEarly);
      }

      enter('wait for kestrel /healthz');
      const transport = this.transportFor(vm, net);
      if (!transport) throw new VolantError('INTERNAL', `VM ${name}: no way to reach kestrel although the network policy chose ${agent.via}`);
      const agentClient = this.newAgentClient(transport);
      undos.push({ what: 'agent client', run: () => agentClient.close() });
      await agentClient.waitForHealthy({ timeoutMs: Math.max(0, deadline - Date.now()), abandon: exitedEarly });
      // A guest whose address only the bridge's neighbour table tells (another DHCP server) and
      // that is reached over vsock needs no address, but users see it (guest_ip): kestrel
      // announced its lease before it answered, so one lookup finds it.
      if (policy.lockdown?.address === 'none' && net.address === undefined) net.address = await this.lookUpGuestAddress(vm);

      enter('record running');
      assertTransition(name, this.get(name).state, 'running');
      vm = this.vms.update(name, { state: 'running' });
      this.live.set(name, { proc, egress, net, agent: agentClient });
      this.watchExit(name, proc);
      if (net.address) this.vmLog(name).info({ address: net.address }, `dhcp address ${net.address}`);
      this.publishState(vm);
      return vm;
    } catch (e) {
      const cleanupErrors: string[] = [];
      for (const undo of undos.reverse()) {
        try {
          await undo.run();
        } catch (ue) {
          cleanupErrors.push(`${undo.what}: ${message(ue)}`);
        }
      }
      const why = `${step}: ${message(e)}${cleanupErrors.length ? ` (cleanup also failed: ${cleanupErrors.join('; ')})` : ''}`;
      this.vmLog(name).error({ err: e, operation, step }, `${operation} failed: ${why}`);
      if (operation === 'create') {
        this.vms.deleteWithRelease(name);
        await rm(this.vmStateDir(name), { recursive: true, force: true }).catch(() => undefined);
        this.events.publish({ type: 'vm.state', vm: name, state: 'failed', error: why });
        this.events.publish({ type: 'vm.deleted', vm: name });
      } else {
        this.publishState(this.vms.update(name, { state: 'failed', error: why, pid: null }));
      }
      const code = isVolantError(e) ? e.code : 'VMM_FAILED';
      throw new VolantError(code, `VM ${name}: ${why}`, isVolantError(e) ? e.details : undefined, { cause: e });
    }
  }

  /** A running VM adopted after a volantd restart: its network policy (for the VMM it really has), egress listener, lockdown and address again. */
  private async readopt(vm: VmRecord, plugin: InstalledPlugin, proc: VmProcess): Promise<void> {
    const policy = this.policyFor(plugin, requestOf(vm), proc.capabilities.vsock);
    const net: VmNet = { name: vm.name, mac: vm.mac, tap: vm.tap, policy, locked: false, bound: true };
    this.nets.set(vm.name, net);
    let egress: EgressHandle | undefined;
    try {
      egress = policy.egress ? await this.startEgress(vm, policy.egress, net, true) : undefined;
      if (policy.lockdown?.address === 'dhcp-lease') net.address = this.opts.dhcpLeases?.addressOf(vm.mac);
      if (policy.lockdown && vm.tap !== null) {
        await this.netMutex.run(vm.name, async () => {
          await this.opts.network!.lockdown(this.lockdownOf(vm, net));
          net.locked = true;
        });
      }
      if (policy.lockdown?.address === 'none') net.address = await this.lookUpGuestAddress(vm);
    } catch (e) {
      await egress?.close().catch(() => undefined);
      this.forgetNet(net);
      throw e;
    }
    this.live.set(vm.name, { proc, egress, net });
    this.watchExit(vm.name, proc);
  }

  /** How the host reaches kestrel, from the policy's agent route and what volantd knows of the address. */
  private transportFor(vm: VmRecord, net: VmNet): AgentTransport | undefined {
    const agent = net.policy.agent;
    // kestrel runs its raw relay when the workload has no path prefix, on vsock always and on
    // TCP only in bridged mode, where it knows the host's address (guest/server/endpoint.ts).
    const plugin = this.opts.plugins.get(vm.plugin);
    const relayable = plugin !== undefined && workloadRelayTarget(plugin.manifest) !== undefined;
    switch (agent.via) {
      case 'hybrid-vsock':
        return { kind: 'vsock', socketPath: this.vsockSocketPath(vm.name), relay: relayable };
      case 'af-vsock':
        return { kind: 'af-vsock', cid: vm.cid, relay: relayable };
      case 'tcp': {
        const host = agent.address === 'ipam' ? (vm.ip ?? undefined) : net.address;
        return host === undefined ? undefined : { kind: 'tcp', host, port: AGENT_TCP_PORT, relay: relayable && net.policy.mode === 'bridged' };
      }
    }
  }

  /** The tap's rules for what is known now (see `LockdownSpec`). */
  private lockdownOf(vm: VmRecord, net: VmNet): VmLockdown {
    const policy = net.policy.lockdown!;
    let address: VmLockdown['address'];
    if (policy.address === 'ipam') {
      if (vm.ip === null) throw new VolantError('INTERNAL', `VM ${vm.name} should hold a pool address but holds none`);
      address = vm.ip;
    } else if (policy.address === 'dhcp-lease') address = net.address ?? 'awaiting-lease';
    else address = 'unbound';
    return { tap: vm.tap!, mac: vm.mac, address, dhcp: policy.dhcp, ...(policy.confined ? { confine: { egressPort: net.egressPort } } : {}) };
  }

  /** What the VM's egress listener checks a peer against: its address as known now, and its MAC. */
  private guestFacts(vm: VmRecord, net: VmNet): { address?: string; mac: string } {
    return { address: net.policy.lease ? (vm.ip ?? undefined) : net.address, mac: vm.mac };
  }

  /** Lease events from Volant's DHCP server: re-bind every VM whose lease moved. */
  private onLeasesChanged(macs: string[]): void {
    const changed = new Set(macs.map((m) => m.toLowerCase()));
    for (const net of this.nets.values()) {
      if (!changed.has(net.mac) || net.policy.lockdown?.address !== 'dhcp-lease') continue;
      void this.netMutex.run(net.name, () => this.rebind(net)).catch((e: unknown) => this.vmLog(net.name).error({ err: e }, `re-binding to its DHCP lease: ${message(e)}`));
    }
  }

  /** Makes tap rules and `net.address` follow the VM's current DHCP lease; a no-op when it did not move. Under `netMutex`. */
  private async rebind(net: VmNet): Promise<void> {
    if (!net.bound) return;
    const address = this.opts.dhcpLeases?.addressOf(net.mac);
    if (address === net.address) return;
    const vm = this.vms.get(net.name);
    if (!vm) return;
    if (net.locked && this.opts.network) await this.opts.network.lockdown(this.lockdownOf(vm, { ...net, address }));
    net.address = address;
    this.vmLog(net.name).info({ address: address ?? null }, `DHCP lease ${address ?? 'gone'}; tap and egress listener bound to it`);
  }

  /** Stops lease re-binding for the VM (a torn-down VM's tap is never touched again). */
  private forgetNet(net: VmNet): void {
    net.bound = false;
    if (this.nets.get(net.name) === net) this.nets.delete(net.name);
  }

  private async unlockTap(net: VmNet, tap: string): Promise<void> {
    net.bound = false;
    await this.netMutex.run(net.name, () => this.opts.network!.unlock(tap));
  }

  /** One neighbour-table lookup by the VM's MAC; undefined when not there (or no host networking). */
  private async lookUpGuestAddress(vm: VmRecord): Promise<string | undefined> {
    try {
      return await this.opts.network?.guestAddress?.(vm.mac);
    } catch (e) {
      this.vmLog(vm.name).warn({ err: e }, `neighbour lookup: ${message(e)}`);
      return undefined;
    }
  }

  /**
   * Until volantd knows the guest's address (Volant's DHCP lease, bound to its tap; or its
   * neighbour entry), the deadline passes (TIMEOUT) or the VMM exits.
   */
  private async waitForGuestAddress(vm: VmRecord, net: VmNet, deadline: number, abandon: Promise<never>): Promise<void> {
    let abandoned: unknown;
    abandon.catch((e: unknown) => {
      abandoned = e;
    });
    const fromLease = net.policy.agent.via === 'tcp' && net.policy.agent.address === 'dhcp-lease';
    for (;;) {
      if (abandoned !== undefined) throw abandoned;
      if (fromLease) await this.netMutex.run(vm.name, () => this.rebind(net));
      else net.address = await this.lookUpGuestAddress(vm);
      if (net.address) return;
      if (abandoned !== undefined) throw abandoned;
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new VolantError(
          'TIMEOUT',
          fromLease
            ? `Volant's DHCP server leased no address to MAC ${vm.mac} within ${this.healthTimeoutMs} ms (is it running? volar setup --dhcp); see ${this.serialLogPath(vm.name)}`
            : `no address for MAC ${vm.mac} appeared on the bridge within ${this.healthTimeoutMs} ms (is a DHCP server answering there?); see ${this.serialLogPath(vm.name)}`,
        );
      }
      await new Promise((r) => setTimeout(r, Math.min(ADDRESS_POLL_INTERVAL_MS, left)));
    }
  }

  /**
   * The VM's egress listener. A TCP listener's port is on the guest's kernel command line, so a
   * re-adopted VM gets the same port again (kept in its run directory, which lives as long as its VMM).
   */
  private async startEgress(vm: VmRecord, egress: NonNullable<NetworkPolicy['egress']>, net: VmNet, readopt = false): Promise<EgressHandle> {
    const portFile = join(this.vmRunDir(vm.name), EGRESS_PORT_FILE);
    const port = readopt ? Number((await readFile(portFile, 'utf8').catch(() => '')).trim()) || undefined : undefined;
    const handle = await this.opts.egress!({ name: vm.name, vsockSocketPath: this.vsockSocketPath(vm.name), egress, guest: () => this.guestFacts(vm, net), port });
    if (handle.route.kind === 'tcp') {
      net.egressPort = handle.route.port;
      await writeFile(portFile, `${handle.route.port}\n`, { mode: 0o600 });
    }
    return handle;
  }

  private cmdlineNetwork(vm: VmRecord, policy: NetworkPolicy): CmdlineNetwork {
    switch (policy.ipParam) {
      case 'static':
        if (vm.ip === null) throw new VolantError('INTERNAL', `VM ${vm.name} should hold a pool address but holds none`);
        return { mode: policy.mode, ip: { address: vm.ip, gateway: formatIPv4(this.opts.hostCidr.address), prefix: this.opts.hostCidr.prefix } };
      case 'dhcp':
        return { mode: policy.mode, ip: 'dhcp' };
      case 'none':
        return { mode: policy.mode };
    }
  }

  /** `boot` undefined: a spec for adoption, where the command line no longer matters. */
  private launchSpec(vm: VmRecord, plugin: InstalledPlugin, boot: { policy: NetworkPolicy; egress?: CmdlineEgress; runtime?: LaunchSpec['runtime'] } | undefined): LaunchSpec {
    const req = requestOf(vm);
    const runtime = boot?.runtime;
    const cmdline = boot
      ? buildKernelCmdline({ vmName: vm.name, network: this.cmdlineNetwork(vm, boot.policy), env: req.env, dns: this.opts.dns, egress: boot.egress, runtime: runtime?.device })
      : '';
    return {
      vmName: vm.name,
      kernelPath: this.opts.kernelPath,
      initramfsPath: plugin.initramfsPath,
      cmdline,
      cpus: req.cpus ?? plugin.manifest.resources?.cpu_cores ?? DEFAULT_CPUS,
      memoryMb: memoryFor(req, plugin),
      ...(runtime ? { runtime } : {}),
      tap: vm.tap !== null ? { name: vm.tap, mac: vm.mac } : undefined,
      vsock: { cid: vm.cid, socketPath: this.vsockSocketPath(vm.name) },
      serialLogPath: this.serialLogPath(vm.name),
      runDir: this.vmRunDir(vm.name),
      commandPrefix: this.opts.commandPrefix,
    };
  }

  /** Releases egress, lockdown, tap and run directory; stops the VMM first when asked. */
  private async teardown(vm: VmRecord, options: { killProcess: boolean }): Promise<void> {
    const live = this.live.get(vm.name);
    this.live.delete(vm.name);
    const net = this.nets.get(vm.name);
    if (net) this.forgetNet(net);
    await live?.agent?.close();
    if (live && options.killProcess) await live.proc.stop({ timeoutMs: this.stopTimeoutMs });
    await live?.egress?.close().catch((e: unknown) => this.vmLog(vm.name).warn({ err: e }, `closing egress: ${message(e)}`));
    const tap = vm.tap;
    if (tap !== null && this.opts.network) {
      await this.netMutex.run(vm.name, () => this.opts.network!.unlock(tap));
      await this.opts.network.deleteTap(tap);
    }
    await rm(this.vmRunDir(vm.name), { recursive: true, force: true });
  }

  private watchExit(name: string, proc: VmProcess): void {
    void proc.exited.then((exit) =>
      this.mutex
        .run(name, async () => {
          if (this.closed || this.live.get(name)?.proc !== proc) return;
          const vm = this.vms.get(name);
          if (!vm) return;
          const next: VmState = stateAfterExit(vm.state, exit);
          await this.teardown(vm, { killProcess: false });
          const error = next === 'failed' ? `the ${proc.kind} VMM exited unexpectedly (code ${exit.code}, signal ${exit.signal})${exit.detail ? `: ${exit.detail}` : ''}` : null;
          this.vmLog(name)[next === 'failed' ? 'warn' : 'info']({ exit }, `VMM exited (code ${exit.code}, signal ${exit.signal}) → ${next}`);
          this.publishState(this.vms.update(name, { state: next, error, pid: null }));
        })
        .catch((e: unknown) => this.vmLog(name).error({ err: e }, `handling VMM exit: ${message(e)}`)),
    );
  }

  private publishState(vm: VmRecord): void {
    this.vmLog(vm.name).info({ state: vm.state, ...(vm.error ? { error: vm.error } : {}) }, `VM ${vm.state}`);
    this.events.publish({ type: 'vm.state', vm: vm.name, state: vm.state, error: vm.error ?? undefined });
  }

  /** Lines about one VM carry its name. */
  private vmLog(name: string): Logger {
    return this.log.child({ vm: name });
  }
}

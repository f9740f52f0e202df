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
 *  - A dhcp VM holds no IPAM lease; where the VMM has no vsock its kestrel is reached at the
 *    address the guest announced on the bridge, found by MAC in the neighbour table while it
 *    boots (same deadline as the health wait) and kept in memory only (looked up again when a
 *    restarted volantd re-adopts the VM).
 */

import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { isVolantError, ValidationError, VolantError } from '../../shared/errors.js';
import { type Cidr, formatIPv4 } from '../../shared/ipv4.js';
import { effectiveMode, needsTapDevice, type ResolvedNetwork, resolveNetworkConfig } from '../../shared/network-mode.js';
import { type CreateVmRequest, validateCreateVmRequest } from '../../shared/schema/vm-config.js';
import type { Store } from '../store/store.js';
import type { VmRecord } from '../store/vms.js';
import { buildKernelCmdline, type CmdlineEgress, type CmdlineNetwork } from '../vmm/cmdline.js';
import type { LaunchSpec, Launcher, VmProcess } from '../vmm/launcher.js';
import { EventBus } from './events.js';
import { type AgentTransport, agentTransport, waitForHealthy } from './kestrel-client.js';
import { KeyedMutex } from './keyed-mutex.js';
import type { InstalledPlugin, PluginImages } from './plugin-images.js';
import type { EgressHandle, EgressStarter, TapNetwork } from './ports.js';
import { assertTransition, hasProcess, isAtRest, stateAfterExit, type VmState } from './state.js';

/** From VMM launch to kestrel's first 200 on /healthz. TCG boots are slow; KVM needs a fraction. */
export const BOOT_HEALTH_TIMEOUT_MS = 120_000;
/** Graceful shutdown before the launcher escalates to SIGTERM/SIGKILL. */
export const VMM_STOP_TIMEOUT_MS = 10_000;
export const DEFAULT_CPUS = 1;
export const DEFAULT_MEMORY_MB = 512;
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
  /** The host port a bridged VM without outbound access may reach (nothing of its own listens there). */
  closedEgressPort: number;
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
  log?: (line: string) => void;
}

interface LiveVm {
  proc: VmProcess;
  egress?: EgressHandle;
  /** A dhcp guest's address as discovered on the bridge (bridged VMs use the row's `ip`). */
  address?: string;
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
  private readonly live = new Map<string, LiveVm>();
  private readonly healthTimeoutMs: number;
  private readonly stopTimeoutMs: number;
  private closed = false;

  constructor(private readonly opts: OrchestratorOptions) {
    this.events = opts.events ?? new EventBus();
    this.healthTimeoutMs = opts.healthTimeoutMs ?? BOOT_HEALTH_TIMEOUT_MS;
    this.stopTimeoutMs = opts.stopTimeoutMs ?? VMM_STOP_TIMEOUT_MS;
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

  /** How to reach the VM's kestrel now, or undefined when it does not run. */
  agentFor(name: string): AgentTransport | undefined {
    const vm = this.get(name);
    const live = this.live.get(name);
    if (!live || vm.state !== 'running') return undefined;
    return agentTransport({ ip: vm.ip ?? live.address, vsockSocketPath: this.vsockSocketPath(name), vmmHasVsock: live.proc.capabilities.vsock });
  }

  /**
   * `agentFor`, except that a running dhcp VM whose address this volantd has not seen (re-adopted
   * after its neighbour entry was gone) is looked up on the bridge once more first.
   */
  async reachAgent(name: string): Promise<AgentTransport | undefined> {
    const vm = this.get(name);
    const live = this.live.get(name);
    if (live && vm.state === 'running' && vm.mode === 'dhcp' && live.address === undefined && !live.proc.capabilities.vsock) {
      live.address = await this.lookUpGuestAddress(vm);
    }
    return this.agentFor(name);
  }

  /** The address a running dhcp VM got from its DHCP server, when this volantd knows it. */
  discoveredAddress(name: string): string | undefined {
    return this.live.get(name)?.address;
  }

  /** Validates, records, brings up; resolves when kestrel answers, rejects after rolling back. */
  async create(input: unknown): Promise<VmRecord> {
    const checked = validateCreateVmRequest(input);
    if (!checked.ok) throw new ValidationError('VM create request', checked.problems);
    const req = checked.value;
    const plugin = this.pluginOf(req.plugin);
    const net = resolveNetworkConfig(plugin.manifest, req);
    const mode = effectiveMode(net);
    if (req.ip !== undefined && mode !== 'bridged') {
      throw new ValidationError('VM create request', [{ path: '/ip', message: `an explicit address needs network mode bridged; plugin ${plugin.name} makes this VM ${mode}` }]);
    }
    this.assertSupported(net);
    return this.mutex.run(req.name, async () => {
      const vm = this.vms.createWithLease({ name: req.name, plugin: plugin.name, config: req }, { mode, requestedIp: req.ip });
      this.publishState(vm);
      return this.bringUp(vm, plugin, 'create');
    });
  }

  async start(name: string): Promise<VmRecord> {
    return this.mutex.run(name, async () => {
      const vm = this.get(name);
      if (vm.state === 'running') return vm;
      if (!isAtRest(vm.state)) throw new VolantError('INVALID_STATE', `VM ${name} is ${vm.state}; start needs it stopped or failed`, { state: vm.state });
      const plugin = this.pluginOf(vm.plugin);
      this.assertSupported(resolveNetworkConfig(plugin.manifest, requestOf(vm)));
      return this.bringUp(vm, plugin, 'start');
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
            this.log(`reconcile ${vm.name}: adopting pid ${vm.pid}: ${message(e)}`);
            return undefined;
          });
        }
        if (proc && vm.state === 'running') {
          const net = resolveNetworkConfig(plugin!.manifest, requestOf(vm));
          try {
            const egress = net.allowOutbound && this.opts.egress ? await this.startEgress(vm, net) : undefined;
            const address = vm.mode === 'dhcp' ? await this.lookUpGuestAddress(vm) : undefined;
            this.live.set(vm.name, { proc, egress, address });
            this.watchExit(vm.name, proc);
            adopted.push(vm.name);
            return;
          } catch (e) {
            this.log(`reconcile ${vm.name}: egress restart failed: ${message(e)}`);
          }
        }
        if (proc) await proc.stop({ timeoutMs: this.stopTimeoutMs }).catch(() => undefined);
        await this.teardown(vm, { killProcess: false });
        const why = `volantd restarted while the VM was ${vm.state}; ${proc ? 'its VMM was stopped' : 'its VMM was gone'}`;
        this.log(`reconcile ${vm.name}: ${why}`);
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
   * adopt (their rows stay `running`).
   */
  async close(): Promise<void> {
    this.closed = true;
    const lives = [...this.live.values()];
    this.live.clear();
    await Promise.all(lives.map((l) => l.egress?.close().catch(() => undefined)));
  }

  private pluginOf(name: string): InstalledPlugin {
    const plugin = this.opts.plugins.get(name);
    if (!plugin) throw new VolantError('NOT_FOUND', `no plugin named ${JSON.stringify(name)} is installed (volar plugins install DIR)`);
    return plugin;
  }

  private assertSupported(net: ResolvedNetwork): void {
    if (needsTapDevice(net) && !this.opts.network) throw new VolantError('NOT_SUPPORTED', `network mode ${effectiveMode(net)} needs host networking, which this volantd runs without`);
    if (net.allowOutbound && !this.opts.egress) throw new VolantError('NOT_SUPPORTED', 'outbound traffic needs the egress proxy, which this volantd runs without');
  }

  private async bringUp(initial: VmRecord, plugin: InstalledPlugin, operation: 'create' | 'start'): Promise<VmRecord> {
    const name = initial.name;
    const undos: Undo[] = [];
    let step = 'start';
    let vm = initial;
    const net = resolveNetworkConfig(plugin.manifest, requestOf(vm));
    try {
      if (operation === 'start') {
        assertTransition(name, vm.state, 'starting');
        vm = this.vms.update(name, { state: 'starting', error: null });
        this.publishState(vm);
      }

      step = 'create run directory';
      await mkdir(this.vmStateDir(name), { recursive: true, mode: 0o700 });
      undos.push({ what: 'run directory', run: () => rm(this.vmRunDir(name), { recursive: true, force: true }) });
      await mkdir(this.vmRunDir(name), { recursive: true, mode: 0o700 });

      const tap = vm.tap;
      if (tap !== null && needsTapDevice(net)) {
        step = `create tap ${tap}`;
        undos.push({ what: 'tap', run: () => this.opts.network!.deleteTap(tap) });
        await this.opts.network!.createTap(tap, vm.mac);
      }

      let egress: EgressHandle | undefined;
      if (net.allowOutbound) {
        step = 'start egress proxy';
        egress = await this.startEgress(vm, net);
        const e = egress;
        undos.push({ what: 'egress proxy', run: () => e.close() });
      }

      // A VM with an allowlist may reach nothing but its egress listener (and may not spoof
      // another lease); one without keeps plain NAT, as the seed documents describe.
      if (tap !== null && vm.ip !== null && needsTapDevice(net) && net.allowedDomains.length > 0) {
        step = 'lock down the tap';
        const egressPort = egress?.route.kind === 'tcp' ? egress.route.port : this.opts.closedEgressPort;
        undos.push({ what: 'firewall lockdown', run: () => this.opts.network!.unlock(tap) });
        await this.opts.network!.lockdown({ tap, ip: vm.ip, mac: vm.mac, egressPort });
      }

      step = 'launch VMM';
      const proc = await this.opts.launcher.launch(this.launchSpec(vm, plugin, { egress: egress?.route }));
      undos.push({ what: 'VMM process', run: () => proc.stop({ timeoutMs: this.stopTimeoutMs }) });
      vm = this.vms.update(name, { pid: proc.pid, vmm: proc.kind });

      const deadline = Date.now() + this.healthTimeoutMs;
      const exitedEarly = proc.exited.then((x) => {
        throw new VolantError('VMM_FAILED', `the ${proc.kind} VMM exited during boot (code ${x.code}, signal ${x.signal}); see ${this.serialLogPath(name)}`);
      });
      // Owned here, at once: the waits below race it, but a step that fails first (or a VMM that
      // exits after the create was rolled back) must not leave it rejecting with no handler.
      exitedEarly.catch(() => undefined);
      let address: string | undefined;
      if (vm.mode === 'dhcp' && !proc.capabilities.vsock && this.opts.network?.guestAddress) {
        step = 'discover the DHCP address';
        address = await this.waitForGuestAddress(vm, deadline, exitedEarly);
      }

      step = 'wait for kestrel /healthz';
      const transport = agentTransport({ ip: vm.ip ?? address, vsockSocketPath: this.vsockSocketPath(name), vmmHasVsock: proc.capabilities.vsock });
      if (!transport) throw new VolantError('NOT_SUPPORTED', `the ${proc.kind} VMM gives this ${vm.mode} VM neither vsock nor an address: kestrel is unreachable`);
      await waitForHealthy(transport, { timeoutMs: Math.max(0, deadline - Date.now()), abandon: exitedEarly });

      step = 'record running';
      assertTransition(name, this.get(name).state, 'running');
      vm = this.vms.update(name, { state: 'running' });
      this.live.set(name, { proc, egress, address });
      this.watchExit(name, proc);
      if (address) this.log(`VM ${name}: dhcp address ${address}`);
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
      this.log(`VM ${name} ${operation} failed: ${why}`);
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

  /** One neighbour-table lookup by the VM's MAC; undefined when not there (or no host networking). */
  private async lookUpGuestAddress(vm: VmRecord): Promise<string | undefined> {
    try {
      return await this.opts.network?.guestAddress?.(vm.mac);
    } catch (e) {
      this.log(`VM ${vm.name}: neighbour lookup: ${message(e)}`);
      return undefined;
    }
  }

  /** Polls the neighbour table until the guest announced itself, the deadline passes (TIMEOUT) or the VMM exits. */
  private async waitForGuestAddress(vm: VmRecord, deadline: number, abandon: Promise<never>): Promise<string> {
    let abandoned: unknown;
    abandon.catch((e: unknown) => {
      abandoned = e;
    });
    for (;;) {
      if (abandoned !== undefined) throw abandoned;
      const address = await this.lookUpGuestAddress(vm);
      if (address) return address;
      if (abandoned !== undefined) throw abandoned;
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new VolantError('TIMEOUT', `no address for MAC ${vm.mac} appeared on the bridge within ${this.healthTimeoutMs} ms (is a DHCP server answering there?); see ${this.serialLogPath(vm.name)}`);
      }
      await new Promise((r) => setTimeout(r, Math.min(ADDRESS_POLL_INTERVAL_MS, left)));
    }
  }

  private startEgress(vm: VmRecord, net: ResolvedNetwork): Promise<EgressHandle> {
    return this.opts.egress!({ name: vm.name, mode: vm.mode, ip: vm.ip ?? undefined, vsockSocketPath: this.vsockSocketPath(vm.name), allowedDomains: net.allowedDomains });
  }

  private cmdlineNetwork(vm: VmRecord): CmdlineNetwork {
    if (vm.mode === 'bridged') {
      if (vm.ip === null) throw new VolantError('INTERNAL', `VM ${vm.name} is bridged but holds no address`);
      return { mode: 'bridged', ip: vm.ip, gateway: formatIPv4(this.opts.hostCidr.address), prefix: this.opts.hostCidr.prefix };
    }
    return { mode: vm.mode };
  }

  /** `boot` undefined: a spec for adoption, where the command line no longer matters. */
  private launchSpec(vm: VmRecord, plugin: InstalledPlugin, boot: { egress?: CmdlineEgress } | undefined): LaunchSpec {
    const req = requestOf(vm);
    const cmdline = boot ? buildKernelCmdline({ vmName: vm.name, network: this.cmdlineNetwork(vm), env: req.env, dns: this.opts.dns, egress: boot.egress }) : '';
    return {
      vmName: vm.name,
      kernelPath: this.opts.kernelPath,
      initramfsPath: plugin.initramfsPath,
      cmdline,
      cpus: req.cpus ?? plugin.manifest.resources?.cpu_cores ?? DEFAULT_CPUS,
      memoryMb: req.memory_mb ?? plugin.manifest.resources?.memory_mb ?? DEFAULT_MEMORY_MB,
      tap: vm.tap !== null && vm.mode !== 'vsock' ? { name: vm.tap, mac: vm.mac } : undefined,
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
    if (live && options.killProcess) await live.proc.stop({ timeoutMs: this.stopTimeoutMs });
    await live?.egress?.close().catch((e: unknown) => this.log(`VM ${vm.name}: closing egress: ${message(e)}`));
    if (vm.tap !== null && vm.mode !== 'vsock' && this.opts.network) {
      await this.opts.network.unlock(vm.tap);
      await this.opts.network.deleteTap(vm.tap);
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
          const error = next === 'failed' ? `the ${proc.kind} VMM exited unexpectedly (code ${exit.code}, signal ${exit.signal})` : null;
          this.log(`VM ${name}: VMM exited (code ${exit.code}, signal ${exit.signal}) → ${next}`);
          this.publishState(this.vms.update(name, { state: next, error, pid: null }));
        })
        .catch((e: unknown) => this.log(`VM ${name}: handling VMM exit: ${message(e)}`)),
    );
  }

  private publishState(vm: VmRecord): void {
    this.events.publish({ type: 'vm.state', vm: vm.name, state: vm.state, error: vm.error ?? undefined });
  }

  private log(line: string): void {
    this.opts.log?.(line);
  }
}

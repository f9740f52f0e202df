/**
 * The one interface every VMM implementation serves (one file per VMM beside this one). A
 * launcher turns a `LaunchSpec` into a running VMM process it supervises: it owns the process,
 * the serial log file, and graceful-then-forced shutdown. The orchestrator never spawns a VMM
 * itself and never needs to know which one runs.
 */

export type VmmKind = 'cloud-hypervisor' | 'qemu';

export interface LaunchSpec {
  vmName: string;
  kernelPath: string;
  initramfsPath: string;
  /** The full kernel command line (console, ip=, volant.* keys). */
  cmdline: string;
  cpus: number;
  memoryMb: number;
  /** Present for bridged and dhcp VMs: the tap already exists and is attached to the bridge. */
  tap?: { name: string; mac: string };
  /** Always present: the VM's vsock CID and the hybrid-vsock Unix socket path. */
  vsock: { cid: number; socketPath: string };
  /** The guest's serial console is appended here. */
  serialLogPath: string;
  /** A private directory for the VMM's sockets and files (API socket, QMP, event monitor). */
  runDir: string;
  /** Extra environment/command prefix, e.g. `['ip','netns','exec','ns']` for tests. */
  commandPrefix?: string[];
}

export interface VmmExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface VmmCapabilities {
  /** How the guest CPU runs. */
  accel: 'kvm' | 'tcg';
  /** Whether the guest has a vsock device reachable through `vsock.socketPath`. */
  vsock: boolean;
}

export interface VmProcess {
  readonly kind: VmmKind;
  readonly pid: number;
  readonly capabilities: VmmCapabilities;
  /** Resolves once the VMM process has exited, whatever the reason. */
  readonly exited: Promise<VmmExit>;
  /** Asks the guest to shut down, then SIGTERM, then SIGKILL after `timeoutMs`. */
  stop(options?: { timeoutMs?: number }): Promise<VmmExit>;
}

export interface Launcher {
  readonly kind: VmmKind;
  launch(spec: LaunchSpec): Promise<VmProcess>;
  /**
   * Re-attaches to a VMM that was started by an earlier volantd and still runs (after a daemon
   * restart). Returns undefined when `pid` is not that VM's VMM any more.
   */
  adopt(pid: number, spec: LaunchSpec): Promise<VmProcess | undefined>;
}

/**
 * Boots a kernel + initramfs under QEMU for end-to-end tests, the way that was found to work on
 * these machines: `-M q35 -accel tcg -cpu max` (a stock kernel does not boot under KVM here and
 * `-M microvm` hangs under TCG), serial console to a file, optional virtio-net on a tap inside a
 * network namespace the test created (QEMU started with `ip netns exec`).
 *
 * What must hold: the harness only kills the PID it started, removes what it created (namespace,
 * bridge, tap, temp files) even when the test fails, and names everything with the area and the
 * process id so parallel runs cannot collide.
 */

import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { LaunchSpec } from '../../host/vmm/launcher.js';
import { qemuMemoryArgs, qemuRuntimeDiskArgs } from '../../host/vmm/qemu.js';
import { hasCommand } from './strict.js';

export const QEMU_BINARY = 'qemu-system-x86_64';
export const DEFAULT_GUEST_MEMORY_MB = 1024;
const CONSOLE_POLL_MS = 100;
const KILL_GRACE_MS = 3000;

export function qemuAvailable(): boolean {
  return hasCommand(QEMU_BINARY);
}

export function isRoot(): boolean {
  return process.getuid?.() === 0;
}

function dnsmasqAvailable(): boolean {
  return ['dnsmasq', '/usr/sbin/dnsmasq'].some((binary) => hasCommand(binary));
}

/** Why an end-to-end suite must skip here (root, QEMU, and dnsmasq when it needs DHCP), or false. */
export function e2eSkipReason(needs: { dnsmasq?: boolean } = {}): string | false {
  if (!isRoot()) return 'needs root (network namespaces, bridges, taps, iptables)';
  if (!qemuAvailable()) return 'qemu-system-x86_64 is not installed (scripts/install-deps.sh installs it)';
  if (needs.dnsmasq && !dnsmasqAvailable()) return 'dnsmasq is not installed (scripts/install-deps.sh installs dnsmasq-base)';
  return false;
}

export interface QemuNic {
  /** Network namespace QEMU runs in (must exist and hold the tap). */
  netns: string;
  tap: string;
  mac: string;
}

export interface BootOptions {
  kernel: string;
  initrd: string;
  append: string;
  memoryMb?: number;
  nic?: QemuNic;
  /** The shared runtime image, attached with volantd's own QEMU arguments (qemuMemoryArgs, qemuRuntimeDiskArgs). */
  runtime?: LaunchSpec['runtime'];
}

export interface BootedGuest {
  pid: number;
  serialLog: string;
  /** The console so far. */
  console(): string;
  /** Resolves with the console once `pattern` appears; rejects on timeout or QEMU exit. */
  waitForConsole(pattern: RegExp, timeoutMs: number): Promise<string>;
  /** Kills QEMU (SIGTERM, then SIGKILL) and removes its temp files. */
  stop(): Promise<void>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** The QEMU argument list (pure; exported for inspection in tests). */
export function qemuArgs(o: BootOptions, serialLog: string): string[] {
  const memoryMb = o.memoryMb ?? DEFAULT_GUEST_MEMORY_MB;
  const memory = o.runtime ? [...qemuMemoryArgs({ memoryMb, runtime: o.runtime }), ...qemuRuntimeDiskArgs(o)] : ['-M', 'q35', '-m', String(memoryMb)];
  const args = [...memory, '-accel', 'tcg', '-cpu', 'max', '-smp', '1'];
  args.push('-nographic', '-no-reboot', '-monitor', 'none', '-serial', `file:${serialLog}`, '-nodefaults');
  args.push('-kernel', o.kernel, '-initrd', o.initrd, '-append', o.append);
  if (o.nic) {
    args.push('-netdev', `tap,id=n0,ifname=${o.nic.tap},script=no,downscript=no,vhost=off`, '-device', `virtio-net-pci,netdev=n0,mac=${o.nic.mac}`);
  } else {
    args.push('-nic', 'none');
  }
  return args;
}

export async function bootQemu(o: BootOptions): Promise<BootedGuest> {
  const dir = mkdtempSync(join(tmpdir(), `volant-initramfs-qemu-${process.pid}-`));
  const serialLog = join(dir, 'serial.log');
  const args = qemuArgs(o, serialLog);
  const child: ChildProcess = o.nic
    ? spawn('ip', ['netns', 'exec', o.nic.netns, QEMU_BINARY, ...args], { stdio: ['ignore', 'ignore', 'pipe'] })
    : spawn(QEMU_BINARY, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((res) => {
    child.once('exit', (code, signal) => res({ code, signal }));
    child.once('error', () => res({ code: -1, signal: null }));
  });
  let done = false;
  void exited.then(() => {
    done = true;
  });
  const readConsole = () => (existsSync(serialLog) ? readFileSync(serialLog, 'latin1') : '');
  const pid = child.pid ?? -1;

  return {
    pid,
    serialLog,
    console: readConsole,
    exited,
    async waitForConsole(pattern, timeoutMs) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const text = readConsole();
        if (pattern.test(text)) return text;
        if (done) throw new Error(`QEMU exited before ${pattern} appeared; stderr: ${stderr.trim()}\n--- console ---\n${text.slice(-4000)}`);
        if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${pattern}\n--- console ---\n${text.slice(-4000)}`);
        await new Promise((r) => setTimeout(r, CONSOLE_POLL_MS));
      }
    },
    async stop() {
      if (!done && pid > 0) {
        process.kill(pid, 'SIGTERM');
        const timer = setTimeout(() => {
          if (!done) process.kill(pid, 'SIGKILL');
        }, KILL_GRACE_MS);
        await exited;
        clearTimeout(timer);
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A namespace with a bridge holding the host address and a tap for the guest. */
export interface TapNetwork {
  netns: string;
  bridge: string;
  tap: string;
  hostIp: string;
  prefix: number;
  /** Runs a command inside the namespace (argv, no shell). */
  exec(argv: string[], timeoutMs?: number): string;
  destroy(): void;
}

function sh(argv: string[]): void {
  execFileSync(argv[0]!, argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] });
}

/** Creates `volant-<tag>-<pid>` namespace with bridge + tap; `destroy()` removes all of it. */
export function createTapNetwork(tag: string, hostIp: string, prefix: number): TapNetwork {
  const id = `${tag}${process.pid}`.slice(-9);
  const netns = `volant-${tag}-${process.pid}`;
  const bridge = `vbr${id}`.slice(0, 15);
  const tap = `vtap${id}`.slice(0, 15);
  const net: TapNetwork = {
    netns,
    bridge,
    tap,
    hostIp,
    prefix,
    exec(argv, timeoutMs = 30_000) {
      return execFileSync('ip', ['netns', 'exec', netns, ...argv], { encoding: 'utf8', timeout: timeoutMs, stdio: ['ignore', 'pipe', 'pipe'] });
    },
    destroy() {
      try {
        sh(['ip', 'netns', 'del', netns]);
      } catch {
        // already gone
      }
    },
  };
  try {
    sh(['ip', 'netns', 'add', netns]);
    const inNs = (a: string[]) => sh(['ip', 'netns', 'exec', netns, ...a]);
    inNs(['ip', 'link', 'set', 'lo', 'up']);
    inNs(['ip', 'link', 'add', bridge, 'type', 'bridge']);
    inNs(['ip', 'addr', 'add', `${hostIp}/${prefix}`, 'dev', bridge]);
    inNs(['ip', 'link', 'set', bridge, 'up']);
    inNs(['ip', 'tuntap', 'add', tap, 'mode', 'tap', 'vnet_hdr']);
    inNs(['ip', 'link', 'set', tap, 'master', bridge]);
    inNs(['ip', 'link', 'set', tap, 'up']);
  } catch (e) {
    net.destroy();
    throw e;
  }
  return net;
}

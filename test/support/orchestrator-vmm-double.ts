/**
 * TEST DOUBLE of a `Launcher` (host/vmm/launcher.ts) for orchestrator and API tests: Cloud
 * Hypervisor and KVM cannot run on the test machines. Every launch really spawns
 * `orchestrator-fake-vmm.mjs`, a process that speaks hybrid vsock on the VM's socket and serves
 * a kestrel-like /healthz (see that file), so supervision, exit detection, SIGKILL and adoption
 * after a daemon restart are exercised against real processes. Only the guest is pretend.
 */

import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { VolantError } from '../../shared/errors.js';
import type { VsockCapability } from '../../shared/network-policy.js';
import type { LaunchSpec, Launcher, VmmExit, VmProcess } from '../../host/vmm/launcher.js';
import { isAlive } from './vmm-procs.js';

export const FAKE_VMM_PROGRAM = fileURLToPath(new URL('./orchestrator-fake-vmm.mjs', import.meta.url));

export type FakeBehaviour = 'healthy' | 'never-healthy' | 'crash-after-boot' | 'exit-clean-after-boot' | 'launch-fails';

function processFor(pid: number, exited: Promise<VmmExit>): VmProcess {
  return {
    kind: 'cloud-hypervisor',
    pid,
    capabilities: { accel: 'tcg', vsock: 'hybrid-socket' },
    exited,
    async stop(options?: { timeoutMs?: number }): Promise<VmmExit> {
      if (!isAlive(pid)) return exited;
      process.kill(pid, 'SIGTERM');
      const timer = setTimeout(() => isAlive(pid) && process.kill(pid, 'SIGKILL'), options?.timeoutMs ?? 5000);
      try {
        return await exited;
      } finally {
        clearTimeout(timer);
      }
    },
  };
}

export class FakeVmmLauncher implements Launcher {
  readonly kind = 'cloud-hypervisor' as const;

  vsockCapability(): VsockCapability {
    return 'hybrid-socket';
  }
  /** What the next launches do, by VM name (default healthy). */
  readonly behaviour = new Map<string, FakeBehaviour>();
  readonly launched: { vmName: string; pid: number; spec: LaunchSpec }[] = [];

  async launch(spec: LaunchSpec): Promise<VmProcess> {
    const b = this.behaviour.get(spec.vmName) ?? 'healthy';
    if (b === 'launch-fails') throw new VolantError('VMM_FAILED', `fake VMM for ${spec.vmName}: launch refused (injected failure)`);
    const child = spawn(process.execPath, [FAKE_VMM_PROGRAM, spec.vsock.socketPath, spec.serialLogPath, b], { stdio: 'ignore', detached: true });
    const exited = new Promise<VmmExit>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
    await new Promise<void>((resolve, reject) => {
      child.once('spawn', resolve);
      child.once('error', reject);
    });
    child.unref();
    this.launched.push({ vmName: spec.vmName, pid: child.pid!, spec });
    return processFor(child.pid!, exited);
  }

  /** Adopts only a live process whose command line names this VM's vsock socket. */
  async adopt(pid: number, spec: LaunchSpec): Promise<VmProcess | undefined> {
    let cmdline: string;
    try {
      cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    } catch {
      return undefined;
    }
    if (!cmdline.includes(FAKE_VMM_PROGRAM) || !cmdline.includes(spec.vsock.socketPath)) return undefined;
    const exited = new Promise<VmmExit>((resolve) => {
      const t = setInterval(() => {
        if (!isAlive(pid)) {
          clearInterval(t);
          resolve({ code: null, signal: null });
        }
      }, 50);
      t.unref();
    });
    return processFor(pid, exited);
  }
}

/**
 * The vsock device back-end beside a QEMU VM (host/vsock/device/main.ts), seen from the launcher:
 * start it before QEMU (QEMU connects to it and exits if nothing listens), find it again after a
 * volantd restart, and end it with the VM. What must hold:
 *
 *  - It runs detached in its own process group with its output in `<runDir>/vsock-device.log`,
 *    like the VMM: it outlives volantd, and a fault in it never reaches volantd or another VM.
 *  - Ready means its vhost-user socket exists (it binds under a temporary name and renames, after
 *    the hybrid socket is listening), so QEMU can start the moment `startVsockBackend` returns.
 *  - The pair lives and dies together (`pairedExit`): the back-end exits by itself when QEMU's
 *    connection closes (and is SIGKILLed if it has not within BACKEND_EXIT_GRACE_MS); when the
 *    back-end dies first, QEMU is SIGKILLed (its vsock device is gone: the VM is failed, not
 *    stopped). Either way no socket file or pid file is left in the run directory.
 *  - Its PID is kept in `<runDir>/vsock-device.pid`; a PID is trusted only while its argv still
 *    names this VM's vhost-user socket (no recycled PID is ever signalled).
 */

import { lstatSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { VolantError } from '../../shared/errors.js';
import type { LogLevel } from '../log/levels.js';
import { formatBackendArgs, parseBackendArgs } from '../vsock/device/args.js';
import type { LaunchSpec, VmmExit } from './launcher.js';
import { argvContains, readProcessArgv, SIGKILL_WAIT_MS, type SpawnedVmm, spawnVmm, waitForExit, watchAdoptedPid } from './process.js';
import { logTail, removeStaleSocket } from './run-dir.js';

/** How long the back-end gets to create its sockets. */
export const BACKEND_READY_TIMEOUT_MS = 10_000;
const BACKEND_READY_POLL_MS = 20;
/** How long the back-end gets to exit by itself once QEMU is gone (and QEMU, once the back-end saw it leave). */
export const BACKEND_EXIT_GRACE_MS = 3000;

type RunDirSpec = Pick<LaunchSpec, 'runDir'>;
export const vhostUserSocketPath = (spec: RunDirSpec): string => join(spec.runDir, 'vhost-vsock.sock');
export const vsockBackendLogPath = (spec: RunDirSpec): string => join(spec.runDir, 'vsock-device.log');
export const vsockBackendPidPath = (spec: RunDirSpec): string => join(spec.runDir, 'vsock-device.pid');
export const vsockBackendMetricsPath = (spec: RunDirSpec): string => join(spec.runDir, 'vsock-device.metrics.json');

/** The process that runs the back-end: the built JavaScript, or the TypeScript source under tsx (tests). */
export function vsockBackendCommand(): string[] {
  const self = fileURLToPath(import.meta.url);
  const fromSource = self.endsWith('.ts');
  const main = fileURLToPath(new URL(`../vsock/device/main.${fromSource ? 'ts' : 'js'}`, import.meta.url));
  return fromSource ? [process.execPath, '--import', import.meta.resolve('tsx'), main] : [process.execPath, main];
}

/** The back-end's argv for a spec (pure apart from locating the program); INVALID_ARGUMENT when the paths cannot be sockets. */
export function vsockBackendArgv(spec: Pick<LaunchSpec, 'runDir' | 'vsock'>, logLevel?: LogLevel): string[] {
  const args = formatBackendArgs({ vhostUser: vhostUserSocketPath(spec), socket: spec.vsock.socketPath, cid: spec.vsock.cid, metrics: vsockBackendMetricsPath(spec), logLevel });
  try {
    parseBackendArgs(args);
  } catch (e) {
    throw new VolantError('INVALID_ARGUMENT', `vsock device for ${spec.runDir}: ${(e as Error).message}`);
  }
  return [...vsockBackendCommand(), ...args];
}

export interface VsockBackend {
  pid: number;
  exited: Promise<VmmExit>;
  /** Re-checked before each signal. */
  isStillIt: () => boolean;
}

function isSocket(path: string): boolean {
  try {
    return lstatSync(path).isSocket();
  } catch {
    return false;
  }
}

function isBackendFor(pid: number, spec: RunDirSpec): boolean {
  const argv = readProcessArgv(pid);
  return argv !== undefined && argvContains(argv, ['--vhost-user', vhostUserSocketPath(spec)]);
}

function signal(pid: number, isStillIt: () => boolean, sig: NodeJS.Signals): void {
  if (!isStillIt()) return;
  try {
    process.kill(pid, sig);
  } catch {
    // already gone
  }
}

/** Removes what the pair leaves when it is killed instead of ending cleanly. */
export function removeBackendFiles(spec: Pick<LaunchSpec, 'runDir' | 'vsock'>): void {
  for (const path of [spec.vsock.socketPath, vhostUserSocketPath(spec), `${vhostUserSocketPath(spec)}.tmp`]) {
    try {
      removeStaleSocket(path);
    } catch {
      // not a socket: not ours to remove
    }
  }
  rmSync(vsockBackendPidPath(spec), { force: true });
}

/** Starts the back-end and waits until QEMU can connect; throws VMM_FAILED (with its log) and leaves nothing when it cannot. */
export async function startVsockBackend(spec: Pick<LaunchSpec, 'runDir' | 'vsock' | 'vmName'>, options: { logLevel?: LogLevel } = {}): Promise<VsockBackend> {
  const log = vsockBackendLogPath(spec);
  const spawned: SpawnedVmm = await spawnVmm(vsockBackendArgv(spec, options.logLevel), log);
  let gone = false;
  void spawned.exited.then(() => {
    gone = true;
  });
  const isStillIt = (): boolean => !gone;
  writeFileSync(vsockBackendPidPath(spec), `${spawned.pid}\n`);
  const deadline = Date.now() + BACKEND_READY_TIMEOUT_MS;
  for (;;) {
    if (isSocket(vhostUserSocketPath(spec))) return { pid: spawned.pid, exited: spawned.exited, isStillIt };
    if (gone || Date.now() > deadline) {
      signal(spawned.pid, isStillIt, 'SIGKILL');
      await waitForExit(spawned.exited, SIGKILL_WAIT_MS);
      removeBackendFiles(spec);
      const why = gone ? 'exited during start-up' : `did not create ${vhostUserSocketPath(spec)} within ${BACKEND_READY_TIMEOUT_MS} ms`;
      const tail = logTail(log);
      throw new VolantError('VMM_FAILED', `vsock device for VM ${spec.vmName} ${why}${tail ? `\n${tail}` : ''}`, { log });
    }
    await new Promise((r) => setTimeout(r, BACKEND_READY_POLL_MS));
  }
}

/** The back-end of an adopted VM (after a volantd restart), or undefined when it no longer runs. */
export function findVsockBackend(spec: Pick<LaunchSpec, 'runDir'>): VsockBackend | undefined {
  let pid: number;
  try {
    pid = Number(readFileSync(vsockBackendPidPath(spec), 'utf8').trim());
  } catch {
    return undefined;
  }
  if (!Number.isInteger(pid) || pid <= 0 || !isBackendFor(pid, spec)) return undefined;
  const isStillIt = (): boolean => isBackendFor(pid, spec);
  return { pid, exited: watchAdoptedPid(isStillIt), isStillIt };
}

/** Ends a back-end whose QEMU never came (a failed launch). */
export async function stopVsockBackend(backend: VsockBackend, spec: Pick<LaunchSpec, 'runDir' | 'vsock'>): Promise<void> {
  signal(backend.pid, backend.isStillIt, 'SIGKILL');
  await waitForExit(backend.exited, SIGKILL_WAIT_MS);
  removeBackendFiles(spec);
}

/**
 * The exit of a VMM and its back-end as one: resolves once both are gone and their files are
 * removed. A back-end that dies first takes the VMM with it, and the exit says so (`detail`).
 */
export function pairedExit(
  vmm: { pid: number; exited: Promise<VmmExit>; isStillIt: () => boolean },
  backend: VsockBackend,
  spec: Pick<LaunchSpec, 'runDir' | 'vsock'>,
): Promise<VmmExit> {
  return (async () => {
    const first = await Promise.race([vmm.exited.then((x) => ({ who: 'vmm' as const, x })), backend.exited.then((x) => ({ who: 'backend' as const, x }))]);
    let exit: VmmExit;
    // A back-end that ended cleanly (code 0) saw QEMU close its connection: QEMU is on its way out
    // and its own exit, a moment later, is the pair's.
    const vmmAfterAll = first.who === 'backend' && first.x.code === 0 ? await waitForExit(vmm.exited, BACKEND_EXIT_GRACE_MS) : undefined;
    if (vmmAfterAll) {
      exit = vmmAfterAll;
    } else if (first.who === 'backend') {
      signal(vmm.pid, vmm.isStillIt, 'SIGKILL');
      const vmmExit = (await waitForExit(vmm.exited, SIGKILL_WAIT_MS)) ?? { code: null, signal: 'SIGKILL' as const };
      const how = first.x.signal ? `signal ${first.x.signal}` : first.x.code === null ? 'an unknown status' : `code ${first.x.code}`;
      exit = { ...vmmExit, signal: vmmExit.signal ?? 'SIGKILL', detail: `its vsock device (pid ${backend.pid}) exited with ${how}, so the VMM was killed` };
    } else {
      exit = first.x;
      if (!(await waitForExit(backend.exited, BACKEND_EXIT_GRACE_MS))) {
        signal(backend.pid, backend.isStillIt, 'SIGKILL');
        await waitForExit(backend.exited, SIGKILL_WAIT_MS);
      }
    }
    removeBackendFiles(spec);
    return exit;
  })();
}

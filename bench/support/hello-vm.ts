/**
 * The VM the VM benches measure: examples/hello built, installed and created through volantd for
 * real in an e2e environment (test/support/e2e-env.ts), bridged, under QEMU (TCG here).
 */

import { join } from 'node:path';
import type { E2eEnv } from '../../test/support/e2e-env.js';
import { REPO_ROOT } from '../../test/support/kernel.js';

const BUILD_TIMEOUT_MS = 300_000;
const CREATE_TIMEOUT_MS = 360_000;

export interface HelloVm {
  name: string;
  /** Its address on the bridge (IPAM). */
  ip: string;
  /** Its run directory (`vsock.sock`, `vsock-device.pid`, …). */
  runDir: string;
}

/** Builds and installs examples/hello, creates VM `name` from it (tracked for the env's cleanup). */
export async function createHelloVm(env: E2eEnv, name: string, memoryMb = 1024): Promise<HelloVm> {
  const build = join(env.stateDir, 'hello-build');
  const b = await env.volar(['plugins', 'build', join(REPO_ROOT, 'examples', 'hello'), '-o', build, '--kernel', env.kernel.vmlinuz, '--modules', env.kernel.modulesDir], { timeoutMs: BUILD_TIMEOUT_MS });
  if (b.code !== 0) throw new Error(`plugin build failed: ${b.stderr}`);
  const i = await env.volar(['plugins', 'install', build]);
  if (i.code !== 0) throw new Error(`plugin install failed: ${i.stderr}`);
  const c = await env.volar(['vms', 'create', name, '--plugin', 'hello', '--memory', String(memoryMb)], { timeoutMs: CREATE_TIMEOUT_MS });
  if (c.code !== 0) throw new Error(`create failed: ${c.stderr}${c.stdout}`);
  const vm = (await env.api('GET', `/api/v1/vms/${name}`)).json as { ip: string; pid?: number };
  if (vm.pid) env.track(vm.pid);
  return { name, ip: vm.ip, runDir: join(env.stateDir, 'run', 'vms', name) };
}

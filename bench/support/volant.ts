/**
 * What the VM benchmarks (bench/boot, bench/density) share about driving a real volantd: build
 * examples/hello in each image layout and install each as its own plugin, create a VM and wait
 * for its first proxied 200, read kestrel's /healthz, read a QEMU process's memory, delete.
 *
 * Layouts: `shared` (the runtime on a read-only image every VM maps) and `single` (everything in
 * one initramfs), built with `buildPlugin` (what `volar plugins build --layout` runs), the shared
 * runtime image into volantd's `<state_dir>/runtimes` so no create pays for building it.
 */

import { cpSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { AgentClient } from '../../host/agent/client.js';
import { type BuildResult, buildPlugin, type Layout } from '../../initramfs/build.js';
import { MIN_MEMORY_MB } from '../../host/vmm/launcher.js';
import type { E2eEnv } from '../../test/support/e2e-env.js';
import { REPO_ROOT } from '../../test/support/kernel.js';
import { isRoot, qemuAvailable } from '../../test/support/qemu.js';
import { integerFlag } from './args.js';

export type { Layout } from '../../initramfs/build.js';

/** Every VM of the VM benchmarks gets this much (`--memory`): a single-file image unpacks its 92 MB runtime into RAM and needs ~320 MiB. */
const DEFAULT_MEMORY_MB = 512;
const MAX_MEMORY_MB = 4096;
export const VM_CPUS = 1;

/** Ends a VM benchmark with its `skipped` line unless it can run here (root for namespaces, QEMU). */
export function skipUnlessVmsCanRun(bench: string): void {
  const skip = !isRoot() ? 'needs root (network namespaces, bridges, taps)' : !qemuAvailable() ? 'qemu-system-x86_64 is not installed' : undefined;
  if (!skip) return;
  console.log(`bench/${bench} skipped: ${skip}`);
  console.log(JSON.stringify({ bench, skipped: skip }));
  process.exit(0);
}

/** `--memory MiB` for every VM, MIN_MEMORY_MB..MAX_MEMORY_MB. */
export function memoryFlag(argv: readonly string[]): number {
  const mb = integerFlag(argv, '--memory', DEFAULT_MEMORY_MB, MAX_MEMORY_MB);
  if (mb < MIN_MEMORY_MB) throw new Error(`--memory takes at least ${MIN_MEMORY_MB} MiB, got ${mb}`);
  return mb;
}

export const CREATE_TIMEOUT_MS = 360_000;
const FIRST_200_TIMEOUT_MS = 60_000;
const PROXY_RETRY_MS = 50;
const AGENT_TIMEOUT_MS = 10_000;
/** The workload path every layout's VM is asked for (examples/hello's `/hello`). */
export const HELLO_PATH = '/hello';

/** The plugin name a layout's copy of examples/hello is installed under. */
export const helloPlugin = (layout: Layout): string => (layout === 'shared' ? 'hello' : 'hello-single');

export interface BuiltPlugin {
  layout: Layout;
  plugin: string;
  /** The build output folder (initramfs.img, plugin.json). */
  dir: string;
  result: BuildResult;
}

/** Builds examples/hello in `layout` (a copy renamed per layout, so both can be installed at once) and installs it. */
export async function buildAndInstallHello(env: E2eEnv, layout: Layout, workDir: string): Promise<BuiltPlugin> {
  const plugin = helloPlugin(layout);
  const src = join(workDir, `src-${plugin}`);
  cpSync(join(REPO_ROOT, 'examples', 'hello'), src, { recursive: true, filter: (p) => !p.includes('/build') });
  const manifestFile = join(src, 'plugin.json');
  const manifest = JSON.parse(readFileSync(manifestFile, 'utf8')) as { name: string };
  manifest.name = plugin;
  writeFileSync(manifestFile, `${JSON.stringify(manifest, null, 2)}\n`);
  const dir = join(workDir, `build-${plugin}`);
  const result = await buildPlugin({ pluginDir: src, outDir: dir, kernelVersion: env.kernel.version, modulesDir: env.kernel.modulesDir, layout, runtimeDir: join(env.stateDir, 'runtimes') });
  const inst = await env.volar(['plugins', 'install', dir]);
  if (inst.code !== 0) throw new Error(`volar plugins install ${plugin} failed (${inst.code}): ${inst.stderr || inst.stdout}`);
  return { layout, plugin, dir, result };
}

export interface CreatedVm {
  name: string;
  /** QEMU's pid. */
  pid: number;
  /** ms from the POST to its answer. */
  createMs: number;
}

/** `POST /api/v1/vms` (waits for kestrel's health); throws with volantd's answer unless 201. */
export async function createVm(env: E2eEnv, body: { name: string; plugin: string; cpus: number; memory_mb: number }): Promise<CreatedVm> {
  const started = performance.now();
  const created = await Promise.race([
    env.api('POST', '/api/v1/vms', body),
    sleep(CREATE_TIMEOUT_MS).then(() => {
      throw new Error(`POST /api/v1/vms ${body.name} did not answer within ${CREATE_TIMEOUT_MS} ms`);
    }),
  ]);
  const createMs = performance.now() - started;
  const pid = (created.json as { pid?: number } | undefined)?.pid;
  if (typeof pid === 'number') env.track(pid);
  if (created.status !== 201) throw new Error(`POST /api/v1/vms ${body.name} answered ${created.status}: ${created.text.slice(0, 2000)}`);
  if (typeof pid !== 'number') throw new Error(`POST /api/v1/vms ${body.name} answered without a pid: ${created.text.slice(0, 500)}`);
  return { name: body.name, pid, createMs };
}

/** Polls the VM's workload through volantd's ingress until it answers 200. */
export async function waitProxied200(env: E2eEnv, name: string): Promise<void> {
  const deadline = Date.now() + FIRST_200_TIMEOUT_MS;
  for (;;) {
    const r = await env.api('GET', `/api/v1/vms/${name}/proxy${HELLO_PATH}`).catch((e: Error) => ({ status: 0, text: e.message }));
    if (r.status === 200) return;
    if (Date.now() > deadline) throw new Error(`no 200 from /api/v1/vms/${name}/proxy${HELLO_PATH} within ${FIRST_200_TIMEOUT_MS} ms (last: ${r.status} ${r.text.slice(0, 300)})`);
    await sleep(PROXY_RETRY_MS);
  }
}

export async function deleteVm(env: E2eEnv, name: string): Promise<void> {
  const d = await env.api('DELETE', `/api/v1/vms/${name}?force=1`);
  if (d.status !== 204) console.error(`warning: DELETE ${name} answered ${d.status}: ${d.text}`);
}

/** The VM's serial console log (kernel and kestrel lines). */
export const serialLogOf = (env: E2eEnv, name: string): string => join(env.stateDir, 'vms', name, 'serial.log');

/** kestrel's /healthz, asked over the VM's hybrid vsock socket (the agent transport volantd uses under QEMU). */
export async function kestrelHealth(env: E2eEnv, name: string): Promise<Record<string, unknown>> {
  const client = new AgentClient({ kind: 'vsock', socketPath: join(env.stateDir, 'run', 'vms', name, 'vsock.sock') });
  try {
    const res = await client.request('/healthz', { timeoutMs: AGENT_TIMEOUT_MS });
    const text = await res.body.text();
    if (res.statusCode !== 200) throw new Error(`kestrel /healthz of ${name} answered ${res.statusCode}`);
    return JSON.parse(text) as Record<string, unknown>;
  } finally {
    await client.close();
  }
}

/**
 * Starts a real volantd (`runDaemon`) for API, orchestrator and CLI tests: a private state dir
 * under the OS temp dir, a real SQLite store, the API on 127.0.0.1:<free port>, and the
 * `FakeVmmLauncher` TEST DOUBLE in place of a VMM (see orchestrator-vmm-double.ts). Also writes a
 * plugin build directory (`plugin.json` + `initramfs.img`) the tests install.
 */

import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Daemon, type DaemonOptions, runDaemon } from '../../host/daemon/daemon.js';
import { silentLogger } from '../../host/log/logger.js';
import type { NetworkMode } from '../../shared/schema/manifest.js';
import { FakeVmmLauncher } from './orchestrator-vmm-double.js';

export interface Harness {
  dir: string;
  stateDir: string;
  daemon: Daemon;
  launcher: FakeVmmLauncher;
  url: string;
  /** fetch against the API with the daemon's token (if any) unless `token` is given ('' = none). */
  api(path: string, init?: RequestInit & { token?: string; json?: unknown }): Promise<Response>;
  pluginDir(name: string, opts?: PluginBuildOptions): string;
  close(): Promise<void>;
}

export interface PluginBuildOptions {
  mode?: NetworkMode;
  /** Outbound through the egress proxy, to example.com. */
  allowOutbound?: boolean;
  /** An allowlist without outbound access (the VM is confined to nothing at all). */
  confined?: boolean;
}

export function writePluginBuild(dir: string, name: string, opts: PluginBuildOptions = {}): string {
  const out = join(dir, `build-${name}`);
  mkdirSync(out, { recursive: true });
  const manifest = {
    name,
    version: '1.0.0',
    description: 'test plugin',
    network: {
      mode: opts.mode ?? 'vsock',
      ...(opts.allowOutbound ? { proxy: { allow_outbound: true, allowed_domains: ['example.com'] } } : opts.confined ? { proxy: { allowed_domains: ['example.com'] } } : {}),
    },
    workload: { type: 'http', entrypoint: ['/app/server'], http: { port: 3000 } },
  };
  writeFileSync(join(out, 'plugin.json'), JSON.stringify(manifest));
  writeFileSync(join(out, 'initramfs.img'), Buffer.from(`fake initramfs for ${name}\n`));
  return out;
}

export async function startHarness(opts: Partial<DaemonOptions> & { tag: string; stateDir?: string; launcher?: FakeVmmLauncher } = { tag: 'x' }): Promise<Harness> {
  const dir = opts.stateDir ? join(opts.stateDir, '..') : mkdtempSync(join(tmpdir(), `volant-${opts.tag}-${process.pid}-`));
  const stateDir = opts.stateDir ?? join(dir, 'state');
  const kernel = join(dir, 'vmlinuz');
  writeFileSync(kernel, 'not a kernel: the VMM is a test double\n');
  const launcher = opts.launcher ?? new FakeVmmLauncher();
  const daemon = await runDaemon({
    configFile: null,
    env: {},
    stateDir,
    listen: '127.0.0.1:0',
    kernelPath: kernel,
    healthTimeoutMs: 3000,
    logger: silentLogger(),
    // Never the machine's own network: tests that need taps pass a netns-backed one.
    network: null,
    ...opts,
    launcher,
  });
  const url = `http://${daemon.address}`;
  return {
    dir,
    stateDir,
    daemon,
    launcher,
    url,
    api(path, init = {}) {
      const headers = new Headers(init.headers);
      const token = init.token ?? daemon.token;
      if (token) headers.set('authorization', `Bearer ${token}`);
      let body = init.body;
      if (init.json !== undefined) {
        headers.set('content-type', 'application/json');
        body = JSON.stringify(init.json);
      }
      return fetch(`${url}${path}`, { ...init, headers, body });
    },
    pluginDir: (name, o) => writePluginBuild(dir, name, o),
    async close() {
      for (const vm of daemon.orchestrator.list()) await daemon.orchestrator.delete(vm.name, { force: true }).catch(() => undefined);
      await daemon.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

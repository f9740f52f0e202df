/**
 * Private network namespaces for tests that need real bridges, taps and firewall rules. Each
 * namespace gets a unique name (area + pid + counter), starts with only `lo` (up), and is
 * deleted by `dispose()` together with every process the test started in it via `spawn`.
 * Nothing here touches the machine's own namespace.
 */

import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { ExecRunner } from '../../host/network/runner.js';

export const NETNS_COMMAND_TIMEOUT_MS = 20_000;

let counter = 0;

export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Why root-only tests must skip here, or false when they can run. */
export function netnsSkipReason(): string | false {
  if (process.platform !== 'linux') return 'network namespaces need Linux';
  if (process.getuid?.() !== 0) return 'needs root (creates network namespaces, bridges and firewall rules)';
  return false;
}

/** Runs argv (no shell); never throws on a non-zero exit (127 when it could not run or timed out). */
export function runCommand(argv: string[], opts: { timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<ExecResult> {
  return new Promise((resolve) => {
    execFile(argv[0]!, argv.slice(1), { timeout: opts.timeoutMs ?? NETNS_COMMAND_TIMEOUT_MS, encoding: 'utf8', maxBuffer: 64 << 20, env: opts.env ?? process.env }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 127) : 0;
      resolve({ code, stdout, stderr: stderr || (err && code === 127 ? String(err.message) : '') });
    });
  });
}

export class NetNs {
  private readonly children = new Set<ChildProcess>();
  /** Prefix that runs a command inside this namespace. */
  readonly prefix: string[];
  /** A CommandRunner acting inside this namespace (for NetworkManager). */
  readonly runner: ExecRunner;

  constructor(readonly name: string) {
    this.prefix = ['ip', 'netns', 'exec', name];
    this.runner = new ExecRunner({ prefix: this.prefix });
  }

  /** Runs argv inside the namespace; never throws on a non-zero exit. */
  exec(argv: string[]): Promise<ExecResult> {
    return runCommand([...this.prefix, ...argv]);
  }

  /** Runs argv inside the namespace and returns stdout; throws with stderr on failure. */
  async run(argv: string[]): Promise<string> {
    const r = await this.exec(argv);
    if (r.code !== 0) throw new Error(`[${this.name}] ${argv.join(' ')} exited ${r.code}: ${r.stderr.trim()}`);
    return r.stdout;
  }

  /** Starts a long-running process inside the namespace; it is killed by dispose(). */
  spawn(argv: string[]): ChildProcess {
    const child = spawn(this.prefix[0]!, [...this.prefix.slice(1), ...argv], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.children.add(child);
    child.once('exit', () => this.children.delete(child));
    return child;
  }

  async dispose(): Promise<void> {
    for (const child of this.children) {
      child.kill('SIGKILL');
      await new Promise((r) => (child.exitCode !== null || child.signalCode !== null ? r(undefined) : child.once('exit', r)));
    }
    await runCommand(['ip', 'netns', 'del', this.name]);
  }
}

/** Creates `vt-<area>-<pid>-<n>` with `lo` up. */
export async function createNetns(area: string): Promise<NetNs> {
  const name = `vt-${area}-${process.pid}-${counter++}`;
  const r = await runCommand(['ip', 'netns', 'add', name]);
  if (r.code !== 0) throw new Error(`ip netns add ${name} failed: ${r.stderr.trim()}`);
  const ns = new NetNs(name);
  try {
    await ns.run(['ip', 'link', 'set', 'lo', 'up']);
  } catch (e) {
    await ns.dispose();
    throw e;
  }
  return ns;
}

/**
 * A veth pair with one end (`inner`) moved into `peer` and the other (`outer`) left in `ns`.
 * Use it to pretend a VM sits behind a bridge port, or to link a namespace to an "internet".
 */
export async function linkNamespaces(ns: NetNs, outer: string, peer: NetNs, inner: string): Promise<void> {
  await ns.run(['ip', 'link', 'add', outer, 'type', 'veth', 'peer', 'name', inner]);
  await ns.run(['ip', 'link', 'set', inner, 'netns', peer.name]);
}

/** Runs `fn` with fresh namespaces and deletes them afterwards, also when `fn` fails. */
export async function withNetns<T>(area: string, count: number, fn: (...ns: NetNs[]) => Promise<T>): Promise<T> {
  const created: NetNs[] = [];
  try {
    for (let i = 0; i < count; i++) created.push(await createNetns(area));
    return await fn(...created);
  } finally {
    for (const ns of created.reverse()) await ns.dispose();
  }
}

/**
 * The end-to-end environment: volantd running for real inside a private network namespace (its
 * own vbr0, taps and NAT), VMs booted by its QEMU launcher (TCG here), and an "outside world" in a
 * second namespace linked by a veth pair, with a DNS server and HTTP/HTTPS servers on a test-only
 * CA. Nothing on the machine's own network changes.
 *
 *   [ test process ] --unix socket--> volantd (ns A: vbr0 192.168.127.1/24, veth 10.99.0.1/24;
 *                                              TCP 127.0.0.1:8080 inside ns A, bearer token)
 *                                         │ taps → QEMU guests (kestrel + workload)
 *                                         └─ veth ── ns B: 10.99.0.2 (DNS :53, HTTP :80, HTTPS :443)
 *
 * The host namespace's resolv.conf (`/etc/netns/<ns>/resolv.conf`, which `ip netns exec` puts
 * in place of /etc/resolv.conf) names the world's DNS server, as a real host names its own
 * resolvers: volantd hands guests that resolver by default.
 *
 * What must hold: everything made here is named with this process's pid and recorded in a state
 * file, so `dispose()` (also on SIGINT/SIGTERM) removes it, and the next run removes what an
 * interrupted run left behind (its processes by PID, its namespaces, its files).
 */

import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent, request } from 'undici';
import { stringify as toYaml } from 'yaml';
import type { DnsRecords } from './dns-server.js';
import { REPO_ROOT, testKernel } from './kernel.js';
import { createNetns, linkNamespaces, type NetNs, runCommand } from './netns.js';
import { createTestCa, type TestCa } from './tls-ca.js';
import { isAlive, pidsMentioning } from './vmm-procs.js';

export const WORLD_IP = '10.99.0.2';
export const UPLINK_IP = '10.99.0.1';
export const WORLD_CIDR = '10.99.0.0/24';
/** A private address outside WORLD_CIDR: names resolving here must be refused by the egress proxy. */
export const PRIVATE_TARGET_IP = '10.99.1.5';
export const ALLOWED_NAME = 'allowed.test';
export const DENIED_NAME = 'denied.test';
/** Allowed by the example plugin's `*.allowed.test` rule, but resolves to a private address. */
export const PRIVATE_NAME = 'private.allowed.test';

const LEFTOVERS_DIR = join(tmpdir(), 'volant-e2e');
const API_READY_TIMEOUT_MS = 30_000;
const WORLD_READY_TIMEOUT_MS = 30_000;
const VOLANTD_STOP_TIMEOUT_MS = 15_000;
const VOLAR_TIMEOUT_MS = 120_000;
/** A cold build strips node and writes the runtime image: slow on a busy 2-core machine. */
const PLUGIN_BUILD_TIMEOUT_MS = 300_000;

interface Leftovers {
  pids: number[];
  netns: string[];
  dirs: string[];
}

/** Removes what earlier, interrupted runs recorded and did not clean (their owner is gone). */
export async function cleanLeftovers(): Promise<void> {
  if (!existsSync(LEFTOVERS_DIR)) return;
  for (const name of readdirSync(LEFTOVERS_DIR)) {
    const owner = Number(name.replace(/\.json$/, ''));
    if (!Number.isInteger(owner) || isAlive(owner)) continue;
    const file = join(LEFTOVERS_DIR, name);
    try {
      const left = JSON.parse(readFileSync(file, 'utf8')) as Leftovers;
      for (const pid of left.pids) if (isAlive(pid)) process.kill(pid, 'SIGKILL');
      for (const ns of left.netns) await runCommand(['ip', 'netns', 'del', ns]);
      for (const dir of left.dirs) rmSync(dir, { recursive: true, force: true });
    } catch {
      // unreadable record: nothing we can safely act on
    }
    rmSync(file, { force: true });
  }
}

export interface E2eEnv {
  hostNs: NetNs;
  worldNs: NetNs;
  stateDir: string;
  apiSocket: string;
  configFile: string;
  ca: TestCa;
  kernel: { vmlinuz: string; modulesDir: string; version: string };
  /** An undici dispatcher that reaches the API's Unix socket. */
  dispatcher: Agent;
  /** Calls the API over its Unix socket (no token needed). */
  api(method: string, path: string, body?: unknown): Promise<{ status: number; json: unknown; text: string }>;
  /** volantd's TCP listener inside its namespace, and the token it needs (`<state_dir>/api-token`). */
  tcp: { address: string; token: () => string };
  /** Runs `volar` as a user would (outside the namespace; the API is a Unix socket). */
  volar(args: string[], opts?: { timeoutMs?: number }): Promise<{ code: number; stdout: string; stderr: string }>;
  /**
   * `volar plugins build DIR -o OUT` for the test kernel, as a user on this host would: layout
   * `shared` (the default) puts the runtime image straight into volantd's `<state_dir>/runtimes`,
   * unless `volantdBuildsRuntime`, where volantd must find or build it itself at install.
   */
  buildPlugin(dir: string, out: string, opts?: { layout?: 'shared' | 'single'; volantdBuildsRuntime?: boolean }): Promise<{ code: number; stdout: string; stderr: string }>;
  /** Runs argv inside volantd's namespace. */
  inHost(argv: string[]): Promise<{ code: number; stdout: string; stderr: string }>;
  startVolantd(): Promise<number>;
  stopVolantd(signal?: NodeJS.Signals): Promise<void>;
  volantdPid(): number | undefined;
  /** Records a PID the environment must kill on dispose (e.g. QEMU processes it learns of). */
  track(pid: number): void;
  dispose(): Promise<void>;
}

/** volantd's TCP listener inside its own namespace (nothing else listens there). */
export const API_TCP_ADDRESS = '127.0.0.1:8080';

export async function startE2eEnv(opts: { extraConfig?: Record<string, unknown>; records?: DnsRecords; dhcp?: boolean } = {}): Promise<E2eEnv> {
  await cleanLeftovers();
  mkdirSync(LEFTOVERS_DIR, { recursive: true });
  const leftovers: Leftovers = { pids: [], netns: [], dirs: [] };
  const record = (): void => writeFileSync(join(LEFTOVERS_DIR, `${process.pid}.json`), JSON.stringify(leftovers));
  const stateDir = join(tmpdir(), `volant-e2e-state-${process.pid}-${Date.now()}`);
  mkdirSync(stateDir, { recursive: true });
  leftovers.dirs.push(stateDir);
  record();

  const kernel = await testKernel();
  const hostNs = await createNetns('e2eh');
  leftovers.netns.push(hostNs.name);
  const netnsEtc = join('/etc/netns', hostNs.name);
  leftovers.dirs.push(netnsEtc);
  mkdirSync(netnsEtc, { recursive: true });
  writeFileSync(join(netnsEtc, 'resolv.conf'), `# volant e2e: the host namespace's resolver is the world's DNS server\nnameserver ${WORLD_IP}\n`);
  const worldNs = await createNetns('e2ew');
  leftovers.netns.push(worldNs.name);
  record();
  const ca = createTestCa('volant-e2e');

  let volantd: ReturnType<NetNs['spawn']> | undefined;
  let disposed = false;
  const dispose = async (): Promise<void> => {
    if (disposed) return;
    disposed = true;
    // volantd leaves VMs running when it stops (for re-adoption), so delete them first, and then
    // end any VMM that still names our state dir (one a failed delete or a crash left behind).
    await deleteAllVms().catch(() => undefined);
    await stopVolantd('SIGTERM').catch(() => undefined);
    for (const pid of pidsMentioning(stateDir)) leftovers.pids.push(pid);
    for (const pid of leftovers.pids) if (isAlive(pid)) process.kill(pid, 'SIGKILL');
    await hostNs.dispose();
    await worldNs.dispose();
    rmSync(netnsEtc, { recursive: true, force: true });
    ca.cleanup();
    if (!process.env.VOLANT_E2E_KEEP) rmSync(stateDir, { recursive: true, force: true });
    rmSync(join(LEFTOVERS_DIR, `${process.pid}.json`), { force: true });
  };
  const onSignal = (): void => {
    void dispose().finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  try {
    await linkNamespaces(hostNs, 've-up', worldNs, 've-world');
    await hostNs.run(['ip', 'addr', 'add', `${UPLINK_IP}/24`, 'dev', 've-up']);
    await hostNs.run(['ip', 'link', 'set', 've-up', 'up']);
    await worldNs.run(['ip', 'addr', 'add', `${WORLD_IP}/24`, 'dev', 've-world']);
    await worldNs.run(['ip', 'link', 'set', 've-world', 'up']);

    const leaf = ca.issue([ALLOWED_NAME, DENIED_NAME, PRIVATE_NAME]);
    const certFile = join(stateDir, 'world-cert.pem');
    const keyFile = join(stateDir, 'world-key.pem');
    writeFileSync(certFile, leaf.cert);
    writeFileSync(keyFile, leaf.key, { mode: 0o600 });
    writeFileSync(join(stateDir, 'world-ca.pem'), ca.ca);
    const records: DnsRecords = opts.records ?? {
      [ALLOWED_NAME]: { a: [WORLD_IP] },
      [DENIED_NAME]: { a: [WORLD_IP] },
      [PRIVATE_NAME]: { a: [PRIVATE_TARGET_IP] },
    };
    const world = worldNs.spawn([process.execPath, '--import', 'tsx', join(REPO_ROOT, 'test', 'support', 'world-server.ts'), '--ip', WORLD_IP, '--records', JSON.stringify(records), '--cert', certFile, '--key', keyFile]);
    await waitForLine(world, /world ready/, WORLD_READY_TIMEOUT_MS, 'world server');

    const configFile = join(stateDir, 'volantd.yaml');
    const apiSocket = join(stateDir, 'api.sock');
    const config = {
      state_dir: stateDir,
      runtime_dir: join(stateDir, 'run'),
      listen: API_TCP_ADDRESS,
      api: { socket: apiSocket },
      kernel: { path: kernel.vmlinuz, modules_dir: kernel.modulesDir },
      vmm: { prefer: 'qemu', accel: 'tcg' },
      egress: { dns_servers: [WORLD_IP], allow_private: [WORLD_CIDR] },
      ...opts.extraConfig,
    };
    writeFileSync(configFile, toYaml(config));

    const dispatcher = new Agent({ connect: { socketPath: apiSocket } });
    const env: E2eEnv = {
      dispatcher,
      hostNs,
      worldNs,
      stateDir,
      apiSocket,
      configFile,
      ca,
      kernel,
      async api(method, path, body) {
        const res = await request(`http://localhost${path}`, {
          method: method as 'GET',
          dispatcher,
          headers: body === undefined ? {} : { 'content-type': 'application/json' },
          body: body === undefined ? undefined : JSON.stringify(body),
        });
        const text = await res.body.text();
        let json: unknown;
        try {
          json = JSON.parse(text);
        } catch {
          json = undefined;
        }
        return { status: res.statusCode, json, text };
      },
      tcp: { address: API_TCP_ADDRESS, token: () => readFileSync(join(stateDir, 'api-token'), 'utf8').trim() },
      volar(args, o = {}) {
        return runCommand([process.execPath, join(REPO_ROOT, 'bin', 'volar.js'), '--api', `unix:${apiSocket}`, ...args], { timeoutMs: o.timeoutMs ?? VOLAR_TIMEOUT_MS });
      },
      buildPlugin(dir, out, o = {}) {
        const args = ['plugins', 'build', dir, '-o', out, '--kernel', kernel.vmlinuz, '--modules', kernel.modulesDir, '--layout', o.layout ?? 'shared'];
        if (!o.volantdBuildsRuntime) args.push('--runtime-dir', join(stateDir, 'runtimes'));
        return env.volar(args, { timeoutMs: PLUGIN_BUILD_TIMEOUT_MS });
      },
      inHost(argv) {
        return hostNs.exec(argv);
      },
      startVolantd,
      stopVolantd,
      volantdPid: () => volantd?.pid,
      track(pid) {
        leftovers.pids.push(pid);
        record();
      },
      dispose,
    };

    // --dhcp: Volant's own DHCP server (dnsmasq) on vbr0, as a daemon of this namespace.
    const setup = await hostNs.exec([process.execPath, join(REPO_ROOT, 'bin', 'volar.js'), 'setup', '--no-systemd', '--config', configFile, ...(opts.dhcp ? ['--dhcp'] : [])]);
    if (setup.code !== 0) throw new Error(`volar setup failed (${setup.code}): ${setup.stderr || setup.stdout}`);
    await startVolantd();
    return env;

    async function startVolantd(): Promise<number> {
      if (existsSync(apiSocket)) rmSync(apiSocket);
      const child = hostNs.spawn([process.execPath, join(REPO_ROOT, 'bin', 'volantd.js'), '--config', configFile]);
      volantd = child;
      let log = '';
      const append = (c: Buffer): void => {
        log += c.toString();
        if (process.env.VOLANT_E2E_DEBUG) process.stderr.write(`[volantd] ${c}`);
      };
      child.stdout?.on('data', append);
      child.stderr?.on('data', append);
      writeFileSync(join(stateDir, 'volantd.out'), '');
      child.once('exit', () => writeFileSync(join(stateDir, 'volantd.out'), log));
      leftovers.pids.push(child.pid!);
      record();
      const deadline = Date.now() + API_READY_TIMEOUT_MS;
      for (;;) {
        if (child.exitCode !== null) throw new Error(`volantd exited with ${child.exitCode}: ${log.slice(-2000)}`);
        try {
          const h = await env.api('GET', '/api/v1/health');
          if (h.status === 200) return child.pid!;
        } catch {
          // not listening yet
        }
        if (Date.now() > deadline) throw new Error(`volantd did not answer /api/v1/health within ${API_READY_TIMEOUT_MS} ms: ${log.slice(-2000)}`);
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  } catch (e) {
    await dispose();
    throw e;
  }

  async function deleteAllVms(): Promise<void> {
    if (!volantd || volantd.exitCode !== null) return;
    const dispatcher = new Agent({ connect: { socketPath: join(stateDir, 'api.sock') } });
    try {
      const list = await request('http://localhost/api/v1/vms', { dispatcher });
      const { vms } = (await list.body.json()) as { vms: { name: string }[] };
      for (const vm of vms) await (await request(`http://localhost/api/v1/vms/${vm.name}?force=1`, { method: 'DELETE', dispatcher })).body.dump();
    } finally {
      await dispatcher.close();
    }
  }

  async function stopVolantd(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    const child = volantd;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    // `ip netns exec` execs the program, so this PID is volantd itself.
    child.kill(signal);
    const timer = setTimeout(() => child.kill('SIGKILL'), VOLANTD_STOP_TIMEOUT_MS);
    await new Promise((r) => child.once('exit', r));
    clearTimeout(timer);
  }
}

function waitForLine(child: ReturnType<NetNs['spawn']>, pattern: RegExp, timeoutMs: number, what: string): Promise<void> {
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`${what} not ready within ${timeoutMs} ms: ${out.slice(-1000)}`)), timeoutMs);
    const onData = (c: Buffer): void => {
      out += c.toString();
      if (pattern.test(out)) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${what} exited (${code}): ${out.slice(-1000)}`));
    });
  });
}

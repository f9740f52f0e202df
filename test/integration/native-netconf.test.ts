/**
 * The addon's network and hostname calls against a real kernel, inside namespaces this test
 * creates: a network namespace `native-<pid>` with a veth pair (this host's kernel has no dummy driver) (for interface up, address,
 * default route) and a fresh UTS namespace (for sethostname). The calls run in a child process
 * entered into the namespace (`ip netns exec` / `unshare --uts`); `ip -j` then shows what the
 * kernel really holds. Needs root; skips otherwise.
 */

import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import os from 'node:os';
import { after, before, describe, test } from 'node:test';
import { skipUnlessStrict } from '../support/strict.js';

const isRoot = process.getuid?.() === 0;
const skip = skipUnlessStrict(isRoot ? false : 'needs root (network and UTS namespaces)');
const NS = `native-${process.pid}`;
const DEV = 'nv0';
const PEER = 'nv1';
const INDEX_URL = new URL('../../native/index.ts', import.meta.url).href;
const CHILD_TIMEOUT_MS = 30_000;

type Call = [fn: 'interfaceUp' | 'setInterfaceAddress' | 'addDefaultRoute' | 'sethostname', ...args: unknown[]];
type Outcome = { ok: true; hostname: string } | { ok: false; code: string; errno: number; syscall: string; message: string };

// Runs in the child: performs each call in order and reports one outcome per call.
const CHILD = `
import os from 'node:os';
const native = await import(process.env.NATIVE_INDEX_URL);
const allowed = new Set(['interfaceUp', 'setInterfaceAddress', 'addDefaultRoute', 'sethostname']);
const out = [];
for (const [fn, ...args] of JSON.parse(process.argv[1])) {
  if (!allowed.has(fn)) throw new Error('not allowed here: ' + fn);
  try { native[fn](...args); out.push({ ok: true, hostname: os.hostname() }); }
  catch (e) { out.push({ ok: false, code: e.code, errno: e.errno, syscall: e.syscall, message: e.message }); }
}
process.stdout.write(JSON.stringify(out));
`;

function runCalls(prefix: string[], calls: Call[]): Outcome[] {
  const argv = [...prefix, process.execPath, '--import', 'tsx', '--input-type=module', '-e', CHILD, JSON.stringify(calls)];
  const result = spawnSync(argv[0]!, argv.slice(1), {
    encoding: 'utf8',
    timeout: CHILD_TIMEOUT_MS,
    env: { ...process.env, NATIVE_INDEX_URL: INDEX_URL },
  });
  assert.equal(result.status, 0, `child failed: ${result.stderr}`);
  return JSON.parse(result.stdout) as Outcome[];
}

const inNetns = (calls: Call[]) => runCalls(['ip', 'netns', 'exec', NS], calls);

function ipJson(...args: string[]): unknown {
  return JSON.parse(execFileSync('ip', ['-n', NS, '-j', ...args], { encoding: 'utf8' }) || '[]');
}

interface AddrInfo {
  family: string;
  local: string;
  prefixlen: number;
}

function inetAddresses(): string[] {
  const [link] = ipJson('addr', 'show', 'dev', DEV) as { addr_info: AddrInfo[] }[];
  return (link?.addr_info ?? []).filter((a) => a.family === 'inet').map((a) => `${a.local}/${a.prefixlen}`);
}

function routes(): { dst: string; gateway?: string; dev: string }[] {
  return ipJson('-4', 'route', 'show') as { dst: string; gateway?: string; dev: string }[];
}

function expectError(outcome: Outcome | undefined, code: string, syscall: string): void {
  assert.ok(outcome && !outcome.ok, `expected ${code}, got ${JSON.stringify(outcome)}`);
  assert.equal(outcome.code, code);
  assert.equal(outcome.syscall, syscall);
  assert.equal(typeof outcome.errno, 'number');
  assert.ok(outcome.errno < 0);
}

describe('interface, address and default route in a network namespace', { skip }, () => {
  before(() => {
    execFileSync('ip', ['netns', 'add', NS]);
    execFileSync('ip', ['-n', NS, 'link', 'add', DEV, 'type', 'veth', 'peer', 'name', PEER]);
    execFileSync('ip', ['-n', NS, 'link', 'set', PEER, 'up']);
  });
  after(() => {
    spawnSync('ip', ['netns', 'del', NS]);
  });

  test('interfaceUp brings lo and the veth up (and is idempotent)', () => {
    const outcomes = inNetns([['interfaceUp', 'lo'], ['interfaceUp', DEV], ['interfaceUp', DEV]]);
    assert.deepEqual(outcomes.map((o) => o.ok), [true, true, true]);
    const [link] = ipJson('link', 'show', DEV) as { flags: string[] }[];
    assert.ok(link?.flags.includes('UP'), `flags: ${link?.flags}`);
  });

  test('setInterfaceAddress puts the address with its prefix on the link, plus the subnet route', () => {
    const [outcome] = inNetns([['setInterfaceAddress', DEV, '10.77.0.2', 24]]);
    assert.equal(outcome?.ok, true, JSON.stringify(outcome));
    assert.deepEqual(inetAddresses(), ['10.77.0.2/24']);
    assert.ok(routes().some((r) => r.dst === '10.77.0.0/24' && r.dev === DEV), JSON.stringify(routes()));
  });

  test('setting it again replaces the primary address instead of adding a second one', () => {
    const [outcome] = inNetns([['setInterfaceAddress', DEV, '10.78.3.9', 16]]);
    assert.equal(outcome?.ok, true, JSON.stringify(outcome));
    assert.deepEqual(inetAddresses(), ['10.78.3.9/16']);
    assert.ok(routes().some((r) => r.dst === '10.78.0.0/16'), JSON.stringify(routes()));
  });

  test('addDefaultRoute adds default via the gateway on the device; a second one is EEXIST', () => {
    const [first, again] = inNetns([
      ['addDefaultRoute', '10.78.0.1', DEV],
      ['addDefaultRoute', '10.78.0.1'],
    ]);
    assert.equal(first?.ok, true, JSON.stringify(first));
    const defaults = routes().filter((r) => r.dst === 'default');
    assert.deepEqual(defaults.map((r) => [r.gateway, r.dev]), [['10.78.0.1', DEV]]);
    expectError(again, 'EEXIST', 'SIOCADDRT');
  });

  test('bad input fails with errno errors and changes nothing', () => {
    const addressesBefore = inetAddresses();
    const routesBefore = routes();
    const [unknownUp, unknownAddr, badAddr, prefix33, unreachable, unknownDev] = inNetns([
      ['interfaceUp', 'nope0'],
      ['setInterfaceAddress', 'nope0', '10.9.9.9', 24],
      ['setInterfaceAddress', DEV, '10.78.3.300', 24],
      ['setInterfaceAddress', DEV, '10.78.3.10', 33],
      ['addDefaultRoute', '192.0.2.1', DEV],
      ['addDefaultRoute', '10.78.0.1', 'nope0'],
    ]);
    expectError(unknownUp, 'ENODEV', 'SIOCGIFFLAGS');
    expectError(unknownAddr, 'ENODEV', 'SIOCSIFADDR');
    expectError(badAddr, 'EINVAL', 'SIOCSIFADDR');
    expectError(prefix33, 'EINVAL', 'SIOCSIFNETMASK');
    assert.equal(unreachable?.ok, false);
    // The default route exists already, so the kernel may answer EEXIST before it checks reachability.
    assert.ok(['ENETUNREACH', 'EEXIST'].includes(String(unreachable?.ok === false && unreachable.code)));
    expectError(unknownDev, 'ENODEV', 'SIOCADDRT');
    assert.deepEqual(inetAddresses(), addressesBefore);
    assert.deepEqual(routes(), routesBefore);
  });

  test('a gateway outside every connected subnet is ENETUNREACH', () => {
    execFileSync('ip', ['-n', NS, 'route', 'del', 'default']);
    const [outcome] = inNetns([['addDefaultRoute', '192.0.2.1', DEV]]);
    expectError(outcome, 'ENETUNREACH', 'SIOCADDRT');
    assert.deepEqual(routes().filter((r) => r.dst === 'default'), []);
  });
});

describe('sethostname in a UTS namespace', { skip }, () => {
  test('sets the namespace hostname and leaves the host one alone', () => {
    const hostBefore = os.hostname();
    const [outcome] = runCalls(['unshare', '--uts'], [['sethostname', `volant-native-${process.pid}`]]);
    assert.deepEqual(outcome, { ok: true, hostname: `volant-native-${process.pid}` });
    assert.equal(os.hostname(), hostBefore);
  });
});

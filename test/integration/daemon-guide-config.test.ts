/**
 * A host set up the way the Volant guide says: its volantd.yaml, copied as written, starts
 * volantd, and volantd itself brings up the bridge, address, forwarding and NAT that config
 * names, at every start and without adding anything twice (a reboot removes them; no second
 * `volar setup` is needed). volantd runs as a real process inside a network namespace; its VMM
 * launcher is never used (no VM is created).
 */

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Agent, request } from 'undici';
import { eventually } from '../support/eventually.js';
import { GUIDE_VOLANTD_YAML } from '../support/guide-config.js';
import { type NetNs, netnsSkipReason, withNetns } from '../support/netns.js';
import { skipUnlessStrict } from '../support/strict.js';

const MAIN = fileURLToPath(new URL('../../host/daemon/main.ts', import.meta.url));
const skip = skipUnlessStrict(netnsSkipReason());
const dir = mkdtempSync(join(tmpdir(), `volant-guide-config-${process.pid}-`));
after(() => rmSync(dir, { recursive: true, force: true }));

async function health(socketPath: string): Promise<boolean> {
  const dispatcher = new Agent({ connect: { socketPath } });
  try {
    const res = await request('http://localhost/api/v1/health', { dispatcher });
    await res.body.dump();
    return res.statusCode === 200;
  } finally {
    await dispatcher.close();
  }
}

/** Starts volantd in `ns`, waits until it answers, stops it; returns what it printed. */
async function startAndStop(ns: NetNs, configFile: string, stateDir: string): Promise<string> {
  const socket = join(stateDir, 'api.sock');
  const child = ns.spawn([process.execPath, '--import', 'tsx', MAIN, '--config', configFile, '--state-dir', stateDir, '--listen', `unix:${socket}`, '--kernel', join(dir, 'vmlinuz')]);
  let log = '';
  child.stderr!.on('data', (c) => (log += c));
  child.stdout!.on('data', (c) => (log += c));
  const exited = new Promise((r) => child.once('exit', r));
  await eventually(async () => child.exitCode === null && (await health(socket)), { what: `volantd answering (log: ${log})`, timeoutMs: 30_000 }).catch((e) => {
    throw new Error(`${(e as Error).message}\n${log}`);
  });
  child.kill('SIGTERM');
  await exited;
  return log;
}

async function natRules(ns: NetNs): Promise<string[]> {
  return (await ns.run(['iptables-save'])).split('\n').filter((l) => l.includes('volant:nat'));
}

describe("the guide's config file", { skip }, () => {
  test('starts volantd, which restores the bridge, address and NAT at every start, once', () =>
    withNetns('guide', 1, async (ns) => {
      writeFileSync(join(dir, 'vmlinuz'), 'not a kernel: no VM boots in this test\n');
      const configFile = join(dir, 'volantd.yaml');
      writeFileSync(configFile, GUIDE_VOLANTD_YAML);
      const stateDir = join(dir, 'state');

      const log = await startAndStop(ns, configFile, stateDir);
      const restored = log
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as Record<string, unknown>)
        .find((r) => r.module === 'network');
      assert.deepEqual([restored?.level, restored?.bridge, restored?.host_cidr], ['info', 'volant0', '10.200.0.1/16'], log);
      assert.match(String(restored?.msg), /^bridge volant0 10\.200\.0\.1\/16 up, forwarding and NAT in place$/);
      const [link] = JSON.parse(await ns.run(['ip', '-d', '-j', 'addr', 'show', 'dev', 'volant0']));
      assert.equal(link.linkinfo.info_kind, 'bridge');
      assert.ok(link.flags.includes('UP'));
      assert.ok(link.addr_info.some((a: { local: string; prefixlen: number }) => a.local === '10.200.0.1' && a.prefixlen === 16));
      const rules = await natRules(ns);
      assert.equal(rules.length, 3, rules.join('\n'));
      assert.ok(rules.some((r) => r.includes('-s 10.200.0.0/16 ! -o volant0')));
      assert.equal((await ns.run(['sysctl', '-n', 'net.ipv4.ip_forward'])).trim(), '1');

      // What a reboot does: the bridge and the rules are gone. The next start brings them back.
      await ns.run(['ip', 'link', 'del', 'volant0']);
      await ns.run(['iptables', '-t', 'nat', '-F', 'POSTROUTING']);
      await startAndStop(ns, configFile, stateDir);
      assert.equal((await ns.exec(['ip', 'link', 'show', 'volant0'])).code, 0);
      // And a start with everything in place adds nothing twice.
      await startAndStop(ns, configFile, stateDir);
      const again = await natRules(ns);
      assert.equal(again.length, 3, again.join('\n'));
      assert.equal(new Set(again).size, 3);
    }));
});

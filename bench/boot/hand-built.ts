/**
 * bench/boot's peer (b): what a person builds without Volant to serve the same workload from a
 * microVM. ONE initramfs (uncompressed newc cpio, as examples/hello's own image) holding busybox,
 * node with its ELF closure (the same stripped copy Volant carries, so the peer is not slowed by
 * symbols Volant leaves out), the virtio-net modules and examples/hello's app; its /init (the
 * busybox init of test/support/vmm-initramfs.ts) loads the modules, configures eth0 from the
 * kernel's `ip=` parameter and execs `node /app/server.mjs`.
 *
 * Why not the kernel's own IP autoconfig: Debian's cloud kernel builds virtio_net (and
 * virtio_pci) as modules, so at the point where the kernel would configure `ip=` there is no
 * eth0 yet; the values still come from `ip=`, applied by busybox once the driver is loaded.
 *
 * The VM sits on a tap on a bridge in a namespace made here; the first 200 is asked for directly
 * on the bridge, by a poller inside that namespace that starts a fresh connection attempt every
 * POLL_MS until one connects (a SYN the guest is not up to answer would otherwise wait out TCP's
 * retransmission), then waits for that request's answer.
 */

import type { ChildProcess } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { resolveElfClosure } from '../../initramfs/elf.js';
import { NODE_BINARY } from '../../initramfs/stage.js';
import { strippedCopy } from '../../initramfs/strip.js';
import { REPO_ROOT } from '../../test/support/kernel.js';
import { createNetns, type NetNs } from '../../test/support/netns.js';
import { makeTestInitramfs, VIRTIO_NET_MODULES } from '../../test/support/vmm-initramfs.js';

export const HAND_BUILT_GUEST = { address: '10.77.0.2', host: '10.77.0.1', netmask: '255.255.255.0', mac: '52:54:00:77:00:02', port: 3000 };
const BRIDGE = 'bbr0';
const TAP = 'bbtap0';
const POLL_MS = 25;
const CONNECT_TIMEOUT_MS = 1000;

/** The kernel command line a person writes: console, the same panic behaviour as Volant's, and `ip=`. */
export const handBuiltCmdline = (): string => {
  const g = HAND_BUILT_GUEST;
  return `console=ttyS0 reboot=k panic=-1 ip=${g.address}::${g.host}:${g.netmask}:hello:eth0:off`;
};

/** Builds the image at `out` (workDir holds its tree). */
export async function makeHandBuiltImage(out: string, workDir: string, modulesDir: string, cacheDir: string): Promise<void> {
  const node = (await strippedCopy(NODE_BINARY, cacheDir)) ?? NODE_BINARY;
  const closure = await resolveElfClosure([NODE_BINARY]);
  const libs = [...(closure.interpreter ? [closure.interpreter] : []), ...closure.libraries];
  const app = join(REPO_ROOT, 'examples', 'hello', 'app');
  const files = [
    { image: NODE_BINARY, host: node },
    ...libs.map((l) => ({ image: l, host: l })),
    ...readdirSync(app).map((f) => ({ image: `/app/${f}`, host: join(app, f) })),
  ];
  const run = `cd /app && PORT=${HAND_BUILT_GUEST.port} exec ${NODE_BINARY} /app/server.mjs`;
  makeTestInitramfs(out, workDir, { modulesDir, names: VIRTIO_NET_MODULES }, { files, run });
}

/** The namespace, bridge and tap the hand-built VM uses (one for all runs). */
export interface HandBuiltNet {
  ns: NetNs;
  tap: { name: string; mac: string };
  /** Starts asking for the workload on the bridge; resolves when it answered 200. */
  first200(): { done: Promise<void>; child: ChildProcess };
  dispose(): Promise<void>;
}

export async function makeHandBuiltNet(): Promise<HandBuiltNet> {
  const ns = await createNetns('bboot');
  const g = HAND_BUILT_GUEST;
  try {
    await ns.run(['ip', 'link', 'add', BRIDGE, 'type', 'bridge']);
    await ns.run(['ip', 'addr', 'add', `${g.host}/24`, 'dev', BRIDGE]);
    await ns.run(['ip', 'link', 'set', BRIDGE, 'up']);
    await ns.run(['ip', 'tuntap', 'add', 'dev', TAP, 'mode', 'tap']);
    await ns.run(['ip', 'link', 'set', TAP, 'master', BRIDGE, 'up']);
    // A person knows the MAC they gave QEMU; a fixed entry spares the first SYN an ARP wait.
    await ns.run(['ip', 'neigh', 'replace', g.address, 'lladdr', g.mac, 'dev', BRIDGE, 'nud', 'permanent']);
  } catch (e) {
    await ns.dispose();
    throw e;
  }
  // A fresh connection attempt every POLL_MS until one connects; once connected, that request is
  // waited for (a response timeout would make a slow guest livelock under a pile of retries).
  const poller = `const http = require('node:http');
const url = process.argv[1];
let inFlight = 0;
const tick = () => {
  if (inFlight > 0) return;
  let connected = false;
  const req = http.get(url, { agent: false }, (res) => {
    res.resume();
    if (res.statusCode === 200) { process.stdout.write('200\\n'); process.exit(0); }
  });
  const timer = setTimeout(() => req.destroy(), ${CONNECT_TIMEOUT_MS});
  req.on('socket', (s) => s.once('connect', () => { clearTimeout(timer); connected = true; inFlight++; }));
  req.on('close', () => { clearTimeout(timer); if (connected) inFlight--; });
  req.on('error', () => {});
};
setInterval(tick, ${POLL_MS});
tick();`;
  return {
    ns,
    tap: { name: TAP, mac: g.mac },
    first200() {
      const child = ns.spawn([process.execPath, '-e', poller, `http://${g.address}:${g.port}/hello`]);
      const done = new Promise<void>((resolve, reject) => {
        child.stdout?.on('data', (c: Buffer) => {
          if (c.toString().includes('200')) resolve();
        });
        child.once('exit', (code) => reject(new Error(`the poller in ${ns.name} exited (${code}) without a 200`)));
      });
      return { done, child };
    },
    dispose: () => ns.dispose(),
  };
}

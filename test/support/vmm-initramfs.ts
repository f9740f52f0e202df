/**
 * A tiny busybox initramfs for launcher tests (not the plugin image: no Node, no kestrel). Its
 * /init prints `VOLANT-VMM-TEST-MARKER cmdline: <the kernel command line>` on the console, loads
 * the given kernel modules in order, configures eth0 from a static `ip=` (the kernel has no IP
 * autoconfig) and prints `NET-UP mac=<eth0 MAC> addr=<address>`, then idles. A VM named
 * `init-exits` has its init exit instead, which panics the kernel on purpose.
 * `waitForSerial` polls a VM's serial log for a pattern and fails early if the VMM exits.
 */

import { execFileSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { VmProcess } from '../../host/vmm/launcher.js';

export const INIT_MARKER = 'VOLANT-VMM-TEST-MARKER';
export const BUSYBOX = ['/bin/busybox', '/usr/bin/busybox'].find((p) => existsSync(p));
/** What virtio-net-pci needs from Debian's cloud kernel, in load order (its modules.dep). */
export const VIRTIO_NET_MODULES = ['virtio_ring', 'virtio', 'virtio_pci_modern_dev', 'virtio_pci_legacy_dev', 'virtio_pci', 'failover', 'net_failover', 'virtio_net'];

const IDLE = 'while :; do $bb sleep 3600; done';
const init = (run: string): string => `#!/bin/busybox sh
bb=/bin/busybox
$bb mkdir -p /proc /dev /sys
$bb mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1
$bb mount -t proc proc /proc
$bb mount -t sysfs sysfs /sys
CMDLINE="$($bb cat /proc/cmdline)"
echo "${INIT_MARKER} cmdline: $CMDLINE"
for m in $($bb cat /etc/modules.load 2>/dev/null); do $bb insmod "/lib/modules/$m" || echo "insmod $m failed"; done
IPP=""
for p in $CMDLINE; do case "$p" in ip=*) IPP="\${p#ip=}" ;; esac; done
ADDR=$(echo "$IPP" | $bb cut -d: -f1)
MASK=$(echo "$IPP" | $bb cut -d: -f4)
if [ -n "$ADDR" ] && [ -e /sys/class/net/eth0 ]; then
  $bb ifconfig eth0 "$ADDR" netmask "$MASK" up && echo "NET-UP mac=$($bb cat /sys/class/net/eth0/address) addr=$ADDR"
fi
case " $CMDLINE " in
  *" volant.name=init-exits "*) echo "test init: exiting on purpose"; exit 0 ;;
esac
${run}
`;

function findModule(modulesDir: string, name: string): string {
  const stack = [modulesDir];
  while (stack.length > 0) {
    const dir = stack.pop()!;
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      if (e.isDirectory()) stack.push(join(dir, e.name));
      else if (e.name === `${name}.ko`) return join(dir, e.name);
    }
  }
  throw new Error(`kernel module ${name}.ko not found under ${modulesDir}`);
}

/** More for the image: host files copied in at their image paths, and what init runs last instead of idling. */
export interface InitramfsPayload {
  files: { image: string; host: string }[];
  run: string;
}

/** Writes the initramfs (uncompressed newc cpio) to `out`, using `workDir` for the tree. */
export function makeTestInitramfs(out: string, workDir: string, modules?: { modulesDir: string; names: string[] }, payload?: InitramfsPayload): void {
  if (!BUSYBOX) throw new Error('busybox is not installed');
  const tree = join(workDir, 'initramfs-tree');
  for (const d of ['bin', 'etc', 'lib/modules']) mkdirSync(join(tree, d), { recursive: true });
  copyFileSync(BUSYBOX, join(tree, 'bin', 'busybox'));
  writeFileSync(join(tree, 'init'), init(payload?.run ?? IDLE));
  chmodSync(join(tree, 'init'), 0o755);
  const files = ['init', 'bin', 'bin/busybox', 'etc', 'lib', 'lib/modules'];
  if (modules) {
    const names = modules.names.map((n) => {
      const src = findModule(modules.modulesDir, n);
      copyFileSync(src, join(tree, 'lib', 'modules', basename(src)));
      files.push(`lib/modules/${basename(src)}`);
      return basename(src);
    });
    writeFileSync(join(tree, 'etc', 'modules.load'), `${names.join('\n')}\n`);
    files.push('etc/modules.load');
  }
  for (const f of payload?.files ?? []) {
    const rel = f.image.replace(/^\/+/, '');
    for (let d = dirname(rel); d !== '.' && !files.includes(d); d = dirname(d)) files.push(d);
    mkdirSync(join(tree, dirname(rel)), { recursive: true });
    copyFileSync(f.host, join(tree, rel));
    chmodSync(join(tree, rel), statSync(f.host).mode & 0o777);
    files.push(rel);
  }
  // cpio wants a folder before what it holds.
  files.sort((a, b) => a.split('/').length - b.split('/').length || a.localeCompare(b));
  writeFileSync(out, execFileSync('cpio', ['-o', '-H', 'newc', '--quiet'], { cwd: tree, input: `${files.join('\n')}\n`, maxBuffer: 1 << 30 }));
}

/** TCG on a shared, busy machine: generous, and only an upper bound (callers poll). */
export const GUEST_BOOT_TIMEOUT_MS = 180_000;
const SERIAL_POLL_MS = 250;

/** Resolves with the serial log once `pattern` appears in it; throws if the VMM exits first or time runs out. */
export async function waitForSerial(path: string, pattern: RegExp, vm: VmProcess, timeoutMs = GUEST_BOOT_TIMEOUT_MS): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  let exited = false;
  void vm.exited.then(() => {
    exited = true;
  });
  for (;;) {
    const text = existsSync(path) ? readFileSync(path, 'utf8') : '';
    if (pattern.test(text)) return text;
    if (exited) throw new Error(`VMM exited before ${pattern} appeared; serial:\n${text.slice(-2000)}`);
    if (Date.now() > deadline) throw new Error(`${pattern} not on the serial console within ${timeoutMs} ms; serial:\n${text.slice(-2000)}`);
    await sleep(SERIAL_POLL_MS);
  }
}

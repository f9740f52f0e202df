/**
 * The `shared` layout's plugin side (docs/runtime-image.md): a stage-1 that mounts the shared
 * runtime image, and links that make the runtime's files appear at their usual paths.
 *
 * The runtime (node, its libraries, busybox, the addon, modules) lives in a read-only erofs image
 * that the VMM attaches as virtio-pmem (mounted with DAX: the guest maps the host's page cache)
 * or as a read-only virtio-blk disk. Node cannot run before that image is mounted, so /init is a
 * busybox script: load the modules the device and erofs need (Debian's cloud kernel builds
 * virtio, pmem and erofs as modules), wait for the device, mount it at RUNTIME_MOUNT, exec node.
 *
 * What must hold:
 * - Stage-1 needs nothing from the runtime: a static busybox and the module files travel in the
 *   initramfs; the device is named by `volant.runtime=pmem|blk` on the command line.
 * - Every runtime path the plugin does not hold itself is reached through a symlink into
 *   RUNTIME_MOUNT at the shallowest level possible (`/usr -> /rt/usr`), so node's ELF
 *   interpreter and libraries resolve through real paths and `process.execPath` is node itself
 *   (`/rt/usr/bin/node`). A path that is a file in both is a CONFLICT naming it.
 * - Any failure prints one `volant-stage1: fatal:` line and powers off (PID 1 must not exit).
 */

import { readFile } from 'node:fs/promises';
import { posix } from 'node:path';
import { VolantError } from '../shared/errors.js';
import { RUNTIME_DEVICES, RUNTIME_PARAM, type RuntimeDevice } from '../shared/runtime-image.js';
import { parseElf } from './elf.js';
import { type ModuleFile, resolveModules } from './modules.js';
import { BUSYBOX_BINARY, type BuildItem, KESTREL_IMAGE_PATH, NODE_BINARY } from './stage.js';
import type { ImageTree } from './tree.js';

/** Where stage-1 mounts the runtime image. */
export const RUNTIME_MOUNT = '/rt';
export const STAGE1_DIR = '/lib/volant/stage1';

/** What each device needs before the runtime can be mounted (dependencies are added from .modinfo). */
export const STAGE1_MODULES: Record<RuntimeDevice, string[]> = {
  pmem: ['virtio_pci', 'virtio_pmem', 'nd_pmem', 'erofs'],
  blk: ['virtio_pci', 'virtio_blk', 'erofs'],
};

/** The guest device node and mount options per runtime device. */
const DEVICE_NODE: Record<RuntimeDevice, { node: string; options: string }> = {
  pmem: { node: '/dev/pmem0', options: 'ro,dax=always' },
  blk: { node: '/dev/vda', options: 'ro' },
};
/** Polls of 10 ms for the device node (30 s: TCG on a busy host is slow to probe). */
const DEVICE_WAIT_POLLS = 3000;

function stage1Script(): string {
  const cases = RUNTIME_DEVICES.map((d) => `  ${d}) node=${DEVICE_NODE[d].node}; opts=${DEVICE_NODE[d].options} ;;`).join('\n');
  return `#!${STAGE1_DIR}/busybox sh
# Volant stage-1 (docs/runtime-image.md): mount the shared runtime, then hand over to kestrel.
S=${STAGE1_DIR}
B=$S/busybox
$B mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1
$B mount -t proc proc /proc
fail() { echo "volant-stage1: fatal: $*"; $B sync; $B poweroff -f; }
dev=pmem
for p in $($B cat /proc/cmdline); do case "$p" in ${RUNTIME_PARAM}=*) dev="\${p#${RUNTIME_PARAM}=}" ;; esac; done
case "$dev" in
${cases}
  *) fail "${RUNTIME_PARAM}=$dev is not one of ${RUNTIME_DEVICES.join(', ')}" ;;
esac
for m in $($B cat "$S/$dev.load"); do $B insmod "$S/$m" || fail "insmod $m failed"; done
i=0
while [ ! -b "$node" ]; do
  i=$((i + 1))
  [ "$i" -gt ${DEVICE_WAIT_POLLS} ] && fail "$node did not appear: is the runtime image attached as $dev?"
  $B usleep 10000
done
$B mount -t erofs -o "$opts" "$node" ${RUNTIME_MOUNT} || fail "cannot mount the runtime image from $node"
exec ${NODE_BINARY} ${KESTREL_IMAGE_PATH}
`;
}

/** Stage-1 into the plugin tree: /init, a static busybox, the modules and per-device load lists. */
export async function stageStage1(tree: ImageTree, kernelVersion: string, modulesDir: string, items: BuildItem[]): Promise<void> {
  const busybox = await readFile(BUSYBOX_BINARY).catch((e: NodeJS.ErrnoException) => {
    throw new VolantError('NOT_FOUND', `stage-1 needs ${BUSYBOX_BINARY}: ${e.code ?? e.message} (install busybox-static)`);
  });
  if (parseElf(busybox, BUSYBOX_BINARY).interpreter !== undefined) {
    throw new VolantError('NOT_SUPPORTED', `${BUSYBOX_BINARY} is dynamically linked; stage-1 runs before any library exists (install busybox-static)`);
  }
  await tree.addHostFile(`${STAGE1_DIR}/busybox`, BUSYBOX_BINARY, 'plugin', { dereference: true });
  const files = new Map<string, ModuleFile>();
  for (const device of RUNTIME_DEVICES) {
    const { modules } = await resolveModules(modulesDir, STAGE1_MODULES[device]);
    const names = modules.map((m) => posix.basename(m.relPath));
    for (const [i, m] of modules.entries()) files.set(names[i]!, m);
    tree.addBytes(`${STAGE1_DIR}/${device}.load`, names.map((n) => `${n}\n`).join(''), 'plugin');
  }
  for (const [name, m] of [...files].sort()) await tree.addHostFile(`${STAGE1_DIR}/${name}`, m.path, 'plugin', { dereference: true });
  tree.addBytes('/init', stage1Script(), 'plugin', 0o755, 'stage-1 /init');
  tree.addDir(RUNTIME_MOUNT, 'plugin');
  let bytes = busybox.length;
  for (const m of files.values()) bytes += (await readFile(m.path)).length;
  items.push({ what: `stage-1: busybox + modules (${kernelVersion})`, files: files.size + 1, bytes });
}

/** Links every runtime path the plugin tree does not hold into RUNTIME_MOUNT (see the module comment). */
export function linkRuntime(plugin: ImageTree, runtime: ImageTree): void {
  const rt = new Map(runtime.entries('runtime').map((e) => [e.path, e]));
  const own = new Map(plugin.entries('plugin').map((e) => [e.path, e]));
  const occupied = new Set<string>();
  for (const p of own.keys()) for (let q = p; q !== '/'; q = posix.dirname(q)) occupied.add(q);
  const children = new Map<string, string[]>();
  for (const p of rt.keys()) {
    const parent = posix.dirname(p);
    children.set(parent, [...(children.get(parent) ?? []), p]);
  }
  const visit = (dir: string): void => {
    for (const p of (children.get(dir) ?? []).sort()) {
      if (!occupied.has(p)) {
        plugin.addSymlink(p, `${RUNTIME_MOUNT}${p}`, 'plugin', 'runtime link');
        continue;
      }
      if (own.get(p)?.type !== 'dir' || rt.get(p)?.type !== 'dir') {
        throw new VolantError('CONFLICT', `${p} is both in the plugin image and in the runtime image; move the plugin's file elsewhere`);
      }
      visit(p);
    }
  };
  visit('/');
}

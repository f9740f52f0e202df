/**
 * Step 1 of boot (PID 1 only): the file systems every later step needs. The kernel starts
 * /init with only the initramfs root; /proc (cmdline, mounts), /sys, /dev (devtmpfs: the
 * console, vsock, null), /dev/pts, /run (the DHCP script and lease) and /tmp are ours to mount.
 * Node has no mount(2), so busybox `mount` does it; an already-mounted target (a second start,
 * or a kernel that mounted devtmpfs itself) is left alone.
 */

import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';

export interface MountSpec {
  fstype: string;
  source: string;
  target: string;
  options?: string;
}

export const EARLY_MOUNTS: readonly MountSpec[] = [
  { fstype: 'proc', source: 'proc', target: '/proc', options: 'nosuid,nodev,noexec' },
  { fstype: 'sysfs', source: 'sysfs', target: '/sys', options: 'nosuid,nodev,noexec' },
  { fstype: 'devtmpfs', source: 'devtmpfs', target: '/dev', options: 'nosuid,mode=0755' },
  { fstype: 'devpts', source: 'devpts', target: '/dev/pts', options: 'nosuid,noexec,gid=5,mode=0620,ptmxmode=0666' },
  { fstype: 'tmpfs', source: 'tmpfs', target: '/run', options: 'nosuid,nodev,mode=0755' },
  { fstype: 'tmpfs', source: 'tmpfs', target: '/tmp', options: 'nosuid,nodev,mode=1777' },
];

function mountedTargets(): Set<string> {
  try {
    return new Set(
      readFileSync('/proc/mounts', 'utf8')
        .split('\n')
        .map((l) => l.split(' ')[1])
        .filter((t): t is string => t !== undefined),
    );
  } catch {
    return new Set();
  }
}

/** Mounts what is missing; throws with the target and mount's own message on failure. */
export function mountEarlyFileSystems(specs: readonly MountSpec[] = EARLY_MOUNTS): void {
  for (const m of specs) {
    if (mountedTargets().has(m.target)) continue;
    mkdirSync(m.target, { recursive: true });
    const args = ['-t', m.fstype, ...(m.options ? ['-o', m.options] : []), m.source, m.target];
    const r = spawnSync('mount', args, { encoding: 'utf8' });
    if (r.error || r.status !== 0) {
      throw new Error(`mount ${m.target} (${m.fstype}): ${r.error?.message || r.stderr.trim() || `exit ${r.status}`}`);
    }
  }
}

/**
 * Where a Volant boot spends its time, read from the guest's serial console. kestrel's console
 * lines carry no timestamps, so the bench polls the serial log while the VM boots and notes the
 * host time (ms since the create request) at which each milestone first appears. Pure: the
 * poller feeds text in, this decides which milestones are now visible.
 */

export interface Milestone {
  name: string;
  pattern: RegExp;
}

/**
 * In boot order. The kernel line is Linux's `run_init_process` message; the busybox lines are
 * test/support/vmm-initramfs.ts's init (the bare and hand-built images); the rest are kestrel's.
 */
export const KERNEL_INIT = 'kernel runs /init';
export const MILESTONES: readonly Milestone[] = [
  { name: KERNEL_INIT, pattern: /Run \/init as init process/ },
  { name: 'busybox init ran', pattern: /VOLANT-VMM-TEST-MARKER/ },
  { name: 'eth0 up', pattern: /NET-UP mac=/ },
  { name: 'kestrel starting', pattern: /kestrel: starting/ },
  { name: 'kestrel ready', pattern: /kestrel: ready/ },
];

/** What kestrel says about its own start on its `starting` line (guest/startup.ts). */
export interface KestrelStart {
  /** ms from Node's start to kestrel's first line: Node's own start plus loading the bundle. */
  nodeUpMs: number;
  /** The guest kernel's uptime then, s. */
  guestUpS?: number;
  /** What V8 made of the code cache: accepted, rejected, absent, or `not used` (an image without the loader). */
  codeCache?: string;
}

export function kestrelStart(serial: string): KestrelStart | undefined {
  const m = /kestrel: starting [^\n]*\(node up (\d+) ms(?:, guest up ([\d.]+) s)?(?:, code cache ([a-z ]+))?\)/.exec(serial);
  if (!m) return undefined;
  return { nodeUpMs: Number(m[1]), guestUpS: m[2] === undefined ? undefined : Number(m[2]), codeCache: m[3] };
}

/** Consecutive points in time (ms) as named intervals: `a → b` lasted `b.at - a.at`. */
export function intervals(points: { name: string; at: number }[]): { name: string; ms: number }[] {
  return points.slice(1).map((p, k) => ({ name: `${points[k]!.name} → ${p.name}`, ms: p.at - points[k]!.at }));
}

/** Records, into `seen`, each milestone present in `serial` that was not seen before, at `atMs`. */
export function noteMilestones(serial: string, atMs: number, seen: Map<string, number>): void {
  for (const m of MILESTONES) if (!seen.has(m.name) && m.pattern.test(serial)) seen.set(m.name, atMs);
}

/** The guest clock (printk timestamp, seconds) on the kernel's `Run /init` line, if printed. */
export function guestSecondsAtInit(serial: string): number | undefined {
  const m = /\[\s*(\d+\.\d+)\]\s+Run \/init as init process/.exec(serial);
  return m ? Number(m[1]) : undefined;
}

export { median } from '../support/stats.js';

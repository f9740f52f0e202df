/**
 * What happens after the workload exits: the manifest's `workload.restart` policy and an
 * exponential backoff, decided by a pure function so the table tests pin every case.
 *
 *   always (default)  restart, whatever the exit
 *   on-failure        restart after a non-zero exit or a signal; a clean exit 0 stays down
 *   exit              the VM's job is done: power off (outside a VM: kestrel exits)
 *
 * Backoff doubles from RESTART_BACKOFF_INITIAL_MS up to RESTART_BACKOFF_MAX_MS. A run that
 * lasted STABLE_RUN_MS or longer counts as healthy and resets the doubling, so a workload that
 * crashes once a day restarts at once while a crash loop settles at one try per cap.
 */

import type { RestartPolicy } from '../../shared/schema/manifest.js';

export const RESTART_BACKOFF_INITIAL_MS = 250;
export const RESTART_BACKOFF_MAX_MS = 30_000;
export const STABLE_RUN_MS = 10_000;
export const DEFAULT_RESTART_POLICY: RestartPolicy = 'always';

export interface ExitStatus {
  /** Exit code, or null when a signal ended the process. */
  code: number | null;
  signal: string | null;
}

export type AfterExit =
  | { action: 'restart'; delayMs: number; /** consecutive quick failures, this one included */ streak: number }
  | { action: 'stay-down'; reason: string }
  | { action: 'power-off'; reason: string };

export function describeExit(exit: ExitStatus): string {
  return exit.signal ? `signal ${exit.signal}` : `code ${exit.code}`;
}

export function backoffDelayMs(streak: number): number {
  if (streak <= 1) return RESTART_BACKOFF_INITIAL_MS;
  const exp = Math.min(streak - 1, 30);
  return Math.min(RESTART_BACKOFF_MAX_MS, RESTART_BACKOFF_INITIAL_MS * 2 ** exp);
}

/**
 * `previousStreak` counts the quick failures before this exit; `ranForMs` is how long this run
 * lasted.
 */
export function decideAfterExit(policy: RestartPolicy | undefined, exit: ExitStatus, previousStreak: number, ranForMs: number): AfterExit {
  const p = policy ?? DEFAULT_RESTART_POLICY;
  const how = describeExit(exit);
  if (p === 'exit') return { action: 'power-off', reason: `workload exited (${how}) and its restart policy is exit` };
  const clean = exit.code === 0 && exit.signal === null;
  if (p === 'on-failure' && clean) return { action: 'stay-down', reason: 'workload exited cleanly (code 0) and its restart policy is on-failure' };
  const streak = ranForMs >= STABLE_RUN_MS ? 1 : previousStreak + 1;
  return { action: 'restart', delayMs: backoffDelayMs(streak), streak };
}

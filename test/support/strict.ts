/**
 * Tests that need root, QEMU, a kernel or a compiler skip where those are missing, saying why.
 * CI must not pass by skipping, so under VOLANT_TEST_STRICT=1 (set by .ci/run) a missing
 * requirement is a failure instead: `skipUnlessStrict` gives a suite's `{ skip }` and, in strict
 * mode, registers a failing test that names what is missing; `strictSkip` does the same inside a
 * running test. Every skip condition in test/ goes through one of the two.
 */

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';

export const STRICT_ENV = 'VOLANT_TEST_STRICT';

export function strictMode(env: NodeJS.ProcessEnv = process.env): boolean {
  return env[STRICT_ENV] === '1';
}

function failure(reason: string): string {
  return `${STRICT_ENV}=1: this run must not skip, but: ${reason}`;
}

/** The value for a suite's or test's `{ skip }` option; in strict mode a missing requirement also fails the run. */
export function skipUnlessStrict(reason: string | false | undefined): string | false {
  if (!reason) return false;
  if (strictMode()) test(`requirement: ${reason}`, () => assert.fail(failure(reason)));
  return reason;
}

/** Inside a test: skips it (returns true) when `reason` is set, or fails it in strict mode. */
export function strictSkip(t: { skip(message?: string): void }, reason: string | false | undefined): boolean {
  if (!reason) return false;
  if (strictMode()) assert.fail(failure(reason));
  t.skip(reason);
  return true;
}

/** Whether `binary` runs here (`binary --version` exits 0): a requirement check for the skips above. */
export function hasCommand(binary: string, args: readonly string[] = ['--version']): boolean {
  return spawnSync(binary, args, { stdio: 'ignore' }).status === 0;
}

/**
 * kestrel's console voice. Every line starts with `kestrel: ` so the host and a human reading
 * the serial log can tell agent lines from workload output. Writes are synchronous on purpose:
 * the line before a power-off must reach the console.
 */

import { writeSync } from 'node:fs';

export const CONSOLE_PREFIX = 'kestrel: ';

export function say(message: string): void {
  try {
    writeSync(2, `${CONSOLE_PREFIX}${message}\n`);
  } catch {
    // A closed console must not take the agent down.
  }
}

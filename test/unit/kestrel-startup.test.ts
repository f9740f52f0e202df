/**
 * kestrel's start note (guest/startup.ts) as bench/boot reads it from the console
 * (bench/boot/timeline.ts `kestrelStart`): a change to either side must not silently drop the
 * figure the boot benchmark reports.
 */

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { kestrelStart } from '../../bench/boot/timeline.js';
import { CODE_CACHE_STATUS, startupNote } from '../../guest/startup.js';

describe('kestrel start note', () => {
  test('the starting line carries node uptime, guest uptime and the code cache status, and bench/boot reads them back', () => {
    const g = globalThis as Record<symbol, unknown>;
    g[CODE_CACHE_STATUS] = 'accepted';
    try {
      const line = `[    4.2] random kernel line\nkestrel: starting 0.1.0 as PID 1 (${startupNote()})\nkestrel: plugin hello\n`;
      const got = kestrelStart(line);
      assert.ok(got, line);
      assert.ok(Number.isInteger(got.nodeUpMs) && got.nodeUpMs > 0 && got.nodeUpMs <= performance.now() + 1);
      assert.equal(got.codeCache, 'accepted');
      if (process.platform === 'linux') assert.ok(got.guestUpS !== undefined && got.guestUpS > 0);
    } finally {
      delete g[CODE_CACHE_STATUS];
    }
  });

  test('without the loader the note says the cache was not used', () => {
    assert.match(startupNote(), /code cache not used$/);
    assert.equal(kestrelStart(`kestrel: starting 0.1.0 (${startupNote()})`)?.codeCache, 'not used');
  });
});

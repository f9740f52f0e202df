/**
 * kestrel's /healthz `memory` (guest/memory.ts): MemTotal and MemAvailable from /proc/meminfo,
 * what bench/density and anyone sizing `resources.memory_mb` read. Checked against this host's
 * own /proc/meminfo and the kernel's figure as Node reports it.
 */

import assert from 'node:assert/strict';
import { totalmem } from 'node:os';
import { describe, test } from 'node:test';
import { guestMemory, parseMeminfo } from '../../guest/memory.js';

describe('guest memory on /healthz', () => {
  test('reads MemTotal and MemAvailable in kB from /proc/meminfo', { skip: process.platform !== 'linux' && 'needs /proc/meminfo' }, () => {
    const m = guestMemory();
    assert.ok(m);
    assert.equal(m.total_kb, Math.round(totalmem() / 1024));
    assert.ok(m.available_kb > 0 && m.available_kb <= m.total_kb);
  });

  test('a meminfo without MemAvailable (kernels before 3.14) or no file gives no figure rather than a wrong one', () => {
    assert.equal(parseMeminfo('MemTotal:        2048 kB\nMemFree:         1024 kB\n'), undefined);
    assert.equal(guestMemory('/nonexistent/meminfo'), null);
  });
});

/**
 * The strict switch (test/support/strict.ts): a test whose requirement is missing skips, saying
 * why, unless VOLANT_TEST_STRICT=1 (CI), where it fails instead. Runs a tiny suite in a child
 * `node --test` both ways.
 */

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';

const dir = mkdtempSync(join(tmpdir(), `volant-strict-${process.pid}-`));
after(() => rmSync(dir, { recursive: true, force: true }));
const STRICT_URL = new URL('../support/strict.ts', import.meta.url).href;

function runSuite(strict: boolean): { code: number | null; out: string } {
  const file = join(dir, 'suite.test.mjs');
  writeFileSync(
    file,
    `import { describe, test } from 'node:test';
import { skipUnlessStrict, strictSkip } from '${STRICT_URL}';
describe('needs a unicorn', { skip: skipUnlessStrict('no unicorn here') }, () => { test('rides it', () => {}); });
test('needs a dragon', (t) => { if (strictSkip(t, 'no dragon here')) return; });
test('needs nothing', () => {});
`,
  );
  // Without NODE_TEST_CONTEXT the child is a run of its own, not a subtest of this one.
  const { NODE_TEST_CONTEXT: _, ...parent } = process.env;
  const env = { ...parent, VOLANT_TEST_STRICT: strict ? '1' : '' };
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--test', '--test-reporter=tap', file], { env, encoding: 'utf8' });
  return { code: r.status, out: r.stdout + r.stderr };
}

describe('VOLANT_TEST_STRICT', () => {
  test('unset: missing requirements skip with their reason, and the run passes', () => {
    const r = runSuite(false);
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /# SKIP no unicorn here/);
    assert.match(r.out, /# SKIP no dragon here/);
  });
  test('=1: the same run fails, naming each missing requirement', () => {
    const r = runSuite(true);
    assert.notEqual(r.code, 0, r.out);
    assert.match(r.out, /not ok \d+ - requirement: no unicorn here/);
    assert.match(r.out, /not ok \d+ - needs a dragon/);
    assert.match(r.out, /this run must not skip, but: no dragon here/);
    assert.match(r.out, /ok \d+ - needs nothing/);
  });
});

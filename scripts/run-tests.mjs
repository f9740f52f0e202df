#!/usr/bin/env node
// Runs the test suites with Node's built-in runner in one invocation so the closing
// summary counts every test. Usage: run-tests.mjs [unit|integration|e2e ...] (default: all).
import { spawnSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const suites = process.argv.slice(2).filter((a) => !a.startsWith('-'));
const chosen = suites.length > 0 ? suites : ['unit', 'integration', 'e2e'];

function collect(dir) {
  let out = [];
  let entries;
  try {
    entries = readdirSync(dir);
  } catch {
    return out;
  }
  for (const name of entries.sort()) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out = out.concat(collect(p));
    else if (name.endsWith('.test.ts')) out.push(relative(root, p));
  }
  return out;
}

const files = chosen.flatMap((s) => collect(join(root, 'test', s)));
if (files.length === 0) {
  console.error(`no test files found for: ${chosen.join(', ')}`);
  process.exit(1);
}
const args = ['--import', 'tsx', '--test', '--test-reporter=spec', ...files];
const r = spawnSync(process.execPath, args, { cwd: root, stdio: 'inherit' });
process.exit(r.status ?? 1);

#!/usr/bin/env node
// `npm run bench [-- NAME...]`: runs every benchmark (bench/<name>/index.ts), one after the other
// so they do not compete for the CPU, shows each one's own report as it runs, and ends with one
// table of the ratios they measured against their baselines. Each benchmark's last stdout line
// is one JSON object (the contract docs/benchmarks.md describes); every numeric field whose name
// says "ratio" (top level or one level down) becomes a row. A benchmark that fails or prints no
// such line fails the run; one that reports `skipped` is shown as skipped.
import { spawn } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
/** Quick ones first, so a broken setup shows early. */
const ORDER = ['ipam', 'egress', 'initramfs', 'ingress', 'boot', 'density'];

const available = readdirSync(join(root, 'bench')).filter((d) => existsSync(join(root, 'bench', d, 'index.ts')));
const wanted = process.argv.slice(2).filter((a) => !a.startsWith('-'));
const unknown = wanted.filter((w) => !available.includes(w));
if (unknown.length > 0) {
  console.error(`run-bench: no benchmark ${unknown.join(', ')} (there are: ${available.join(', ')})`);
  process.exit(2);
}
const names = (wanted.length > 0 ? wanted : available).sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));

function rank(name) {
  const i = ORDER.indexOf(name);
  return i < 0 ? ORDER.length : i;
}

/** Runs one benchmark, echoing its output; resolves with its exit code and stdout. */
function run(name) {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', join('bench', name, 'index.ts')], { cwd: root, stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (c) => {
      out += c;
      process.stdout.write(c);
    });
    child.once('close', (code, signal) => resolve({ code: code ?? (signal ? 128 : 1), out }));
  });
}

/** `[label, value]` for every numeric ratio field at depth 1 or 2 of a benchmark's JSON. */
function ratioRows(result) {
  const rows = [];
  const visit = (obj, prefix, depth) => {
    for (const [k, v] of Object.entries(obj)) {
      const label = prefix ? `${prefix}.${k}` : k;
      if (typeof v === 'number' && /ratio/i.test(k) && k !== 'ratio_goal') rows.push([label, v]);
      else if (v && typeof v === 'object' && !Array.isArray(v) && depth < 2) visit(v, label, depth + 1);
    }
  };
  visit(result, '', 1);
  return rows;
}

const table = [];
let failed = false;
for (const name of names) {
  console.log(`\n=== bench/${name} ===`);
  const started = Date.now();
  const { code, out } = await run(name);
  const seconds = ((Date.now() - started) / 1000).toFixed(0);
  const last = out.trim().split('\n').at(-1) ?? '';
  let result;
  try {
    result = JSON.parse(last);
  } catch {
    result = undefined;
  }
  if (code !== 0 || result === undefined || typeof result !== 'object') {
    failed = true;
    table.push([name, code !== 0 ? `FAILED (exit ${code})` : 'FAILED (no JSON last line)', '', `${seconds} s`]);
    continue;
  }
  if (result.skipped) {
    table.push([name, `skipped: ${result.skipped}`, '', `${seconds} s`]);
    continue;
  }
  const rows = ratioRows(result);
  if (rows.length === 0) table.push([name, '(no ratios)', '', `${seconds} s`]);
  for (const [i, [label, v]] of rows.entries()) table.push([i === 0 ? name : '', label, v.toFixed(3), i === 0 ? `${seconds} s` : '']);
}

const header = ['bench', 'ratio (ours ÷ baseline or goal)', 'value', 'took'];
const widths = header.map((h, i) => Math.max(h.length, ...table.map((r) => String(r[i]).length)));
const line = (cells) => cells.map((c, i) => (i === 2 ? String(c).padStart(widths[i]) : String(c).padEnd(widths[i]))).join('  ').trimEnd();
console.log(`\n${line(header)}\n${widths.map((w) => '-'.repeat(w)).join('  ')}`);
for (const r of table) console.log(line(r));
process.exit(failed ? 1 : 0);

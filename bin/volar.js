#!/usr/bin/env node
// Thin launcher: the CLI lives in host/cli and is compiled to dist/ by `npm run build`.
import { existsSync } from 'node:fs';
const entry = new URL('../dist/host/cli/main.js', import.meta.url);
if (!existsSync(entry)) {
  console.error('volar: not built yet (run `npm run build`)');
  process.exit(1);
}
await import(entry.href);

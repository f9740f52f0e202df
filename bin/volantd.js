#!/usr/bin/env node
// Thin launcher: the daemon lives in host/ and is compiled to dist/ by `npm run build`.
import { existsSync } from 'node:fs';
const entry = new URL('../dist/host/daemon/main.js', import.meta.url);
if (!existsSync(entry)) {
  console.error('volantd: not built yet (run `npm run build`)');
  process.exit(1);
}
await import(entry.href);

/**
 * What every volar command shares about output: the global options (`--json`, `--state-dir`,
 * `--api`, `--token`) as one typed object, and `emit`, which prints one JSON document under
 * `--json` and human text otherwise. stdout carries only the result; progress and notes go to
 * stderr, so `volar ... --json | jq` always reads exactly one document (an error included).
 */

import type { Command } from 'commander';

export interface GlobalOptions {
  api?: string;
  token?: string;
  stateDir?: string;
  json?: boolean;
}

export function globalOptions(cmd: Command): GlobalOptions {
  return cmd.optsWithGlobals() as GlobalOptions;
}

export function jsonMode(cmd: Command): boolean {
  return globalOptions(cmd).json === true;
}

/** Prints `value` as JSON under --json, else `text()` (a line break is added). */
export function emit(cmd: Command, value: unknown, text: () => string): void {
  process.stdout.write(`${jsonMode(cmd) ? JSON.stringify(value, null, 2) : text()}\n`);
}

/** A note for people on stderr (`volar: ...`); under --json it is a JSON line instead. */
export function note(cmd: Command, line: string, value?: unknown): void {
  process.stderr.write(jsonMode(cmd) ? `${JSON.stringify(value ?? { note: line })}\n` : `volar: ${line}\n`);
}

/**
 * The kernel command line, split the way the kernel's `next_arg()` splits it: whitespace
 * separates parameters, double quotes protect spaces, a value's surrounding quotes are removed,
 * and everything after a lone `--` belongs to init. The host side writes parameters with
 * `formatCmdlineParam`, which refuses any value that could smuggle a second parameter.
 */

import { VolantError } from './errors.js';

export interface CmdlineParam {
  key: string;
  /** undefined for a bare flag such as `quiet`. */
  value: string | undefined;
}

export class Cmdline {
  readonly params: readonly CmdlineParam[];
  /** Arguments after `--`, passed to init by the kernel. */
  readonly initArgs: readonly string[];

  constructor(params: CmdlineParam[], initArgs: string[]) {
    this.params = params;
    this.initArgs = initArgs;
  }

  /** The last value given for `key` (the kernel's and init's usual rule), or undefined. */
  get(key: string): string | undefined {
    for (let i = this.params.length - 1; i >= 0; i--) {
      const p = this.params[i]!;
      if (p.key === key) return p.value ?? '';
    }
    return undefined;
  }

  has(key: string): boolean {
    return this.params.some((p) => p.key === key);
  }

  /** Every parameter whose key starts with `prefix` (e.g. `volant.`), last value wins. */
  withPrefix(prefix: string): Map<string, string> {
    const out = new Map<string, string>();
    for (const p of this.params) if (p.key.startsWith(prefix)) out.set(p.key, p.value ?? '');
    return out;
  }
}

/** The kernel caps the command line (COMMAND_LINE_SIZE is 2048 on x86; we allow headroom). */
export const MAX_CMDLINE_BYTES = 65536;

const isSpace = (c: string): boolean => c === ' ' || c === '\t' || c === '\n' || c === '\r' || c === '\f' || c === '\v';

export function parseCmdline(text: string): Cmdline {
  if (typeof text !== 'string') throw new VolantError('INVALID_ARGUMENT', 'kernel command line must be a string');
  if (text.length > MAX_CMDLINE_BYTES) throw new VolantError('INVALID_ARGUMENT', `kernel command line longer than ${MAX_CMDLINE_BYTES} bytes`);
  const params: CmdlineParam[] = [];
  let i = 0;
  const n = text.length;
  while (i < n) {
    while (i < n && isSpace(text[i]!)) i++;
    if (i >= n) break;
    let start = i;
    let quoted = false;
    if (text[i] === '"') {
      i++;
      start = i;
      quoted = true;
    }
    let inQuote = quoted;
    let eq = -1;
    for (; i < n; i++) {
      const c = text[i]!;
      if (isSpace(c) && !inQuote) break;
      if (eq < 0 && c === '=') eq = i;
      if (c === '"') inQuote = !inQuote;
    }
    let end = i;
    if (quoted && end > start && text[end - 1] === '"') end--;
    const word = text.slice(start, end);
    if (word === '--' && !quoted) {
      const rest = text.slice(i).trim();
      return new Cmdline(params, rest === '' ? [] : rest.split(/\s+/));
    }
    if (eq < 0 || eq >= end) {
      params.push({ key: word, value: undefined });
      continue;
    }
    const key = text.slice(start, eq);
    let value = text.slice(eq + 1, end);
    if (value.startsWith('"')) {
      value = value.slice(1);
      if (value.endsWith('"')) value = value.slice(0, -1);
    }
    params.push({ key, value });
  }
  return new Cmdline(params, []);
}

const KEY = /^[A-Za-z0-9_.-]{1,64}$/;

/**
 * One `key=value` parameter ready to join with spaces. Values may contain spaces (they are
 * quoted) but never a double quote or a control character: either would let a value end early
 * and start a parameter of its own.
 */
export function formatCmdlineParam(key: string, value?: string): string {
  if (!KEY.test(key)) throw new VolantError('INVALID_ARGUMENT', `kernel parameter name ${JSON.stringify(key)} is not allowed (letters, digits, '_', '.', '-'; 1-64 characters)`);
  if (value === undefined) return key;
  if (typeof value !== 'string') throw new VolantError('INVALID_ARGUMENT', `kernel parameter ${key}: value must be a string`);
  if (/["\u0000-\u001f\u007f]/.test(value)) {
    throw new VolantError('INVALID_ARGUMENT', `kernel parameter ${key}: value contains a double quote or control character`);
  }
  return /\s/.test(value) || value === '' ? `${key}="${value}"` : `${key}=${value}`;
}

/**
 * The egress audit as its own JSON-lines file, `<log.dir>/egress-audit.jsonl`: one record per
 * line, exactly as the egress proxy's audit trail hands them over (host/egress/audit.ts: one per
 * decision, and the summaries of repeated denials). It is never mixed into volantd's log.
 *
 * What must hold:
 *  - Size-capped: a record that would take the file past `maxBytes` first rotates it — `.1` …
 *    `.keep` shift up, the oldest falls off, the file starts afresh (`rotationRenames`, pure). The
 *    audit then takes at most (keep + 1) × maxBytes of disk. A file already over the cap at start
 *    is rotated before the first write.
 *  - Records keep their order and are never split across files: `write` queues the line, and one
 *    synchronous append per event-loop turn (`flush`) writes the queue, rotating in between where
 *    the cap falls. `close` writes what is queued.
 *  - Writing never fails the proxy: an error (disk full, the directory gone) drops the records
 *    and is reported through `onError` once, until a write succeeds again.
 */

import { closeSync, fstatSync, mkdirSync, openSync, renameSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { VolantError } from '../../shared/errors.js';

export const AUDIT_FILE_NAME = 'egress-audit.jsonl';

export interface AuditFileOptions {
  /** The log directory (config `log.dir`); made when missing. */
  dir: string;
  /** Config `log.audit_max_bytes`. */
  maxBytes: number;
  /** Config `log.audit_files`: rotated files kept besides the current one. */
  keep: number;
  /** Told of a failed write or rotation (once, until a write succeeds again). */
  onError?: (err: unknown) => void;
}

/**
 * The renames that rotate `path`, in the order they must run: the oldest kept file is
 * overwritten by the one before it, and so on down to `path` → `path.1`.
 */
export function rotationRenames(path: string, keep: number): [from: string, to: string][] {
  const renames: [string, string][] = [];
  for (let i = keep - 1; i >= 1; i--) renames.push([`${path}.${i}`, `${path}.${i + 1}`]);
  renames.push([path, `${path}.1`]);
  return renames;
}

/** Splits queued lines into the runs that fit: each run is written, then the file is rotated before the next. */
export function planWrites(lines: readonly string[], size: number, maxBytes: number): { runs: string[]; endSize: number } {
  const runs: string[] = [];
  let run = '';
  for (const line of lines) {
    const n = Buffer.byteLength(line);
    if (size > 0 && size + n > maxBytes) {
      runs.push(run);
      run = '';
      size = 0;
    }
    run += line;
    size += n;
  }
  runs.push(run);
  return { runs, endSize: size };
}

export class AuditFile {
  readonly path: string;
  #fd: number;
  #size: number;
  #queue: string[] = [];
  #scheduled: NodeJS.Immediate | undefined;
  #failing = false;
  #closed = false;

  /** Opens (creates) the file; INVALID_ARGUMENT naming `log.dir` when that cannot be done. */
  constructor(private readonly opts: AuditFileOptions) {
    this.path = join(opts.dir, AUDIT_FILE_NAME);
    try {
      mkdirSync(opts.dir, { recursive: true, mode: 0o750 });
      this.#fd = openSync(this.path, 'a', 0o640);
      this.#size = fstatSync(this.#fd).size;
    } catch (e) {
      throw new VolantError('INVALID_ARGUMENT', `cannot open the egress audit file ${this.path}: ${(e as Error).message}; set log.dir to a directory volantd can write`, { path: this.path }, { cause: e });
    }
    if (this.#size > opts.maxBytes) this.#guard(() => this.#rotate());
  }

  /** Queues one record; it is written at the end of this event-loop turn. */
  write(record: object): void {
    if (this.#closed) return;
    this.#queue.push(`${JSON.stringify(record)}\n`);
    this.#scheduled ??= setImmediate(() => this.flush());
  }

  /** Writes every queued record now. */
  flush(): void {
    if (this.#scheduled) clearImmediate(this.#scheduled);
    this.#scheduled = undefined;
    if (this.#queue.length === 0) return;
    const { runs, endSize } = planWrites(this.#queue, this.#size, this.opts.maxBytes);
    this.#queue = [];
    this.#guard(() => {
      runs.forEach((run, i) => {
        if (i > 0) this.#rotate();
        if (run !== '') writeSync(this.#fd, run);
      });
      this.#size = endSize;
      this.#failing = false;
    });
  }

  /** Writes what is queued and closes the file; later records are dropped. */
  close(): void {
    if (this.#closed) return;
    this.flush();
    this.#closed = true;
    closeSync(this.#fd);
  }

  #rotate(): void {
    for (const [from, to] of rotationRenames(this.path, this.opts.keep)) {
      try {
        renameSync(from, to);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      }
    }
    const fd = openSync(this.path, 'a', 0o640);
    closeSync(this.#fd);
    this.#fd = fd;
    this.#size = 0;
  }

  #guard(fn: () => void): void {
    try {
      fn();
    } catch (e) {
      if (!this.#failing) this.opts.onError?.(e);
      this.#failing = true;
      try {
        this.#size = fstatSync(this.#fd).size;
      } catch {
        // the descriptor itself is gone: the next write reports it
      }
    }
  }
}

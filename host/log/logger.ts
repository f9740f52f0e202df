/**
 * volantd's one logger (pino). Made once per process — by the daemon (`runDaemon`), or by the vsock
 * device back-end for its own log file — and handed down: every module that logs gets a child
 * that names it (`module`), and the VM or request it acts for (`vm`, `reqId`). What must hold:
 *
 *  - One JSON object per line (docs/logging.md lists the fields): `level` as its name, `time` in
 *    ISO 8601, `name` (the process), `msg`, and the bindings. Errors are logged under `err`
 *    (pino's serializer: type, message, stack, code and the other own properties).
 *  - The daemon writes to stderr synchronously: a line logged before a crash is on disk (or in
 *    the journal) when the process dies.
 *  - Nothing the guest runs links this (kestrel keeps plain console lines on the serial console),
 *    and volar prints human text: only host daemons log through here.
 */

import { pino, type DestinationStream, type Logger } from 'pino';
import type { LogLevel } from './levels.js';

export type { DestinationStream, Logger };

export interface LoggerOptions {
  /** The process, in every line's `name`: `volantd`, `vsock-device`. */
  name: string;
  level: LogLevel;
  /** Bindings every line carries (the device back-end: its VM's CID). */
  base?: Record<string, unknown>;
}

/** stderr, written synchronously. */
export function stderrDestination(): DestinationStream {
  return pino.destination({ dest: 2, sync: true });
}

export function createLogger(opts: LoggerOptions, destination: DestinationStream = stderrDestination()): Logger {
  return pino(
    {
      name: opts.name,
      level: opts.level,
      base: { pid: process.pid, ...opts.base },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    destination,
  );
}

/** A logger that writes nothing (tests; callers that were given none). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}

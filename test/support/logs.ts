/**
 * Loggers for tests: volantd's own format (host/log/logger.ts) written into memory, so a test can
 * assert what was logged and nothing spews JSON into the test output.
 */

import { createLogger, type Logger } from '../../host/log/logger.js';
import type { LogLevel } from '../../host/log/levels.js';

export interface LogRecord {
  level: string;
  msg: string;
  [key: string]: unknown;
}

export interface CapturedLogs {
  logger: Logger;
  /** Every line written so far, parsed. */
  records(): LogRecord[];
}

/** A logger like volantd's (same fields) that keeps its lines in memory. */
export function captureLogs(level: LogLevel = 'debug'): CapturedLogs {
  const lines: string[] = [];
  const logger = createLogger({ name: 'volantd', level }, { write: (line: string) => void lines.push(line) });
  return { logger, records: () => lines.map((l) => JSON.parse(l) as LogRecord) };
}

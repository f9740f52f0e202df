/**
 * The text format of `GET /api/v1/vms/:name/logs`: one line per log line, prefixed with where it
 * came from, `serial| ` (the VM's console: kernel and kestrel) or `workload| ` (kestrel's
 * `/v1/logs`). The route writes it with `LinePrefixer`; `volar vms logs --json` reads it back with
 * `LogLineReader`. Both cut a byte stream into whole lines the same way (`LineSplitter`): a
 * partial last line waits for its end, and `\r` before a line end is dropped.
 */

export const LOG_SOURCES = ['serial', 'workload'] as const;
export type LogSource = (typeof LOG_SOURCES)[number];

/** Chunks in, complete lines out (without their line ends). */
export class LineSplitter {
  private pending = '';

  push(chunk: string): string[] {
    const lines = (this.pending + chunk).split('\n');
    this.pending = lines.pop() ?? '';
    return lines.map((l) => l.replace(/\r$/, ''));
  }

  /** The unterminated rest, if any, as a last line. */
  flush(): string[] {
    const rest = this.pending;
    this.pending = '';
    return rest === '' ? [] : [rest.replace(/\r$/, '')];
  }
}

/** Writes: each line of a stream, prefixed with its source. */
export class LinePrefixer {
  private readonly lines = new LineSplitter();
  constructor(private readonly prefix: string) {}
  push(chunk: string): string {
    return this.lines
      .push(chunk)
      .map((l) => `${this.prefix}${l}\n`)
      .join('');
  }
  flush(): string {
    return this.lines
      .flush()
      .map((l) => `${this.prefix}${l}\n`)
      .join('');
  }
}

export function logPrefix(source: LogSource): string {
  return `${source}| `;
}

/** One line of the logs answer. */
export interface LogLine {
  source: string;
  line: string;
}

export function parseLogLine(raw: string): LogLine {
  const m = /^([a-z]+)\| ?(.*)$/s.exec(raw);
  return m ? { source: m[1]!, line: m[2]! } : { source: 'unknown', line: raw };
}

/** Reads: the logs answer, whatever its chunking, as parsed lines. */
export class LogLineReader {
  private readonly lines = new LineSplitter();
  push(chunk: string): LogLine[] {
    return this.lines.push(chunk).map(parseLogLine);
  }
  flush(): LogLine[] {
    return this.lines.flush().map(parseLogLine);
  }
}

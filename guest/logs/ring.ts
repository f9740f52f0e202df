/**
 * The workload's recent output: a bounded ring of lines that /v1/logs serves and follows.
 *
 * What must hold: memory stays under MAX_LOG_RING_BYTES however much the workload writes (the
 * oldest lines go first), a line longer than MAX_LOG_LINE_BYTES is cut into pieces rather than
 * buffered without end, and a follower sees every line after the ones it was sent, in order.
 * Lines keep a sequence number so a follower can tell what it missed.
 */

export const MAX_LOG_RING_BYTES = 1024 * 1024;
export const MAX_LOG_LINE_BYTES = 16 * 1024;

export type LogStream = 'stdout' | 'stderr';

export interface LogLine {
  seq: number;
  stream: LogStream;
  /** ms since the epoch */
  time: number;
  text: string;
}

type Follower = (line: LogLine) => void;

export class LogRing {
  private lines: LogLine[] = [];
  private head = 0;
  private bytes = 0;
  private nextSeq = 1;
  private readonly followers = new Set<Follower>();
  /** Lines pushed out of the ring to stay under the byte limit. */
  dropped = 0;

  constructor(private readonly maxBytes = MAX_LOG_RING_BYTES) {}

  push(stream: LogStream, text: string): void {
    const line: LogLine = { seq: this.nextSeq++, stream, time: Date.now(), text };
    this.lines.push(line);
    this.bytes += text.length + 1;
    while (this.bytes > this.maxBytes && this.head < this.lines.length) {
      this.bytes -= this.lines[this.head]!.text.length + 1;
      this.head++;
      this.dropped++;
    }
    if (this.head > 1024 && this.head * 2 > this.lines.length) {
      this.lines = this.lines.slice(this.head);
      this.head = 0;
    }
    for (const f of this.followers) f(line);
  }

  snapshot(): LogLine[] {
    return this.lines.slice(this.head);
  }

  follow(f: Follower): () => void {
    this.followers.add(f);
    return () => this.followers.delete(f);
  }

  get size(): { lines: number; bytes: number } {
    return { lines: this.lines.length - this.head, bytes: this.bytes };
  }
}

/**
 * Cuts a byte stream into lines (without the `\n`). Bytes are kept until a newline arrives or
 * MAX_LOG_LINE_BYTES have gathered; `end()` flushes a last partial line.
 */
export class LineSplitter {
  private pending: Buffer[] = [];
  private pendingBytes = 0;

  constructor(
    private readonly onLine: (text: string) => void,
    private readonly maxLineBytes = MAX_LOG_LINE_BYTES,
  ) {}

  write(chunk: Buffer): void {
    let start = 0;
    while (start < chunk.length) {
      const nl = chunk.indexOf(10, start);
      const end = nl < 0 ? chunk.length : nl;
      let piece = chunk.subarray(start, end);
      while (this.pendingBytes + piece.length > this.maxLineBytes) {
        const take = this.maxLineBytes - this.pendingBytes;
        this.pending.push(piece.subarray(0, take));
        this.pendingBytes += take;
        this.flush();
        piece = piece.subarray(take);
      }
      if (piece.length > 0) {
        this.pending.push(piece);
        this.pendingBytes += piece.length;
      }
      if (nl < 0) break;
      this.flush();
      start = nl + 1;
    }
  }

  end(): void {
    if (this.pendingBytes > 0) this.flush();
  }

  private flush(): void {
    const text = Buffer.concat(this.pending).toString('utf8').replace(/\r$/, '');
    this.pending = [];
    this.pendingBytes = 0;
    this.onLine(text);
  }
}

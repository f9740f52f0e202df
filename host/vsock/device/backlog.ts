/**
 * A connection's guest → host backlog: the bytes the guest sent that the host socket would not
 * take yet. A fixed ring of the connection's advertised buffer (credit.ts CONN_BUFFER_BYTES), so
 * it can never need to grow: the guest may not have more than that in flight, and a guest that
 * tries is reset before its bytes get here. Allocated on first use (most connections never
 * back up) and kept for the connection's life.
 */

import { EAGAIN } from '../../../native/device-io.js';

export type WriteFn = (fd: number, array: Uint8Array, offset: number, length: number) => number;

export class Backlog {
  #buf: Uint8Array | undefined;
  #head = 0;
  #size = 0;

  constructor(readonly capacity: number) {}

  get size(): number {
    return this.#size;
  }

  /** Appends bytes; false (and nothing appended) when they do not fit. */
  push(from: Uint8Array, offset: number, length: number): boolean {
    if (length > this.capacity - this.#size) return false;
    this.#buf ??= new Uint8Array(this.capacity);
    const buf = this.#buf;
    const tail = (this.#head + this.#size) % this.capacity;
    const first = Math.min(length, this.capacity - tail);
    buf.set(from.subarray(offset, offset + first), tail);
    if (first < length) buf.set(from.subarray(offset + first, offset + length), 0);
    this.#size += length;
    return true;
  }

  /** Writes as much as `fd` takes; returns bytes written (>= 0) or a negative errno other than EAGAIN. */
  flush(fd: number, write: WriteFn): number {
    let written = 0;
    while (this.#size > 0) {
      const chunk = Math.min(this.#size, this.capacity - this.#head);
      const n = write(fd, this.#buf!, this.#head, chunk);
      if (n === -EAGAIN) break;
      if (n < 0) return n;
      written += n;
      this.#head = (this.#head + n) % this.capacity;
      this.#size -= n;
      if (n < chunk) break;
    }
    if (this.#size === 0) this.#head = 0;
    return written;
  }

  clear(): void {
    this.#head = 0;
    this.#size = 0;
  }
}

/**
 * The upstream → client direction of a CONNECT tunnel, which carries the bulk of the bytes
 * (downloads). Node reads a socket at most 64 KiB at a time into a fresh buffer: one syscall and
 * one JavaScript callback per 64 KiB. Reading through `onread` with a buffer that doubles while
 * reads fill it (up to MAX_READ_BYTES) and halves when they do not cuts that work several-fold
 * for bulk transfers without holding large buffers for interactive ones. A buffer returns to a
 * small free list only after the writer has finished with it (write callback), so a chunk still
 * queued is never overwritten; recycling keeps a bulk tunnel from allocating (and the garbage
 * collector from chasing) a fresh megabyte per read. At most MAX_FREE_BUFFERS wait per tunnel,
 * and the list is dropped whenever the read size changes.
 *
 * Bytes that arrive before the tunnel is allowed to relay (e.g. before the ClientHello check)
 * are held and reading pauses; `relay` delivers them first. Backpressure: when the client's
 * writer is full, reading stops until it drains.
 */

import type { Socket } from 'node:net';

export const MIN_READ_BYTES = 64 * 1024;
export const MAX_READ_BYTES = 1024 * 1024;
export const MAX_FREE_BUFFERS = 2;

export class UpstreamReader {
  private size = MIN_READ_BYTES;
  private sink: ((chunk: Buffer, whole: Buffer) => boolean) | undefined;
  private readonly early: [Buffer, Buffer][] = [];
  private readonly free: Buffer[] = [];
  private source: Socket | undefined;

  /** Pass as the `onread` option of the upstream socket. */
  readonly onread = {
    buffer: (): Buffer => this.free.pop() ?? Buffer.allocUnsafe(this.size),
    callback: (nread: number, buf: Buffer): boolean => this.onRead(nread, buf),
  };

  private onRead(nread: number, buf: Buffer): boolean {
    const before = this.size;
    if (nread === this.size && this.size < MAX_READ_BYTES) this.size *= 2;
    else if (nread < this.size / 4 && this.size > MIN_READ_BYTES) this.size /= 2;
    if (this.size !== before) this.free.length = 0;
    const chunk = buf.subarray(0, nread);
    if (this.sink) return this.sink(chunk, buf);
    this.early.push([chunk, buf]);
    this.source?.pause();
    return false;
  }

  /** Remembers the socket so early bytes can pause it; call right after connecting. */
  attach(src: Socket): void {
    this.source = src;
  }

  /** Relays everything read from `src` into `dest`, with backpressure; ends `dest` when `src` ends. */
  relay(src: Socket, dest: Socket): void {
    this.source = src;
    const recycle = (whole: Buffer) => (err?: Error | null) => {
      if (!err && whole.length === this.size && this.free.length < MAX_FREE_BUFFERS) this.free.push(whole);
    };
    this.sink = (chunk, whole) => {
      if (dest.write(chunk, recycle(whole))) return true;
      src.pause();
      dest.once('drain', () => src.resume());
      return false;
    };
    let ok = true;
    for (const [chunk, whole] of this.early.splice(0)) ok = dest.write(chunk, recycle(whole));
    if (src.readableEnded) {
      dest.end();
      return;
    }
    src.on('end', () => dest.end());
    if (ok) src.resume();
    else dest.once('drain', () => src.resume());
  }
}

/**
 * The device's event loop inside Node's: one epoll set (native/device-io.ts) holding every fd the
 * device serves, each with a handler. When the set is ready, the ready events are drained in
 * batches and dispatched; then the `afterBatch` hooks run once. That is where the device
 * publishes its used rings and interrupts the guest, so a burst of events costs one interrupt,
 * not one per packet.
 *
 * `requestFlush()` runs the hooks soon (setImmediate) when something outside an epoll batch (a
 * timer) produced work. Tokens are small integers reused through a free list, but never within
 * the batch that freed them (an event already fetched for the old fd must not reach a new one).
 */

import { createEpoll, type NativeEpoll } from '../../../native/device-io.js';

/** Ready events fetched per epoll_wait call. */
export const EVENTS_PER_WAIT = 256;
/** epoll_wait rounds per loop turn before yielding to the rest of Node (timers, other I/O). */
export const MAX_WAITS_PER_TURN = 16;

export type EventHandler = (events: number) => void;

export class Reactor {
  readonly #epoll: NativeEpoll;
  readonly #handlers: (EventHandler | undefined)[] = [];
  readonly #free: number[] = [];
  /** Tokens removed during a batch: reused only after it, so a stale event of that batch cannot reach a new owner. */
  readonly #freedInBatch: number[] = [];
  readonly #events = new Int32Array(EVENTS_PER_WAIT * 2);
  readonly #after: (() => void)[] = [];
  #flushQueued = false;
  #closed = false;

  constructor(private readonly onError: (error: unknown) => void) {
    this.#epoll = createEpoll(() => this.#dispatch());
  }

  /** Adds `fd` with `events` (EPOLL* bits); the handler gets the ready bits. Returns its token. */
  add(fd: number, events: number, handler: EventHandler): number {
    const token = this.#free.pop() ?? this.#handlers.length;
    this.#handlers[token] = handler;
    try {
      this.#epoll.add(fd, events, token);
    } catch (e) {
      this.#handlers[token] = undefined;
      this.#free.push(token);
      throw e;
    }
    return token;
  }

  /** Forgets a token. Call before closing its fd, or right after (close() already leaves epoll). */
  remove(fd: number, token: number, fdStillOpen: boolean): void {
    if (this.#handlers[token] === undefined) return;
    this.#handlers[token] = undefined;
    this.#freedInBatch.push(token);
    if (fdStillOpen) {
      try {
        this.#epoll.remove(fd);
      } catch {
        // already gone from the set
      }
    }
  }

  afterBatch(hook: () => void): void {
    this.#after.push(hook);
  }

  requestFlush(): void {
    if (this.#flushQueued || this.#closed) return;
    this.#flushQueued = true;
    setImmediate(() => {
      this.#flushQueued = false;
      this.#runAfter();
    });
  }

  close(): void {
    this.#closed = true;
    this.#epoll.close();
  }

  #dispatch(): void {
    const ev = this.#events;
    try {
      for (let round = 0; round < MAX_WAITS_PER_TURN && !this.#closed; round++) {
        const n = this.#epoll.wait(ev);
        if (n <= 0) break;
        for (let i = 0; i < n; i++) {
          const handler = this.#handlers[ev[2 * i]!];
          if (handler) handler(ev[2 * i + 1]! >>> 0);
        }
        this.#free.push(...this.#freedInBatch.splice(0));
        if (n < EVENTS_PER_WAIT) break;
      }
      this.#free.push(...this.#freedInBatch.splice(0));
      this.#runAfter();
    } catch (e) {
      this.onError(e);
    }
  }

  #runAfter(): void {
    if (this.#closed) return;
    try {
      for (const hook of this.#after) hook();
    } catch (e) {
      this.onError(e);
    }
  }
}

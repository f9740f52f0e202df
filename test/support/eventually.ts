/**
 * Waiting on an event in tests: `eventually` re-checks a condition until it holds, instead of a
 * fixed sleep that guesses how long something takes. It polls (the only way to watch state that
 * emits no event, such as a file, a process table or a neighbour entry), fails with the last
 * reason when the deadline passes, and never decides a result by the clock: a condition that
 * holds at once returns at once.
 */

export const EVENTUALLY_TIMEOUT_MS = 10_000;
export const EVENTUALLY_POLL_MS = 10;

export interface EventuallyOptions {
  timeoutMs?: number;
  pollMs?: number;
  /** What is being waited for, for the failure message. */
  what?: string;
}

/**
 * Resolves with the first truthy value `check` returns (a thrown error counts as "not yet");
 * rejects after `timeoutMs` with the last error or falsy value.
 */
export async function eventually<T>(check: () => T | Promise<T>, options: EventuallyOptions = {}): Promise<NonNullable<T>> {
  const timeoutMs = options.timeoutMs ?? EVENTUALLY_TIMEOUT_MS;
  const pollMs = options.pollMs ?? EVENTUALLY_POLL_MS;
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value) return value as NonNullable<T>;
      last = value;
    } catch (e) {
      last = e;
    }
    if (Date.now() >= deadline) {
      const why = last instanceof Error ? last.message : `last value ${JSON.stringify(last)}`;
      throw new Error(`${options.what ?? 'condition'} did not hold within ${timeoutMs} ms: ${why}`, { cause: last });
    }
    await new Promise((r) => setTimeout(r, pollMs));
  }
}

/** Resolves when `emitter` emits `event` (with its arguments), rejects after `timeoutMs`. */
export function nextEvent<A extends unknown[]>(
  emitter: { once(event: string, listener: (...args: A) => void): unknown; off(event: string, listener: (...args: A) => void): unknown },
  event: string,
  timeoutMs = EVENTUALLY_TIMEOUT_MS,
): Promise<A> {
  return new Promise((resolve, reject) => {
    const listener = (...args: A): void => {
      clearTimeout(timer);
      resolve(args);
    };
    const timer = setTimeout(() => {
      emitter.off(event, listener);
      reject(new Error(`no ${event} event within ${timeoutMs} ms`));
    }, timeoutMs);
    emitter.once(event, listener);
  });
}

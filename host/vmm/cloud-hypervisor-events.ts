/**
 * Cloud Hypervisor's event monitor (`--event-monitor path=P`): the VMM appends one JSON object
 * per event, `{"timestamp": {...}, "source": "vm", "event": "rebooting", "properties": ...}`,
 * each followed by a blank line (vmm/src/lib.rs `start_event_monitor_thread`).
 *
 * Why we read it: a guest reboot, and a guest panic with `panic=-1`, make Cloud Hypervisor
 * reboot the VM in place (EpollDispatch::Reset → vm_reboot) where QEMU with `-no-reboot` exits.
 * Volant's contract is that a guest reboot or panic ends the VMM, so the launcher watches for
 * `vm/rebooting` and shuts the VMM down. Guest power-off already ends the process
 * (EpollDispatch::Exit → vmm_shutdown).
 */

import { closeSync, openSync, readSync, statSync } from 'node:fs';

/** How often the event file is checked for new bytes. */
export const EVENT_POLL_MS = 200;
/** An event longer than this is not one the VMM wrote; the buffer is dropped. */
const MAX_EVENT_BYTES = 64 * 1024;

export interface ChEvent {
  source: string;
  event: string;
}

/** Splits complete events off `buffer`; returns them and the incomplete rest (pure). */
export function parseChEvents(buffer: string): { events: ChEvent[]; rest: string } {
  const parts = buffer.split(/\n[ \t]*\n/);
  const rest = parts.pop() ?? '';
  const events: ChEvent[] = [];
  for (const part of parts) {
    try {
      const e = JSON.parse(part) as Partial<ChEvent>;
      if (typeof e.source === 'string' && typeof e.event === 'string') events.push({ source: e.source, event: e.event });
    } catch {}
  }
  return { events, rest: rest.length > MAX_EVENT_BYTES ? '' : rest };
}

/**
 * Calls `onEvent` for each event appended to `path` from `fromOffset` on (the file may not exist
 * yet). Returns a stop function.
 */
export function watchChEvents(path: string, onEvent: (e: ChEvent) => void, fromOffset = 0): () => void {
  let offset = fromOffset;
  let buffered = '';
  const timer = setInterval(() => {
    let size: number;
    try {
      size = statSync(path).size;
    } catch {
      return;
    }
    if (size < offset) offset = 0;
    if (size === offset) return;
    const fd = openSync(path, 'r');
    try {
      const buf = Buffer.alloc(Math.min(size - offset, MAX_EVENT_BYTES));
      const n = readSync(fd, buf, 0, buf.length, offset);
      offset += n;
      buffered += buf.subarray(0, n).toString('utf8');
    } finally {
      closeSync(fd);
    }
    const { events, rest } = parseChEvents(buffered);
    buffered = rest;
    for (const e of events) onEvent(e);
  }, EVENT_POLL_MS);
  timer.unref();
  return () => clearInterval(timer);
}

/** The size of `path` now, or 0 (where an adopted VMM's watcher starts, so old events are not replayed). */
export function currentSize(path: string): number {
  try {
    return statSync(path).size;
  } catch {
    return 0;
  }
}

/**
 * `vms create` progress from volantd's `/api/v1/events` (server-sent events): the parser turns
 * the byte stream into events whatever the chunking, and `describeVmEvent` says what a VM's
 * event means in one line. Only `id`, `event` and `data` fields are used; comment lines
 * (heartbeats) and unknown fields are skipped, as the SSE format asks.
 */

import type { Readable } from 'node:stream';
import type { VmEvent } from '../orchestrator/events.js';

export interface SseMessage {
  id?: string;
  event: string;
  data: string;
}

/** Incremental SSE parser: feed chunks, get the complete messages so far. */
export class SseParser {
  private buffer = '';
  /** A chunk's last '\r' may be the first half of a CRLF, so it waits for the next chunk. */
  private carry = '';

  push(chunk: string): SseMessage[] {
    let text = this.carry + chunk;
    this.carry = text.endsWith('\r') ? '\r' : '';
    if (this.carry) text = text.slice(0, -1);
    this.buffer += text.replace(/\r\n?/g, '\n');
    const out: SseMessage[] = [];
    for (let end = this.buffer.indexOf('\n\n'); end >= 0; end = this.buffer.indexOf('\n\n')) {
      const block = this.buffer.slice(0, end);
      this.buffer = this.buffer.slice(end + 2);
      const msg: SseMessage = { event: 'message', data: '' };
      const data: string[] = [];
      for (const line of block.split('\n')) {
        if (line === '' || line.startsWith(':')) continue;
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
        if (field === 'data') data.push(value);
        else if (field === 'event') msg.event = value;
        else if (field === 'id') msg.id = value;
      }
      if (data.length === 0) continue;
      msg.data = data.join('\n');
      out.push(msg);
    }
    return out;
  }
}

/** One line for a VM event: `creating`, `phase: launch VMM`, `failed: <why>`, `deleted`. */
export function describeVmEvent(e: Pick<VmEvent, 'type' | 'state' | 'phase' | 'error'>): string {
  if (e.type === 'vm.phase') return `phase: ${e.phase ?? '?'}`;
  if (e.type === 'vm.deleted') return 'deleted';
  return e.error ? `${e.state}: ${e.error}` : `${e.state}`;
}

/** Calls `onEvent` for every event about `vm` on an events stream until the stream ends. */
export async function followVmEvents(stream: Readable, vm: string, onEvent: (e: VmEvent) => void): Promise<void> {
  const parser = new SseParser();
  const text = new TextDecoder();
  try {
    for await (const chunk of stream) {
      for (const m of parser.push(typeof chunk === 'string' ? chunk : text.decode(chunk as Uint8Array, { stream: true }))) {
        let e: VmEvent;
        try {
          e = JSON.parse(m.data) as VmEvent;
        } catch {
          continue;
        }
        if (e.vm === vm) onEvent(e);
      }
    }
  } catch (e) {
    // The command destroys the stream when it is done; that ends the progress, nothing else.
    if (!stream.destroyed) throw e;
  }
}

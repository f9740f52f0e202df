/**
 * The in-process VM event bus the API turns into server-sent events. Subscribers are called
 * synchronously in publish order; one that throws is dropped rather than breaking the publisher.
 * Each event carries a monotonically increasing `id` so an SSE client can tell it missed some.
 * `vm.state` marks a state change; `vm.phase` names the boot step a creating or starting VM has
 * entered (create tap, launch VMM, wait for kestrel /healthz, ...), for progress displays.
 */

import type { VmState } from './state.js';

export interface VmEvent {
  id: number;
  type: 'vm.state' | 'vm.deleted' | 'vm.phase';
  vm: string;
  state?: VmState;
  /** The boot step entered (`vm.phase` only). */
  phase?: string;
  error?: string;
  at: string;
}

export type VmEventListener = (event: VmEvent) => void;

export class EventBus {
  private nextId = 1;
  private readonly listeners = new Set<VmEventListener>();

  publish(event: Omit<VmEvent, 'id' | 'at'>): VmEvent {
    const full: VmEvent = { ...event, id: this.nextId++, at: new Date().toISOString() };
    for (const l of [...this.listeners]) {
      try {
        l(full);
      } catch {
        this.listeners.delete(l);
      }
    }
    return full;
  }

  subscribe(listener: VmEventListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  get subscriberCount(): number {
    return this.listeners.size;
  }
}

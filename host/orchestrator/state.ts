/**
 * The VM life cycle as an explicit state machine. Every state change the orchestrator makes goes
 * through `assertTransition`, so an impossible change (running → creating, a second start of a
 * starting VM) is a bug caught at the point it happens, not a row that silently lies.
 *
 *   creating ─────────────────▶ running ──▶ stopping ──▶ stopped
 *                                  ▲  │                      │
 *   stopped/failed ──▶ starting ───┘  └──▶ failed ◀──────────┘ (start again: ──▶ starting)
 *
 * `creating` is a create in progress and nothing else: the VM has never run, so whatever
 * interrupts it (a failure, volantd killed) removes the row, and after a restart a row still in
 * `creating` is known to be a create that never answered. `starting` is a start of an existing
 * VM. `stopped` and `failed` are at rest.
 *
 * A VM row holds its address lease and vsock CID for its whole life (the store takes them in
 * the transaction that inserts the row and releases them in the one that deletes it), so a VM
 * restarts with the same address. What else each state holds:
 *  - creating / starting: tap, egress proxy and VMM being brought up; /healthz awaited.
 *  - running:  VMM process alive, kestrel answered /healthz.
 *  - stopping: a stop was asked for; the VMM is shutting down.
 *  - stopped:  no process, no tap, no egress listener.
 *  - failed:   like stopped, and `error` says what failed (a start that did not come up, a VMM
 *              that died). A create that fails never rests here: its row is removed.
 */

import { VolantError } from '../../shared/errors.js';
import type { VmState } from '../store/vms.js';

export { VM_STATES, type VmState } from '../store/vms.js';

export const TRANSITIONS: Readonly<Record<VmState, readonly VmState[]>> = {
  creating: ['running'],
  starting: ['running', 'failed'],
  running: ['stopping', 'stopped', 'failed'],
  stopping: ['stopped', 'failed'],
  stopped: ['starting'],
  failed: ['starting'],
};

export function canTransition(from: VmState, to: VmState): boolean {
  return TRANSITIONS[from].includes(to);
}

export function assertTransition(vmName: string, from: VmState, to: VmState): void {
  if (!canTransition(from, to)) {
    throw new VolantError('INVALID_STATE', `VM ${vmName} is ${from}; it cannot become ${to}`, { state: from, wanted: to });
  }
}

/** States in which a VMM process may exist (and so must be stopped or adopted). */
export function hasProcess(state: VmState): boolean {
  return state === 'starting' || state === 'running' || state === 'stopping';
}

/** States at rest, from which `start` and `delete` without force are allowed. */
export function isAtRest(state: VmState): boolean {
  return state === 'stopped' || state === 'failed';
}

/** What a VMM exit means, by the state the VM was in when its process went away. */
export function stateAfterExit(state: VmState, exit: { code: number | null; signal: string | null }): VmState {
  if (state === 'stopping') return 'stopped';
  if (state === 'running' && exit.code === 0 && exit.signal === null) return 'stopped';
  return 'failed';
}

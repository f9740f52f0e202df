/** The VM state machine, exit interpretation and the per-VM mutex. */

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { EventBus } from '../../host/orchestrator/events.js';
import { eventually } from '../support/eventually.js';
import { KeyedMutex } from '../../host/orchestrator/keyed-mutex.js';
import { assertTransition, canTransition, hasProcess, isAtRest, stateAfterExit, TRANSITIONS, VM_STATES, type VmState } from '../../host/orchestrator/state.js';

describe('VM state machine', () => {
  const allowed: [VmState, VmState][] = [
    ['creating', 'running'],
    ['starting', 'running'],
    ['starting', 'failed'],
    ['running', 'stopping'],
    ['running', 'stopped'],
    ['running', 'failed'],
    ['stopping', 'stopped'],
    ['stopping', 'failed'],
    ['stopped', 'starting'],
    ['failed', 'starting'],
  ];
  it('allows exactly the listed transitions', () => {
    for (const from of VM_STATES) {
      for (const to of VM_STATES) {
        const expected = allowed.some(([f, t]) => f === from && t === to);
        assert.equal(canTransition(from, to), expected, `${from} → ${to}`);
      }
    }
    assert.deepEqual(Object.keys(TRANSITIONS).sort(), [...VM_STATES].sort());
  });
  it('a refused transition is INVALID_STATE naming both states', () => {
    assert.throws(() => assertTransition('web', 'running', 'creating'), (e: Error & { code?: string }) => e.code === 'INVALID_STATE' && /web is running; it cannot become creating/.test(e.message));
    assert.throws(() => assertTransition('web', 'creating', 'starting'), /creating; it cannot become starting/);
  });
  it('process-holding and at-rest states partition the live states', () => {
    assert.deepEqual(VM_STATES.filter(hasProcess), ['starting', 'running', 'stopping']);
    assert.deepEqual(VM_STATES.filter(isAtRest), ['stopped', 'failed']);
  });
  it('interprets VMM exits by state', () => {
    const cases: [VmState, number | null, string | null, VmState][] = [
      ['running', 0, null, 'stopped'],
      ['running', 1, null, 'failed'],
      ['running', null, 'SIGKILL', 'failed'],
      ['stopping', null, 'SIGKILL', 'stopped'],
      ['stopping', 0, null, 'stopped'],
      ['starting', 0, null, 'failed'],
    ];
    for (const [state, code, signal, want] of cases) assert.equal(stateAfterExit(state, { code, signal }), want, `${state} ${code} ${signal}`);
  });
});

describe('KeyedMutex', () => {
  it('serialises one key, runs different keys in parallel, survives a throwing holder', async () => {
    const m = new KeyedMutex();
    const log: string[] = [];
    // Each holder works until its gate opens, so the order is decided by the test, not by timers.
    const gate = () => {
      let open!: () => void;
      const opened = new Promise<void>((r) => {
        open = r;
      });
      return { opened, open };
    };
    const a1Gate = gate();
    const b1Gate = gate();
    const hold = (key: string, tag: string, until: Promise<void>) =>
      m.run(key, async () => {
        log.push(`${tag}+`);
        await until;
        log.push(`${tag}-`);
      });
    const a1 = hold('a', 'a1', a1Gate.opened);
    const a2 = hold('a', 'a2', Promise.resolve());
    const b1 = hold('b', 'b1', b1Gate.opened);
    const failing = m.run('a', async () => {
      throw new Error('boom');
    });
    await eventually(() => log.includes('a1+') && log.includes('b1+'), { what: 'a1 and b1 holding their keys' });
    assert.ok(!log.includes('a2+'), `a2 waits while a1 holds a: ${log.join(' ')}`);
    b1Gate.open();
    await b1;
    assert.ok(!log.includes('a1-'), 'b finished without waiting for a');
    a1Gate.open();
    await Promise.all([a1, a2, failing.catch(() => undefined)]);
    assert.ok(log.indexOf('a1-') < log.indexOf('a2+'), log.join(' '));
    assert.equal(m.isLocked('a'), false, 'the map is emptied when a queue drains');
  });
});

describe('EventBus', () => {
  it('numbers events, delivers in order, drops a throwing subscriber', () => {
    const bus = new EventBus();
    const got: number[] = [];
    bus.subscribe(() => {
      throw new Error('bad subscriber');
    });
    const off = bus.subscribe((e) => got.push(e.id));
    bus.publish({ type: 'vm.state', vm: 'a', state: 'running' });
    bus.publish({ type: 'vm.deleted', vm: 'a' });
    assert.deepEqual(got, [1, 2]);
    assert.equal(bus.subscriberCount, 1);
    off();
    assert.equal(bus.subscriberCount, 0);
  });
});

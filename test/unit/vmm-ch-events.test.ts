import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseChEvents } from '../../host/vmm/cloud-hypervisor-events.js';

describe('parseChEvents (Cloud Hypervisor event monitor stream)', () => {
  const ev = (source: string, event: string, pretty = false): string =>
    JSON.stringify({ timestamp: { secs: 1, nanos: 2 }, source, event, properties: null }, null, pretty ? 2 : undefined);

  it('splits on the blank line after each event, pretty-printed or not', () => {
    const { events, rest } = parseChEvents(`${ev('vmm', 'starting')}\n\n${ev('vm', 'rebooting', true)}\n\n`);
    assert.deepEqual(events, [
      { source: 'vmm', event: 'starting' },
      { source: 'vm', event: 'rebooting' },
    ]);
    assert.equal(rest, '');
  });

  it('keeps an event that is still being written for the next read', () => {
    const whole = `${ev('vm', 'booted')}\n\n`;
    const first = parseChEvents(`${ev('vm', 'created')}\n\n${whole.slice(0, 20)}`);
    assert.deepEqual(first.events, [{ source: 'vm', event: 'created' }]);
    assert.deepEqual(parseChEvents(first.rest + whole.slice(20)).events, [{ source: 'vm', event: 'booted' }]);
  });

  it('skips garbage and objects that are not events', () => {
    const { events } = parseChEvents(`not json\n\n{"source": 1, "event": "x"}\n\n[]\n\n${ev('vm', 'shutdown')}\n\n`);
    assert.deepEqual(events, [{ source: 'vm', event: 'shutdown' }]);
  });

  it('drops an endless unterminated blob instead of growing without bound', () => {
    assert.equal(parseChEvents('x'.repeat(200_000)).rest, '');
  });
});

import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { containsPowerPress, INPUT_EVENT_BYTES, powerButtonDevices } from '../../guest/boot/power-button.js';

function event(type: number, code: number, value: number): Buffer {
  const b = Buffer.alloc(INPUT_EVENT_BYTES);
  b.writeUInt16LE(type, 16);
  b.writeUInt16LE(code, 18);
  b.writeInt32LE(value, 20);
  return b;
}

describe('power button events', () => {
  const cases: [string, Buffer, boolean][] = [
    ['press', event(1, 116, 1), true],
    ['release only', event(1, 116, 0), false],
    ['another key', event(1, 30, 1), false],
    ['sync event', event(0, 0, 0), false],
    ['press after a sync in one read', Buffer.concat([event(0, 0, 0), event(1, 116, 1)]), true],
    ['a partial event is not read', event(1, 116, 1).subarray(0, 20), false],
    ['empty', Buffer.alloc(0), false],
  ];
  for (const [what, buf, expected] of cases) test(what, () => assert.equal(containsPowerPress(buf), expected));

  test('finds the device by its sysfs name', () => {
    const sys = mkdtempSync(join(tmpdir(), `kestrel-input-${process.pid}-`));
    try {
      for (const [n, name] of [['event0', 'AT Translated Set 2 keyboard'], ['event1', 'Power Button'], ['mouse0', 'Power Button']]) {
        mkdirSync(join(sys, n!, 'device'), { recursive: true });
        writeFileSync(join(sys, n!, 'device', 'name'), `${name}\n`);
      }
      assert.deepEqual(powerButtonDevices(sys), ['/dev/input/event1']);
      assert.deepEqual(powerButtonDevices(join(sys, 'missing')), []);
    } finally {
      rmSync(sys, { recursive: true, force: true });
    }
  });
});

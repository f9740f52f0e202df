/**
 * The ACPI power button, so a VMM's graceful shutdown (QEMU `system_powerdown`, Cloud Hypervisor
 * `vm.shutdown` → ACPI) stops the workload cleanly instead of waiting for the VMM's kill timeout.
 * The kernel's `button` driver exposes the button as an evdev device named "Power Button"; a
 * press is an EV_KEY event for KEY_POWER with value 1. Events are read through a libuv stream
 * (native `socketFromFd`), not a blocking read that would hold a thread-pool thread for ever.
 */

import { openSync, readdirSync, readFileSync } from 'node:fs';
import { socketFromFd } from '../../native/streams.js';

/** `struct input_event` on 64-bit Linux: timeval (16 bytes), type u16, code u16, value s32. */
export const INPUT_EVENT_BYTES = 24;
const EV_KEY = 1;
const KEY_POWER = 116;
const POWER_BUTTON_NAME = 'Power Button';

/** Whether a run of whole input events contains a KEY_POWER press. Trailing partial bytes are ignored. */
export function containsPowerPress(events: Buffer): boolean {
  for (let off = 0; off + INPUT_EVENT_BYTES <= events.length; off += INPUT_EVENT_BYTES) {
    const type = events.readUInt16LE(off + 16);
    const code = events.readUInt16LE(off + 18);
    const value = events.readInt32LE(off + 20);
    if (type === EV_KEY && code === KEY_POWER && value === 1) return true;
  }
  return false;
}

/** Event devices whose name says they are the power button (from sysfs). */
export function powerButtonDevices(sysInput = '/sys/class/input'): string[] {
  let names: string[];
  try {
    names = readdirSync(sysInput).filter((n) => /^event\d+$/.test(n));
  } catch {
    return [];
  }
  return names.filter((n) => {
    try {
      return readFileSync(`${sysInput}/${n}/device/name`, 'utf8').trim() === POWER_BUTTON_NAME;
    } catch {
      return false;
    }
  }).map((n) => `/dev/input/${n}`);
}

/** Calls `onPress` once on the first power-button press; returns how many devices it watches. */
export function watchPowerButton(onPress: () => void, devices = powerButtonDevices()): number {
  let pressed = false;
  let pending: Buffer = Buffer.alloc(0);
  for (const path of devices) {
    const stream = socketFromFd(openSync(path, 'r'));
    stream.on('data', (chunk: Buffer) => {
      pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
      const whole = pending.length - (pending.length % INPUT_EVENT_BYTES);
      const events = pending.subarray(0, whole);
      pending = pending.subarray(whole);
      if (!pressed && containsPowerPress(events)) {
        pressed = true;
        onPress();
      }
    });
    stream.on('error', () => stream.destroy());
    stream.unref();
  }
  return devices.length;
}

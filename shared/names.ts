/**
 * Names the host derives for a VM. VM names are user input that ends up in interface names,
 * file names, kernel parameters and URLs, so they are checked once here; the derived tap name
 * and MAC are pure functions of the name, so they are stable for the VM's life and reproducible
 * after a daemon restart without reading state.
 */

import { createHash } from 'node:crypto';
import { VolantError } from './errors.js';

/** Letters, digits, '-' and '_'; starts with a letter or digit; at most 63 characters. */
export const VM_NAME_PATTERN = '^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$';
const VM_NAME = new RegExp(VM_NAME_PATTERN);

/** Plugin names follow the same rule (they become file names in the image store). */
export const PLUGIN_NAME_PATTERN = VM_NAME_PATTERN;

export function isValidVmName(name: unknown): name is string {
  return typeof name === 'string' && VM_NAME.test(name);
}

export function assertVmName(name: unknown, what = 'VM name'): string {
  if (!isValidVmName(name)) {
    const shown = typeof name === 'string' ? JSON.stringify(name.slice(0, 80)) : typeof name;
    throw new VolantError('INVALID_ARGUMENT', `${what} ${shown} is not allowed: use 1-63 letters, digits, '-' or '_', starting with a letter or digit`);
  }
  return name;
}

/** IFNAMSIZ is 16 including the NUL. */
export const MAX_IFNAME_BYTES = 15;

const BASE32 = 'abcdefghijklmnopqrstuvwxyz234567';

function digest(tag: string, name: string): Buffer {
  return createHash('sha256').update(tag).update('\0').update(name).digest();
}

function base32(bytes: Buffer, chars: number): string {
  let out = '';
  let acc = 0;
  let bits = 0;
  for (const b of bytes) {
    acc = (acc << 8) | b;
    bits += 8;
    while (bits >= 5 && out.length < chars) {
      out += BASE32[(acc >>> (bits - 5)) & 31];
      bits -= 5;
    }
    if (out.length >= chars) break;
  }
  return out;
}

/**
 * `vt` + up to 4 readable characters of the name + `-` + 8 base32 characters (40 bits) of a
 * hash of the exact name: at most 15 bytes, only `[a-z0-9-]`, and names that differ only in
 * case or punctuation still get different taps because the hash sees the exact name.
 */
export function tapName(vmName: string): string {
  assertVmName(vmName);
  const readable = vmName.toLowerCase().replace(/[^a-z0-9]/g, '').slice(0, 4);
  const name = `vt${readable}-${base32(digest('volant-tap', vmName), 8)}`;
  return name;
}

/** `02:` (locally administered, unicast) followed by five bytes of a hash of the name. */
export function macAddress(vmName: string): string {
  assertVmName(vmName);
  const d = digest('volant-mac', vmName);
  const bytes = [0x02, d[0]!, d[1]!, d[2]!, d[3]!, d[4]!];
  return bytes.map((b) => b.toString(16).padStart(2, '0')).join(':');
}

/** A host name for the guest: lower case, '_' becomes '-', valid as a DNS label. */
export function guestHostname(vmName: string): string {
  assertVmName(vmName);
  const h = vmName.toLowerCase().replace(/_/g, '-').replace(/-+$/, '');
  return h === '' ? 'vm' : h;
}

/**
 * Finds and loads volant_native.node and types its raw functions. Search order (first hit wins):
 *   1. $VOLANT_NATIVE_ADDON, when set (and only it: an explicit path that is wrong is an error);
 *   2. next to the running module (the guest image puts it beside the kestrel bundle);
 *   3. native/build/Release relative to the source layout (native/*.ts) or the dist layout
 *      (dist/native/*.js).
 * Loading is lazy and remembered, so a host without the addon can still import this module and
 * ask `nativeAvailable()`.
 */

import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ADDON_FILE = 'volant_native.node';

type ConnectCallback = (error: Error | null, fd?: number) => void;

/** The addon's epoll set (native/src/device_io.cc); native/device-io.ts documents it. */
export interface NativeEpoll {
  add(fd: number, events: number, token: number): void;
  modify(fd: number, events: number, token: number): void;
  remove(fd: number): void;
  wait(out: Int32Array): number;
  close(): void;
}

/** The raw addon. Arguments are validated by native/index.ts; the C++ checks types again. */
export interface VolantNativeAddon {
  vsockListen(cid: number, port: number, backlog: number): { fd: number; port: number };
  vsockConnect(cid: number, port: number, callback: ConnectCallback): void;
  vsockLocalCid(): number;
  unixListen(path: string, backlog: number): number;
  tcp4Connect(address: number, port: number, callback: ConnectCallback): void;
  socketPair(): [number, number];
  closeFd(fd: number): void;
  interfaceUp(name: string): void;
  setInterfaceAddress(name: string, address: number, prefix: number): void;
  addDefaultRoute(gateway: number, device?: string): void;
  sethostname(name: string): void;
  finitModule(path: string, params: string): boolean;
  reboot(how: string): void;
  setChildSubreaper(): void;
  peekExitedChild(): number;
  reapChild(pid: number): boolean;
  Epoll: new (onReady: () => void) => NativeEpoll;
  recvMsg(fd: number, array: Uint8Array, offset: number, length: number): { bytes: number; fds: number[] };
  sendMsg(fd: number, array: Uint8Array, offset: number, length: number, fds: number[]): number;
  readInto(fd: number, array: Uint8Array, offset: number, length: number): number;
  writeFrom(fd: number, array: Uint8Array, offset: number, length: number): number;
  shutdownWrite(fd: number): number;
  acceptConnection(fd: number): number;
  connectUnixSocket(path: string): number;
  mmapShared(fd: number, offset: number, length: number): ArrayBuffer;
  memfdCreate(name: string, size: number): number;
  eventfdCreate(): number;
}

/** Where to look for the addon, in order (pure; `moduleDir` is the directory of this module). */
export function addonCandidates(env: NodeJS.ProcessEnv, moduleDir: string): string[] {
  const explicit = env.VOLANT_NATIVE_ADDON;
  if (explicit) return [path.resolve(explicit)];
  return [
    path.join(moduleDir, ADDON_FILE),
    path.join(moduleDir, 'build', 'Release', ADDON_FILE),
    path.join(moduleDir, '..', '..', 'native', 'build', 'Release', ADDON_FILE),
  ];
}

let loaded: VolantNativeAddon | undefined;
let loadError: Error | undefined;

function load(): VolantNativeAddon {
  if (loaded) return loaded;
  if (loadError) throw loadError;
  const candidates = addonCandidates(process.env, path.dirname(fileURLToPath(import.meta.url)));
  const found = candidates.find((file) => existsSync(file));
  try {
    if (!found) throw new Error(`not found; looked at ${candidates.join(', ')} (build it with: npm install)`);
    loaded = createRequire(import.meta.url)(found) as VolantNativeAddon;
    return loaded;
  } catch (cause) {
    const why = cause instanceof Error ? cause.message : String(cause);
    loadError = Object.assign(new Error(`volant native addon unavailable: ${why}`, { cause }), {
      code: 'ERR_VOLANT_NATIVE_UNAVAILABLE',
    });
    throw loadError;
  }
}

/** The loaded addon; throws ERR_VOLANT_NATIVE_UNAVAILABLE (with the paths tried) when it is not there. */
export function addon(): VolantNativeAddon {
  return load();
}

export function nativeAvailable(): boolean {
  try {
    load();
    return true;
  } catch {
    return false;
  }
}

/**
 * Finds and loads volant_native.node and types its raw functions. Search order (first hit wins):
 *   1. $VOLANT_NATIVE_ADDON, when set (and only it: an explicit path that is wrong is an error);
 *   2. next to the running module (the guest image puts it beside the kestrel bundle);
 *   3. native/build/Release relative to the source layout (native/*.ts) or the dist layout
 *      (dist/native/*.js): a source build, made by `npm install` when no prebuilt binary loads;
 *   4. the prebuilt binary the package ships, `prebuilds/<platform>-<arch>/volant_native.node`
 *      (linux-x64 on glibc; see docs/packaging.md), from either layout.
 * A source build wins over the prebuilt one because it exists only when the prebuilt one did not
 * load here (or the user asked for it). `resolveAddonPath()` answers which file that is without
 * loading it; image builds copy that same file into the guest. Loading is lazy and
 * remembered, so a host without the addon can still import this module and ask
 * `nativeAvailable()`.
 */

import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ADDON_FILE = 'volant_native.node';
/** Where packed binaries live, relative to the package root: `prebuilds/<tag>/volant_native.node`. */
export const PREBUILDS_DIR = 'prebuilds';

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

/**
 * The prebuilt binary's folder name for a platform, or undefined when the package carries none
 * that could load there: the packed binary is built against glibc, so musl (no glibc version in
 * the process report) gets none and builds from source.
 */
export function prebuildTag(platform: string, arch: string, glibcVersion: string | undefined): string | undefined {
  if (platform === 'linux' && glibcVersion === undefined) return undefined;
  return `${platform}-${arch}`;
}

/** This process's `prebuildTag`. */
export function hostPrebuildTag(): string | undefined {
  const header = (process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined)?.header;
  return prebuildTag(process.platform, process.arch, header?.glibcVersionRuntime);
}

/** Where to look for the addon, in order (pure; `moduleDir` is the directory of this module). */
export function addonCandidates(env: NodeJS.ProcessEnv, moduleDir: string, tag?: string): string[] {
  const explicit = env.VOLANT_NATIVE_ADDON;
  if (explicit) return [path.resolve(explicit)];
  const candidates = [
    path.join(moduleDir, ADDON_FILE),
    path.join(moduleDir, 'build', 'Release', ADDON_FILE),
    path.join(moduleDir, '..', '..', 'native', 'build', 'Release', ADDON_FILE),
  ];
  if (tag !== undefined) {
    candidates.push(path.join(moduleDir, '..', PREBUILDS_DIR, tag, ADDON_FILE), path.join(moduleDir, '..', '..', PREBUILDS_DIR, tag, ADDON_FILE));
  }
  return candidates;
}

const MODULE_DIR = path.dirname(fileURLToPath(import.meta.url));

/** The first candidate that exists. The platform tag (a process report) is only asked for when no build is found first. */
export function resolveAddonPath(): string | undefined {
  return addonCandidates(process.env, MODULE_DIR).find((f) => existsSync(f)) ?? prebuiltAddonPath();
}

/** The prebuilt binary this package ships for this platform, if it is there. */
export function prebuiltAddonPath(): string | undefined {
  if (process.env.VOLANT_NATIVE_ADDON) return undefined;
  const tag = hostPrebuildTag();
  if (tag === undefined) return undefined;
  const builds = new Set(addonCandidates(process.env, MODULE_DIR));
  return addonCandidates(process.env, MODULE_DIR, tag).find((f) => !builds.has(f) && existsSync(f));
}

let loaded: VolantNativeAddon | undefined;
let loadError: Error | undefined;

function load(): VolantNativeAddon {
  if (loaded) return loaded;
  if (loadError) throw loadError;
  const found = resolveAddonPath();
  try {
    if (!found) throw new Error(`not found; looked at ${addonCandidates(process.env, MODULE_DIR, hostPrebuildTag()).join(', ')} (build it from source with: npm rebuild volant --build-from-source)`);
    loaded = createRequire(import.meta.url)(found) as VolantNativeAddon;
    return loaded;
  } catch (cause) {
    const prebuilt = found !== undefined && found === prebuiltAddonPath();
    const why = `${cause instanceof Error ? cause.message : String(cause)}${prebuilt ? ' (the prebuilt binary does not load here; build from source: npm rebuild volant --build-from-source)' : ''}`;
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

/**
 * volant native: the typed API over volant_native.node, the addon for what Node lacks.
 *
 * AF_VSOCK streams. The addon creates, binds, listens or connects the AF_VSOCK socket in C
 * (non-blocking, SOCK_CLOEXEC; a connect waits for writability on the event loop with uv_poll
 * and checks SO_ERROR). The ready fd is then opened in Node's Pipe handle
 * (process.binding('pipe_wrap')) and handed to `new net.Socket({ handle })`, so libuv does all
 * reads and writes on the event loop: real Duplex streams with backpressure, half-close and
 * close/error semantics, no blocking reads on the thread pool. Listening opens a Pipe handle on
 * the listening fd and lets libuv accept (uv__server_io calls accept4 whatever the family).
 * Verified on Node 20; why `new net.Socket({ fd })` and net.Server cannot do it: see streams.ts.
 * `forTesting` drives the very same fd→stream path with AF_UNIX/AF_INET fds, since tests must
 * never open AF_VSOCK sockets on a host.
 *
 * Guest syscalls: interface up, IPv4 address, default route (ioctls), sethostname,
 * finit_module, reboot, child-subreaper and orphan reaping (reap.ts explains the race reasoning).
 *
 * Errors: every function throws (or rejects with) Node-style errors carrying `errno` (negative,
 * as in Node), `code` ('ENODEV') and `syscall`; bad arguments give EINVAL before any syscall.
 */

import type net from 'node:net';
import { tryParseIPv4 } from '../shared/ipv4.js';
import { addon } from './addon.js';
import { errnoError, requireArgument } from './errors.js';
import { reapOrphans } from './reap.js';
import { connectWith, listenOnFd, socketFromFd } from './streams.js';

export { nativeAvailable } from './addon.js';
export type { NativeErrnoError } from './errors.js';
export { reapOrphans };

/** VMADDR_CID_ANY / VMADDR_PORT_ANY: listen on every CID, let the kernel pick a port. */
export const VMADDR_CID_ANY = 0xffffffff;
export const VMADDR_PORT_ANY = 0xffffffff;
/** Same default as net.Server. */
export const DEFAULT_LISTEN_BACKLOG = 511;
/** IFNAMSIZ - 1: the longest interface name the kernel accepts. */
export const MAX_INTERFACE_NAME_BYTES = 15;
/** HOST_NAME_MAX. */
export const MAX_HOSTNAME_BYTES = 64;
const MAX_PREFIX = 32;
const MAX_BACKLOG = 65535;

function isUint32(value: unknown): value is number {
  return typeof value === 'number' && Number.isInteger(value) && value >= 0 && value <= 0xffffffff;
}

function checkUint32(value: unknown, syscall: string, what: string): asserts value is number {
  requireArgument(isUint32(value), syscall, `${what} must be an integer in 0..4294967295, got ${String(value)}`);
}

function checkText(value: unknown, syscall: string, what: string, maxBytes?: number): asserts value is string {
  requireArgument(typeof value === 'string', syscall, `${what} must be a string`);
  const text = value as string;
  requireArgument(!text.includes('\0'), syscall, `${what} must not contain NUL bytes`);
  if (maxBytes !== undefined) {
    const bytes = Buffer.byteLength(text);
    requireArgument(bytes >= 1 && bytes <= maxBytes, syscall, `${what} must be 1..${maxBytes} bytes, got ${bytes}`);
  }
}

function checkInterfaceName(name: unknown, syscall: string): asserts name is string {
  checkText(name, syscall, 'interface name', MAX_INTERFACE_NAME_BYTES);
  requireArgument(!/[/\s]/.test(name as string), syscall, `interface name ${JSON.stringify(name)} contains '/' or whitespace`);
}

function ipv4Argument(text: unknown, syscall: string, what: string): number {
  const address = typeof text === 'string' ? tryParseIPv4(text) : undefined;
  if (address === undefined) {
    throw errnoError('EINVAL', syscall, `${what} ${JSON.stringify(String(text).slice(0, 64))} is not a dotted-quad IPv4 address`);
  }
  return address;
}

/** Connects to (cid, port) over AF_VSOCK. */
export function vsockConnect(cid: number, port: number): Promise<net.Socket> {
  try {
    checkUint32(cid, 'connect', 'vsock CID');
    checkUint32(port, 'connect', 'vsock port');
    return connectWith((callback) => addon().vsockConnect(cid, port, callback));
  } catch (error) {
    return Promise.reject(error);
  }
}

export interface VsockListener {
  close(): Promise<void>;
  /** The bound port (the kernel's pick when VMADDR_PORT_ANY was asked for). */
  port: number;
}

/** Listens on an AF_VSOCK port (any local CID unless opts.cid) and hands over each connection. */
export async function vsockListen(
  port: number,
  onConnection: (socket: net.Socket) => void,
  opts: { cid?: number; backlog?: number } = {},
): Promise<VsockListener> {
  const cid = opts.cid ?? VMADDR_CID_ANY;
  const backlog = opts.backlog ?? DEFAULT_LISTEN_BACKLOG;
  checkUint32(port, 'bind', 'vsock port');
  checkUint32(cid, 'bind', 'vsock CID');
  requireArgument(Number.isInteger(backlog) && backlog >= 1 && backlog <= MAX_BACKLOG, 'listen', `backlog must be 1..${MAX_BACKLOG}`);
  requireArgument(typeof onConnection === 'function', 'listen', 'onConnection must be a function');
  const bound = addon().vsockListen(cid, port, backlog);
  const listener = listenOnFd(bound.fd, backlog, onConnection);
  return { close: () => listener.close(), port: bound.port };
}

/** This machine's CID (IOCTL_VM_SOCKETS_GET_LOCAL_CID on /dev/vsock). */
export function vsockLocalCid(): number {
  return addon().vsockLocalCid();
}

export function interfaceUp(name: string): void {
  checkInterfaceName(name, 'SIOCSIFFLAGS');
  addon().interfaceUp(name);
}

/** Sets the interface's primary IPv4 address and prefix length (0..32). */
export function setInterfaceAddress(name: string, address: string, prefix: number): void {
  checkInterfaceName(name, 'SIOCSIFADDR');
  const parsed = ipv4Argument(address, 'SIOCSIFADDR', 'address');
  requireArgument(Number.isInteger(prefix) && prefix >= 0 && prefix <= MAX_PREFIX, 'SIOCSIFNETMASK', `prefix must be an integer in 0..${MAX_PREFIX}, got ${String(prefix)}`);
  addon().setInterfaceAddress(name, parsed, prefix);
}

/** Adds 0.0.0.0/0 via `gateway` (optionally pinned to `device`); EEXIST when a default route exists. */
export function addDefaultRoute(gateway: string, device?: string): void {
  const parsed = ipv4Argument(gateway, 'SIOCADDRT', 'gateway');
  if (device !== undefined) checkInterfaceName(device, 'SIOCADDRT');
  addon().addDefaultRoute(parsed, device);
}

export function sethostname(name: string): void {
  checkText(name, 'sethostname', 'hostname', MAX_HOSTNAME_BYTES);
  addon().sethostname(name);
}

/** Loads a kernel module from a file; a module that is already loaded (EEXIST) is success. */
export function finitModule(path: string, params = ''): void {
  checkText(path, 'finit_module', 'module path', 4096);
  checkText(params, 'finit_module', 'module parameters');
  addon().finitModule(path, params);
}

/** Syncs file systems and powers off or restarts the machine. Returns only by throwing. */
export function reboot(how: 'power-off' | 'restart'): never {
  requireArgument(how === 'power-off' || how === 'restart', 'reboot', `how must be 'power-off' or 'restart', got ${JSON.stringify(how)}`);
  addon().reboot(how);
  throw errnoError('EINVAL', 'reboot', 'reboot returned without an error');
}

/** prctl(PR_SET_CHILD_SUBREAPER): orphaned descendants are reparented to this process. */
export function setChildSubreaper(): void {
  addon().setChildSubreaper();
}

/**
 * Test-only entries into the same fd→stream machinery the vsock functions use, on AF_UNIX and
 * AF_INET fds. Not for production code: hosts and guests talk vsock through the functions above.
 */
export const forTesting = {
  /** Two connected AF_UNIX stream sockets, each wrapped like a vsock connection. */
  socketPair(): [net.Socket, net.Socket] {
    const [a, b] = addon().socketPair();
    return [socketFromFd(a), socketFromFd(b)];
  },
  /** A Unix-socket listener that accepts through the vsock listener's code path. */
  unixListen(path: string, onConnection: (socket: net.Socket) => void, backlog = DEFAULT_LISTEN_BACKLOG) {
    return listenOnFd(addon().unixListen(path, backlog), backlog, onConnection);
  },
  /** A TCP connect through the vsock connect path (non-blocking connect, uv_poll, SO_ERROR). */
  tcp4Connect(host: string, port: number): Promise<net.Socket> {
    const address = ipv4Argument(host, 'connect', 'host');
    return connectWith((callback) => addon().tcp4Connect(address, port, callback));
  },
  peekExitedChild: (): number => addon().peekExitedChild(),
  reapChild: (pid: number): boolean => addon().reapChild(pid),
};

/**
 * Raw I/O for a userspace virtio device on the host (host/vsock/device/): what Node cannot do
 * itself, and nothing more.
 *
 *  - An epoll set whose readiness reaches JavaScript through one uv_poll on the epoll fd: the
 *    device registers every fd it serves (the vhost-user channel, kick eventfds, the hybrid
 *    listener, one Unix socket per connection) with an int32 token, and on each callback drains
 *    the ready (token, events) pairs in batches. Edge-triggered registration (EPOLLET) is how a
 *    connection avoids re-arming: it remembers "readable"/"writable" until a call says EAGAIN.
 *  - recvmsg/sendmsg with SCM_RIGHTS: vhost-user passes guest-memory fds and eventfds so.
 *  - mmap(MAP_SHARED) of a memory fd into an external ArrayBuffer (unmapped when collected).
 *  - read/write between an fd and a Uint8Array window: bytes move between a socket and guest
 *    memory without a JavaScript Buffer in between.
 *
 * Why not net.Socket: libuv would read the vhost-user channel itself (dropping the passed fds)
 * and every connection's bytes would be copied through Buffers; the device wants to read a host
 * socket straight into a guest's receive buffer.
 *
 * Contract: the data-path calls (readInto, writeFrom, Epoll.wait, recvMsg, sendMsg, accept,
 * connect, shutdownWrite) return a negative errno instead of throwing; set-up calls throw
 * Node-style errno errors. The addon checks every window against its array before a syscall.
 */

import os from 'node:os';
import util from 'node:util';
import { addon, type NativeEpoll } from './addon.js';

export type { NativeEpoll } from './addon.js';

export const EPOLLIN = 0x001;
export const EPOLLOUT = 0x004;
export const EPOLLERR = 0x008;
export const EPOLLHUP = 0x010;
export const EPOLLRDHUP = 0x2000;
/** Edge-triggered: an event is reported when readiness changes, not while it lasts. */
export const EPOLLET = 0x8000_0000;

export const EAGAIN = os.constants.errno.EAGAIN;

/** The name of a negative errno a data-path call returned ('EPIPE'). */
export function errnoName(negative: number): string {
  try {
    return util.getSystemErrorName(negative);
  } catch {
    return `errno ${-negative}`;
  }
}

/** An epoll set; `onReady` runs on the event loop whenever a registered fd is ready. */
export function createEpoll(onReady: () => void): NativeEpoll {
  return new (addon().Epoll)(onReady);
}

/** The raw calls, resolved once (the hot path calls them directly). */
export function deviceIo() {
  const a = addon();
  return {
    recvMsg: a.recvMsg,
    sendMsg: a.sendMsg,
    readInto: a.readInto,
    writeFrom: a.writeFrom,
    shutdownWrite: a.shutdownWrite,
    /** A listening AF_UNIX socket, non-blocking and close-on-exec (throws). */
    listenUnixSocket: a.unixListen,
    acceptConnection: a.acceptConnection,
    connectUnixSocket: a.connectUnixSocket,
    mmapShared: a.mmapShared,
    memfdCreate: a.memfdCreate,
    eventfdCreate: a.eventfdCreate,
    closeFd: a.closeFd,
  };
}

export type DeviceIo = ReturnType<typeof deviceIo>;

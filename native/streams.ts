/**
 * Turns a connected or listening stream-socket fd made by the addon into Node streams that libuv
 * drives. This is the one path every AF_VSOCK socket takes, and the path the tests drive with
 * AF_UNIX/AF_INET fds (a machine's vsock is off-limits to tests).
 *
 * Why Node's Pipe handle (process.binding('pipe_wrap')), verified on Node 20:
 * - `new net.Socket({ fd })` cannot take a vsock fd: it asks uv_guess_handle(), which knows only
 *   AF_INET/AF_INET6 (TCP) and AF_UNIX (pipe) sockets and calls anything else UNKNOWN, so Node
 *   throws ERR_INVALID_FD_TYPE.
 * - Pipe.open(fd) is uv_pipe_open(): it only sets O_NONBLOCK and starts a libuv stream on the fd,
 *   whatever the address family. libuv then does read/write/writev/shutdown on the event loop,
 *   so `new net.Socket({ handle })` gets real backpressure (write() returns false, 'drain'),
 *   half-close (end() is shutdown(SHUT_WR)), and ECONNRESET/EPIPE as 'error'. A TCP handle
 *   would also open it, but its extras (setNoDelay, getpeername) are TCP-specific.
 * - Pipe.listen(backlog) on an opened listening fd is uv_pipe_listen(): listen() again (harmless)
 *   and uv__server_io, which calls accept4() family-agnostically and hands each connection to
 *   `onconnection` already wrapped in a new Pipe handle. net.Server cannot be used: its
 *   listen(handle) accepts only TCP handles or fds that uv_guess_handle() recognises.
 * Once opened, the handle owns the fd: destroying the socket (or closing the listener) closes it.
 * process.binding() is deprecated documentation-only (DEP0111; a warning only under
 * --pending-deprecation) and 'pipe_wrap' is on its allow-list; if a future Node drops it, this
 * module is the one place to replace (e.g. with uv_pipe_open from the addon).
 */

import net from 'node:net';
import { addon } from './addon.js';
import { uvStatusError } from './errors.js';

interface PipeHandle {
  open(fd: number): void;
  listen(backlog: number): number;
  close(callback?: () => void): void;
  onconnection: ((status: number, client?: PipeHandle) => void) | null;
}

interface PipeWrapBinding {
  Pipe: new (type: number) => PipeHandle;
  constants: { SOCKET: number; SERVER: number };
}

let pipeWrap: PipeWrapBinding | undefined;

function pipeBinding(): PipeWrapBinding {
  pipeWrap ??= (process as unknown as { binding(name: 'pipe_wrap'): PipeWrapBinding }).binding('pipe_wrap');
  return pipeWrap;
}

/** A Pipe handle that owns `fd`; on failure the fd is closed and the error thrown. */
function openHandle(fd: number, type: 'SOCKET' | 'SERVER'): PipeHandle {
  const { Pipe, constants } = pipeBinding();
  const handle = new Pipe(constants[type]);
  try {
    handle.open(fd);
  } catch (error) {
    handle.close();
    addon().closeFd(fd);
    throw error;
  }
  return handle;
}

function socketFromHandle(handle: PipeHandle): net.Socket {
  // `handle` is an undocumented but long-standing net.Socket option (net.Server uses it for
  // every accepted connection).
  const options = { handle, readable: true, writable: true } as net.SocketConstructorOpts;
  return new net.Socket(options);
}

/** Wraps a connected stream-socket fd (ownership passes to the socket). */
export function socketFromFd(fd: number): net.Socket {
  return socketFromHandle(openHandle(fd, 'SOCKET'));
}

export interface FdListener {
  close(): Promise<void>;
}

/**
 * Accepts connections on a listening fd (ownership passes to the listener). Transient accept
 * failures (EMFILE, ECONNABORTED) drop that one connection; libuv keeps listening. close()
 * stops accepting; connections already handed out stay open.
 */
export function listenOnFd(fd: number, backlog: number, onConnection: (socket: net.Socket) => void): FdListener {
  const handle = openHandle(fd, 'SERVER');
  handle.onconnection = (status, client) => {
    if (status < 0 || !client) return;
    onConnection(socketFromHandle(client));
  };
  const status = handle.listen(backlog);
  if (status < 0) {
    handle.close();
    throw uvStatusError(status, 'listen');
  }
  let closed: Promise<void> | undefined;
  return {
    close() {
      closed ??= new Promise<void>((resolve) => handle.close(resolve));
      return closed;
    },
  };
}

/** Adapts the addon's (error, fd) connect callback to a promise of a socket. */
export function connectWith(start: (callback: (error: Error | null, fd?: number) => void) => void): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    start((error, fd) => {
      if (error || fd === undefined) {
        reject(error ?? new Error('connect finished without a descriptor'));
        return;
      }
      try {
        resolve(socketFromFd(fd));
      } catch (openError) {
        reject(openError);
      }
    });
  });
}

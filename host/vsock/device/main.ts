/**
 * The vsock device back-end process: one per VM, started by the QEMU launcher before QEMU and
 * ended with it (host/vmm/vsock-backend.ts). Running it in its own process is the isolation: a
 * fault in one VM's device ends that process (the launcher then stops the VM and marks it failed)
 * and never volantd or another VM.
 *
 *   node main.js --vhost-user PATH --socket PATH --cid N [--metrics FILE] [--log-level L]   (args.ts)
 *
 * It logs JSON lines on stderr (pino, `name: vsock-device`, its CID on every line; the launcher
 * sends them to `<run_dir>/vsock-device.log`), and keeps its counters in the `--metrics` file,
 * which volantd's /metrics reads (host/metrics/vsock-device.ts).
 *
 * Life cycle, and what must hold:
 *  - Both sockets exist before the vhost-user path appears: it is bound under a temporary name and
 *    renamed, so a launcher that sees the path can start QEMU at once.
 *  - One front-end only: after QEMU connects the vhost-user path is removed.
 *  - The process exits when QEMU's connection closes (QEMU exited or was killed), when QEMU has not
 *    connected within FRONT_END_CONNECT_TIMEOUT_MS, on SIGTERM/SIGINT, or on any fault; every way
 *    out removes the socket files it made (`<uds>`, the vhost-user path).
 *  - Exit status: 0 after a clean end (QEMU disconnected, or a signal), 1 after a fault.
 */

import { lstatSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';
import { deviceIo, EAGAIN, EPOLLIN, errnoName } from '../../../native/device-io.js';
import { createLogger } from '../../log/logger.js';
import { parseBackendArgs } from './args.js';
import { VsockDevice } from './device.js';
import { type DeviceMetrics, newDeviceMetrics } from './metrics.js';
import { Muxer } from './muxer.js';
import { Reactor } from './reactor.js';
import { VhostUserSession } from './session.js';

/** QEMU connects within moments of starting; this only bounds a back-end whose QEMU never came. */
export const FRONT_END_CONNECT_TIMEOUT_MS = 60_000;
export const METRICS_INTERVAL_MS = 1000;

function removeSocketFile(path: string): void {
  try {
    if (lstatSync(path).isSocket()) unlinkSync(path);
  } catch {
    // absent
  }
}

function writeMetrics(file: string | undefined, metrics: DeviceMetrics): void {
  if (!file) return;
  try {
    writeFileSync(`${file}.tmp`, JSON.stringify(metrics));
    renameSync(`${file}.tmp`, file);
  } catch {
    // a metrics file is a convenience; never a reason to fail
  }
}

function main(): void {
  const args = parseBackendArgs(process.argv.slice(2));
  const log = createLogger({ name: 'vsock-device', level: args.logLevel ?? 'info', base: { cid: args.cid } });
  const io = deviceIo();
  const metrics = newDeviceMetrics();
  let finished = false;
  let vhostListenFd = -1;
  let vhostToken = -1;
  let session: VhostUserSession | undefined;

  const finish = (why: string, code: number): void => {
    if (finished) return;
    finished = true;
    log[code === 0 ? 'info' : 'error']({ metrics }, `ends: ${why}`);
    session?.close('back-end exiting');
    muxer.close();
    if (vhostListenFd >= 0) io.closeFd(vhostListenFd);
    reactor.close();
    removeSocketFile(args.socket);
    removeSocketFile(args.vhostUser);
    removeSocketFile(`${args.vhostUser}.tmp`);
    writeMetrics(args.metrics, metrics);
    process.exit(code);
  };

  const reactor = new Reactor((error) => finish(`fault: ${(error as Error)?.stack ?? String(error)}`, 1));
  const muxer = new Muxer({ socketPath: args.socket, guestCid: args.cid, io, reactor, metrics, log });
  const device = new VsockDevice(muxer, io, metrics, log, () => reactor.requestFlush());
  reactor.afterBatch(() => device.flush());

  process.on('uncaughtException', (e) => finish(`fault: ${e.stack ?? e.message}`, 1));
  for (const signal of ['SIGTERM', 'SIGINT'] as const) process.once(signal, () => finish(signal, 0));
  process.on('SIGUSR1', () => log.info({ metrics }, 'metrics'));

  removeSocketFile(args.socket);
  removeSocketFile(args.vhostUser);
  removeSocketFile(`${args.vhostUser}.tmp`);
  muxer.listen();
  vhostListenFd = io.listenUnixSocket(`${args.vhostUser}.tmp`, 1);
  renameSync(`${args.vhostUser}.tmp`, args.vhostUser);

  const connectTimer = setTimeout(() => finish(`QEMU did not connect to ${args.vhostUser} within ${FRONT_END_CONNECT_TIMEOUT_MS} ms`, 1), FRONT_END_CONNECT_TIMEOUT_MS);
  vhostToken = reactor.add(vhostListenFd, EPOLLIN, () => {
    const fd = io.acceptConnection(vhostListenFd);
    if (fd === -EAGAIN) return;
    if (fd < 0) return finish(`accept on ${args.vhostUser}: ${errnoName(fd)}`, 1);
    clearTimeout(connectTimer);
    reactor.remove(vhostListenFd, vhostToken, true);
    io.closeFd(vhostListenFd);
    vhostListenFd = -1;
    removeSocketFile(args.vhostUser);
    session = new VhostUserSession({ fd, cid: args.cid, io, reactor, device, log, onClose: (why, clean) => finish(why, clean ? 0 : 1) });
    session.start();
  });

  if (args.metrics) setInterval(() => writeMetrics(args.metrics, metrics), METRICS_INTERVAL_MS).unref();
  log.info({ socket: args.socket, vhost_user: args.vhostUser }, `listening: hybrid ${args.socket}, vhost-user ${args.vhostUser}`);
}

main();

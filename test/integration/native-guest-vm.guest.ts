/**
 * The guest half of native-guest-vm.test.ts, bundled with esbuild and run as PID 1 in a QEMU
 * guest: the addon's AF_VSOCK path over vsock_loopback (CID 1) and the calls that must never run
 * on the host (finit_module, reaping as PID 1, reboot). Prints one `NATIVE-GUEST-RESULT <json>`
 * line on the console, then powers the guest off through the addon.
 */

import { spawn, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import type net from 'node:net';
import os from 'node:os';
import * as native from '../../native/index.js';

const RESULT_PREFIX = 'NATIVE-GUEST-RESULT ';
const MODULE_DIR = '/lib/modules/vsock';
const VSOCK_MODULES = ['vsock', 'vmw_vsock_virtio_transport_common', 'vsock_loopback'];
const VMADDR_CID_LOCAL = 1;
const ECHO_PORT = 5000;
const UNUSED_PORT = 5999;
const CHUNK_BYTES = 64 * 1024;
const ECHO_CHUNKS = 320; // 20 MiB
const CONCURRENT = 50;

type Outcome = unknown;
const results: Record<string, Outcome> = {};

function describeError(error: unknown): Outcome {
  const e = error as NodeJS.ErrnoException;
  return { error: e.message, code: e.code, errno: e.errno, syscall: e.syscall };
}

async function step(name: string, run: () => Outcome | Promise<Outcome>): Promise<void> {
  try {
    results[name] = (await run()) ?? 'ok';
  } catch (error) {
    results[name] = describeError(error);
  }
}

function drain(socket: net.Socket): Promise<{ bytes: number; sha256: string }> {
  return new Promise((resolve, reject) => {
    const hash = createHash('sha256');
    let bytes = 0;
    socket.on('data', (chunk: Buffer) => {
      hash.update(chunk);
      bytes += chunk.length;
    });
    socket.on('end', () => resolve({ bytes, sha256: hash.digest('hex') }));
    socket.on('error', reject);
  });
}

async function main(): Promise<void> {
  await step('pid', () => process.pid);
  await step('modules', () => {
    for (const name of VSOCK_MODULES) native.finitModule(`${MODULE_DIR}/${name}.ko`);
    native.finitModule(`${MODULE_DIR}/vsock.ko`); // already loaded: EEXIST counts as success
    return 'loaded';
  });
  await step('missingModule', () => native.finitModule('/lib/modules/absent.ko'));
  await step('loUp', () => {
    native.interfaceUp('lo');
    return os.networkInterfaces().lo?.some((a) => a.address === '127.0.0.1') ?? false;
  });
  await step('hostname', () => {
    native.sethostname('guest-native');
    return os.hostname();
  });
  await step('localCid', () => native.vsockLocalCid());

  let accepted = 0;
  const listener = await native.vsockListen(ECHO_PORT, (socket) => {
    accepted++;
    socket.pipe(socket);
  });
  await step('listenPort', () => listener.port);
  await step('echo', async () => {
    const socket = await native.vsockConnect(VMADDR_CID_LOCAL, ECHO_PORT);
    const echoed = drain(socket);
    const chunk = randomBytes(CHUNK_BYTES);
    const sent = createHash('sha256');
    let refusals = 0;
    for (let i = 0; i < ECHO_CHUNKS; i++) {
      sent.update(chunk);
      if (!socket.write(chunk)) {
        refusals++;
        await once(socket, 'drain');
      }
    }
    socket.end();
    const got = await echoed;
    return { bytes: got.bytes, intact: got.sha256 === sent.digest('hex'), refusals };
  });
  await step('halfClose', async () => {
    const socket = await native.vsockConnect(VMADDR_CID_LOCAL, ECHO_PORT);
    socket.allowHalfOpen = true;
    const echoed = drain(socket);
    socket.end('half');
    return (await echoed).bytes;
  });
  await step('concurrent', async () => {
    const ok = await Promise.all(
      Array.from({ length: CONCURRENT }, async (_, i) => {
        const socket = await native.vsockConnect(VMADDR_CID_LOCAL, ECHO_PORT);
        const echoed = drain(socket);
        socket.end(`hello-${i}`);
        return (await echoed).bytes === `hello-${i}`.length;
      }),
    );
    return ok.filter(Boolean).length;
  });
  await step('anyPort', async () => {
    const any = await native.vsockListen(native.VMADDR_PORT_ANY, (socket) => socket.end('any'));
    const socket = await native.vsockConnect(VMADDR_CID_LOCAL, any.port);
    const got = await drain(socket);
    await any.close();
    return { port: any.port, bytes: got.bytes };
  });
  await step('noListener', () => native.vsockConnect(VMADDR_CID_LOCAL, UNUSED_PORT).then(() => 'connected'));
  await step('afterClose', async () => {
    await listener.close();
    return native.vsockConnect(VMADDR_CID_LOCAL, ECHO_PORT).then(() => 'connected', (e: NodeJS.ErrnoException) => e.code);
  });
  await step('accepted', () => accepted);
  await step('reap', async () => {
    const child = spawn('/bin/busybox', ['sh', '-c', 'exit 3']);
    const exited = once(child, 'exit');
    const shell = spawnSync('/bin/busybox', ['sh', '-c', '/bin/busybox sleep 0.1 </dev/null >/dev/null 2>&1 & echo $!'], {
      encoding: 'utf8',
    });
    const orphan = Number(shell.stdout.trim());
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1000); // hold the loop: both exit meanwhile
    const reaped = native.reapOrphans((pid) => pid === child.pid);
    const [code] = await exited;
    return { orphan, reaped, childCode: code };
  });
  console.log(`${RESULT_PREFIX}${JSON.stringify(results)}`);
}

main()
  .catch((error) => console.log(`${RESULT_PREFIX}${JSON.stringify({ fatal: describeError(error) })}`))
  .finally(() => native.reboot('power-off'));

/**
 * bench/vsock/device-only: the device back-end process alone, without a VM, driven by the
 * scripted front-end and guest of test/support/vhost-user-driver.ts: how much the device itself
 * moves per second and per CPU second, host → guest and guest → host, through one connection.
 * (A VM under TCG moves far less; this says how far the device is from being the limit.)
 *
 * Usage: node --import tsx bench/vsock/device-only.ts [--mb M]
 */

import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startVsockBackend, vhostUserSocketPath } from '../../host/vmm/vsock-backend.js';
import { OP_CREDIT_UPDATE, OP_REQUEST, OP_RW } from '../../host/vsock/device/packet.js';
import { GUEST_BUF_ALLOC, VsockDriver } from '../../test/support/vhost-user-driver.js';
import { integerFlag } from '../support/args.js';

const MIB = integerFlag(process.argv, '--mb', 256, 4096);
const USER_HZ = 100;
const cpuSeconds = (pid: number): number => {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = f.slice(f.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / USER_HZ;
};

const root = mkdtempSync(join(tmpdir(), `volant-bench-vsock-${process.pid}-`));
const runDir = join(root, 'vm');
mkdirSync(runDir);
const spec = { vmName: 'bench', runDir, vsock: { cid: 3, socketPath: join(runDir, 'vsock.sock') } };
const backend = await startVsockBackend(spec);
const driver = new VsockDriver(3);
try {
  await driver.connect(vhostUserSocketPath(spec));
  await driver.start();
  driver.postRx();

  // guest → host: 64 KiB RW packets into a host reader that drains as fast as it can.
  let host: Socket | undefined;
  let received = 0;
  const server = createServer((s) => {
    host = s;
    s.on('data', (c: Buffer) => {
      received += c.length;
    });
  });
  await new Promise<void>((r) => server.listen(`${spec.vsock.socketPath}_5000`, r));
  driver.sendPacket({ srcPort: 1, dstPort: 5000, op: OP_REQUEST });
  let resp = await driver.next((p) => p.dstPort === 1);
  const chunk = Buffer.alloc(64 * 1024, 1);
  const total = MIB * 1024 * 1024;
  let sent = 0;
  let peerFwd = resp.fwdCnt;
  const cpu0 = cpuSeconds(backend.pid);
  const t0 = performance.now();
  while (sent < total) {
    if (262144 - (sent - peerFwd) >= chunk.length) {
      driver.sendPacket({ srcPort: 1, dstPort: 5000, op: OP_RW, payload: chunk });
      sent += chunk.length;
      if ((sent / chunk.length) % 64 === 0) await driver.txDone();
      continue;
    }
    resp = await driver.next((p) => p.dstPort === 1 && p.op === OP_CREDIT_UPDATE);
    peerFwd = resp.fwdCnt;
    driver.postRx(1);
  }
  while (received < total) await new Promise((r) => setImmediate(r));
  const g2h = { MiBps: MIB / ((performance.now() - t0) / 1000), cpuMsPerMiB: ((cpuSeconds(backend.pid) - cpu0) * 1000) / MIB };
  host?.destroy();
  server.close();

  // host → guest: a host client writes as fast as the device takes; the guest reads every RX
  // buffer at once and returns credit.
  const client = (await import('node:net')).connect(spec.vsock.socketPath);
  client.write('CONNECT 80\n');
  const req = await driver.next((p) => p.op === OP_REQUEST);
  driver.respond(req, GUEST_BUF_ALLOC);
  const block = Buffer.alloc(256 * 1024, 2);
  let got = 0;
  const cpu1 = cpuSeconds(backend.pid);
  const t1 = performance.now();
  const pump = (): void => {
    while (client.write(block)) {
      /* keep writing until backpressure */
    }
  };
  client.on('drain', pump);
  client.on('data', () => undefined);
  pump();
  while (got < total) {
    driver.collect();
    let taken = 0;
    for (const p of driver.inbox.splice(0)) {
      if (p.op === OP_RW) got += p.payload.length;
      taken++;
    }
    if (taken > 0) {
      driver.postRx(taken);
      driver.sendPacket({ srcPort: 80, dstPort: req.srcPort, op: OP_CREDIT_UPDATE, fwdCnt: got >>> 0 });
    } else await new Promise((r) => setImmediate(r));
  }
  const h2g = { MiBps: MIB / ((performance.now() - t1) / 1000), cpuMsPerMiB: ((cpuSeconds(backend.pid) - cpu1) * 1000) / MIB };
  client.destroy();
  console.log(`device alone, ${MIB} MiB each way through one connection (guest played by the test driver):`);
  console.log(`  guest → host  ${g2h.MiBps.toFixed(0)} MiB/s, device CPU ${g2h.cpuMsPerMiB.toFixed(2)} ms/MiB`);
  console.log(`  host → guest  ${h2g.MiBps.toFixed(0)} MiB/s, device CPU ${h2g.cpuMsPerMiB.toFixed(2)} ms/MiB (RX buffers of 4 KiB, as Linux 6.1 posts them)`);
  console.log(JSON.stringify({ bench: 'vsock-device-only', mib: MIB, guestToHost: g2h, hostToGuest: h2g }));
} finally {
  driver.close();
  await backend.exited;
  rmSync(root, { recursive: true, force: true });
}

/**
 * bench/vsock's measuring side, run inside volantd's network namespace (where the bridge is): the
 * same requests to kestrel over the VM's vsock device (hybrid socket, `CONNECT 8080`) and over
 * the bridge (TCP guest_ip:8080), alternating, one JSON line of results on stdout.
 *
 *   node --import tsx bench/vsock/client.ts --vsock PATH --tcp IP:PORT --bytes N --runs R --seconds S --connections C
 *
 *  bulk     GET /bytes?n=N on a fresh connection, read to the end: MB/s (guest → host), and the
 *           CPU time the device process spent per MiB (--device-pid)
 *  rate     C keep-alive connections each looping GET /hello for S seconds: requests/s (small
 *           messages both ways)
 */

import { readFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { parseArgs } from 'node:util';
import { dialHybridVsock } from '../../host/vsock/hybrid.js';
import { AGENT_VSOCK_PORT } from '../../shared/vsock.js';

const { values } = parseArgs({
  options: { vsock: { type: 'string' }, tcp: { type: 'string' }, bytes: { type: 'string' }, runs: { type: 'string' }, seconds: { type: 'string' }, connections: { type: 'string' }, 'device-pid': { type: 'string' } },
});
const vsockPath = values.vsock!;
const [tcpHost, tcpPort] = values.tcp!.split(':') as [string, string];
const bytes = Number(values.bytes);
const runs = Number(values.runs);
const seconds = Number(values.seconds);
const connections = Number(values.connections);
const devicePid = Number(values['device-pid']);
/** clock ticks per second of /proc/<pid>/stat (USER_HZ). */
const USER_HZ = 100;

/** CPU seconds (user + system) the device process has used so far. */
function deviceCpuSeconds(): number {
  const stat = readFileSync(`/proc/${devicePid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / USER_HZ;
}

type Transport = 'device' | 'bridge';

function dial(t: Transport): Promise<Socket> {
  if (t === 'device') return dialHybridVsock(vsockPath, AGENT_VSOCK_PORT, { timeoutMs: 10_000 });
  return new Promise((resolve, reject) => {
    const s = connect({ host: tcpHost, port: Number(tcpPort), noDelay: true });
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
}

async function bulk(t: Transport): Promise<number> {
  const s = await dial(t);
  const started = performance.now();
  let got = 0;
  s.on('data', (c: Buffer) => {
    got += c.length;
  });
  s.resume();
  s.write(`GET /bytes?n=${bytes} HTTP/1.1\r\nhost: kestrel\r\nconnection: close\r\n\r\n`);
  await new Promise((r) => s.once('close', r));
  const secs = (performance.now() - started) / 1000;
  if (got < bytes) throw new Error(`${t}: ${got} of ${bytes} bytes`);
  return bytes / secs / 1e6;
}

/** One keep-alive connection looping GET /hello until `until`; returns the number of answers. */
async function loop(t: Transport, until: number): Promise<number> {
  const s = await dial(t);
  s.resume();
  let buf: Buffer = Buffer.alloc(0);
  let done = 0;
  await new Promise<void>((resolve, reject) => {
    const ask = (): void => void s.write('GET /hello HTTP/1.1\r\nhost: kestrel\r\n\r\n');
    s.on('data', (c: Buffer) => {
      buf = buf.length === 0 ? c : Buffer.concat([buf, c]);
      for (;;) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const m = /content-length: *(\d+)/i.exec(buf.subarray(0, end).toString('latin1'));
        const total = end + 4 + Number(m?.[1] ?? 0);
        if (buf.length < total) return;
        buf = buf.subarray(total);
        done++;
        if (performance.now() >= until) {
          s.destroy();
          resolve();
          return;
        }
        ask();
      }
    });
    s.once('error', reject);
    ask();
  });
  return done;
}

async function rate(t: Transport): Promise<number> {
  const started = performance.now();
  const until = started + seconds * 1000;
  const counts = await Promise.all(Array.from({ length: connections }, () => loop(t, until)));
  return counts.reduce((a, b) => a + b, 0) / ((performance.now() - started) / 1000);
}

const result: Record<string, Record<Transport, number[]>> = { bulkMBps: { device: [], bridge: [] }, requestsPerS: { device: [], bridge: [] } };
const deviceCpuMsPerMiB: number[] = [];
for (let i = 0; i < runs; i++) {
  for (const t of (i % 2 === 0 ? ['device', 'bridge'] : ['bridge', 'device']) as Transport[]) {
    const cpu = t === 'device' ? deviceCpuSeconds() : 0;
    result.bulkMBps![t].push(await bulk(t));
    if (t === 'device') deviceCpuMsPerMiB.push(((deviceCpuSeconds() - cpu) * 1000) / (bytes / 1024 / 1024));
    result.requestsPerS![t].push(await rate(t));
  }
}
(result as Record<string, unknown>).deviceCpuMsPerMiB = deviceCpuMsPerMiB;
process.stdout.write(`${JSON.stringify(result)}\n`);

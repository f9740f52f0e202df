// TEST DOUBLE of a VMM process (Cloud Hypervisor cannot run here: no usable KVM, no vhost-vsock).
// It is a real process the orchestrator supervises, and it follows the published hybrid-vsock
// behaviour (docs/CONTRACTS.md "vsock"): it listens on the VM's vsock Unix socket, answers `CONNECT 8080\n`
// with `OK <port>\n` and then serves a kestrel-like HTTP agent on that stream (GET /healthz,
// GET /v1/logs[?follow=1]), and `CONNECT 8081\n` with kestrel's raw relay: the workload itself
// (docs/agent.md). It appends console lines to the serial log like a booting guest.
//
//   node orchestrator-fake-vmm.mjs <vsock-socket> <serial-log> <behaviour>
//   behaviour: healthy | never-healthy | crash-after-boot | exit-clean-after-boot
import { appendFileSync, unlinkSync } from 'node:fs';
import { createServer as createHttp } from 'node:http';
import { createServer } from 'node:net';

const [socketPath, serialLog, behaviour = 'healthy'] = process.argv.slice(2);
const serial = (line) => appendFileSync(serialLog, `${line}\n`);
serial('[    0.000000] Linux version 6.1.0-fake (test double)');
serial(`kestrel: booting (${behaviour})`);

/** Stands in for the workload: echoes what arrived. */
const echo = (req, res) => {
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ echo: req.url, method: req.method, authorization: req.headers.authorization ?? null }));
};
const workload = createHttp(echo);

const agent = createHttp((req, res) => {
  if (req.url === '/healthz') {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ status: 'ok', version: 'fake', mode: 'vsock', workload: { state: 'running' } }));
  } else if (req.url?.startsWith('/v1/logs')) {
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.write('workload started\n');
    if (req.url.includes('follow=1')) {
      const t = setInterval(() => res.write(`tick ${Date.now()}\n`), 100);
      res.on('close', () => clearInterval(t));
    } else res.end('hello from the workload\n');
  } else echo(req, res); // kestrel's HTTP-aware proxy to the workload
});

try {
  unlinkSync(socketPath);
} catch {}
let hostPort = 2 ** 30;
const muxer = createServer((sock) => {
  let buf = Buffer.alloc(0);
  const onData = (chunk) => {
    buf = Buffer.concat([buf, chunk]);
    const nl = buf.indexOf(10);
    if (nl < 0) {
      if (buf.length >= 32) sock.destroy();
      return;
    }
    sock.off('data', onData);
    const m = /^connect (\d+)$/i.exec(buf.subarray(0, nl).toString('latin1'));
    const port = m ? Number(m[1]) : 0;
    if ((port !== 8080 && port !== 8081) || behaviour === 'never-healthy') {
      sock.destroy();
      return;
    }
    sock.write(`OK ${hostPort++}\n`);
    const rest = buf.subarray(nl + 1);
    if (rest.length) sock.unshift(rest);
    (port === 8080 ? agent : workload).emit('connection', sock);
  };
  sock.on('data', onData);
  sock.on('error', () => {});
});
muxer.listen(socketPath, () => {
  serial('kestrel: listening on vsock:8080');
  serial('kestrel: relay listening on vsock:8081');
  if (behaviour === 'crash-after-boot') setTimeout(() => process.kill(process.pid, 'SIGKILL'), 300);
  if (behaviour === 'exit-clean-after-boot') setTimeout(() => process.exit(0), 300);
});
process.on('SIGTERM', () => {
  serial('kestrel: power-off');
  process.exit(0);
});

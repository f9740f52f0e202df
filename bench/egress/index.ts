/**
 * bench/egress: CONNECT tunnel bulk throughput through the Volant egress proxy against squid
 * (Debian) with an equivalent `dstdomain` ACL, both tunnelling to the same loopback upstream that
 * streams BYTES_PER_RUN bytes; runs alternate so drift hits both alike; the figure is the ratio
 * of median throughputs (ours ÷ squid, goal ≥ 1.0). Then `Allowlist.allows` decisions per second
 * with RULES rules (goal ≥ 1,000,000/s). The last line is one JSON object.
 *
 * The ACLs are equivalent for this traffic: squid's `dstdomain bulk.test` and our rule
 * `bulk.test:<upstream port>` (ours names the port because the bulk stream is not TLS, and our
 * tunnel policy admits non-TLS payloads only under a rule that names the port).
 *
 * Both proxies run as child processes; the client and upstream share this process. Squid gets a
 * generated squid.conf in a private temp dir (hosts_file maps the name, so it sends no DNS), runs
 * in the foreground (`squid -N -f conf`) and is stopped by its PID.
 */

import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Allowlist } from '../../shared/allowlist.js';
import { startDnsServer } from '../../test/support/dns-server.js';
import { median } from '../support/stats.js';

const BYTES_PER_RUN = Number(process.env.EGRESS_BENCH_BYTES ?? 256 * 1024 * 1024);
const RUNS_EACH = Number(process.env.EGRESS_BENCH_RUNS ?? 5);
const RULES = 10_000;
const DECISION_SECONDS = 2;
const READY_TIMEOUT_MS = 15_000;
const NAME = 'bulk.test';
const CHUNK = Buffer.alloc(256 * 1024, 0x5a);

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

/** Upstream: on each connection, streams BYTES_PER_RUN bytes and closes. */
function startSource(): Promise<{ server: Server; port: number }> {
  const server = createServer((s) => {
    let left = BYTES_PER_RUN;
    s.on('error', () => {});
    const pump = (): void => {
      while (left > 0) {
        const n = Math.min(left, CHUNK.length);
        left -= n;
        if (!s.write(n === CHUNK.length ? CHUNK : CHUNK.subarray(0, n))) {
          s.once('drain', pump);
          return;
        }
      }
      s.end();
    };
    pump();
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({ server, port: (server.address() as { port: number }).port })));
}

/** One CONNECT through `proxyPort` to the upstream; returns MiB/s of the download. */
function tunnelRun(proxyPort: number, upstreamPort: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const c = connect(proxyPort, '127.0.0.1');
    let header = '';
    let got = 0;
    let t0 = 0;
    c.on('error', reject);
    c.on('data', (d: Buffer) => {
      if (t0 === 0) {
        header += d.toString('latin1');
        const end = header.indexOf('\r\n\r\n');
        if (end < 0) return;
        if (!header.startsWith('HTTP/1.1 200') && !header.startsWith('HTTP/1.0 200')) {
          reject(new Error(`proxy refused: ${header.split('\r\n')[0]}`));
          c.destroy();
          return;
        }
        t0 = performance.now();
        got = Buffer.byteLength(header, 'latin1') - end - 4;
        return;
      }
      got += d.length;
    });
    c.on('close', () => {
      const s = (performance.now() - t0) / 1000;
      if (got < BYTES_PER_RUN) reject(new Error(`tunnel closed after ${got} of ${BYTES_PER_RUN} bytes`));
      else resolve(got / (1024 * 1024) / s);
    });
    c.write(`CONNECT ${NAME}:${upstreamPort} HTTP/1.1\r\nHost: ${NAME}:${upstreamPort}\r\n\r\n`);
  });
}

function waitForPort(port: number, child: ChildProcess): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  return new Promise((resolve, reject) => {
    const attempt = (): void => {
      if (child.exitCode !== null) {
        reject(new Error(`process exited with ${child.exitCode}`));
        return;
      }
      const s = connect(port, '127.0.0.1');
      s.on('connect', () => {
        s.destroy();
        resolve();
      });
      s.on('error', () => {
        if (Date.now() > deadline) reject(new Error(`nothing listens on ${port} after ${READY_TIMEOUT_MS} ms`));
        else setTimeout(attempt, 100);
      });
    };
    attempt();
  });
}

function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.pid === undefined) return Promise.resolve();
  return new Promise((resolve) => {
    const kill = setTimeout(() => child.kill('SIGKILL'), 5000);
    child.once('exit', () => {
      clearTimeout(kill);
      resolve();
    });
    child.kill('SIGTERM');
  });
}

async function startOurs(dnsAddress: string, upstreamPort: number): Promise<{ child: ChildProcess; port: number }> {
  const child = spawn(process.execPath, ['--import', 'tsx', join(import.meta.dirname, 'proxy-child.ts'), dnsAddress, JSON.stringify([`${NAME}:${upstreamPort}`])], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const port = await new Promise<number>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d) => {
      out += d;
      const m = /listening (\d+)/.exec(out);
      if (m) resolve(Number(m[1]));
    });
    child.once('exit', (code) => reject(new Error(`egress proxy child exited with ${code}`)));
  });
  return { child, port };
}

async function startSquid(dir: string): Promise<{ child: ChildProcess; port: number } | { skipped: string }> {
  const which = spawnSync('sh', ['-c', 'command -v squid'], { encoding: 'utf8' });
  if (which.status !== 0) return { skipped: 'squid is not installed (apt-get install squid)' };
  const port = await freePort();
  writeFileSync(join(dir, 'hosts'), `127.0.0.1 ${NAME}\n`);
  const conf = [
    `http_port 127.0.0.1:${port}`,
    `pid_filename ${join(dir, 'squid.pid')}`,
    `cache_log ${join(dir, 'cache.log')}`,
    'access_log none',
    'cache deny all',
    `hosts_file ${join(dir, 'hosts')}`,
    'dns_nameservers 127.0.0.1',
    `coredump_dir ${dir}`,
    'shutdown_lifetime 0 seconds',
    'workers 1',
    `acl allowed dstdomain ${NAME}`,
    'http_access allow allowed',
    'http_access deny all',
    '',
  ].join('\n');
  writeFileSync(join(dir, 'squid.conf'), conf);
  const child = spawn('squid', ['-N', '-f', join(dir, 'squid.conf')], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr!.on('data', (d) => {
    err += d;
  });
  try {
    await waitForPort(port, child);
  } catch (e) {
    await stop(child);
    return { skipped: `squid did not start: ${(e as Error).message}; ${err.slice(0, 400)}` };
  }
  return { child, port };
}

function benchDecisions(): { rules: number; decisionsPerSecond: number; hitRate: number } {
  const rules: string[] = [];
  for (let i = 0; i < RULES; i++) {
    const d = `svc${i}.example${i % 97}.com`;
    rules.push(i % 4 === 0 ? `*.${d}` : i % 4 === 1 ? `.${d}` : i % 4 === 2 ? `${d}:443` : d);
  }
  const allowlist = new Allowlist(rules);
  const queries: [string, number][] = [];
  for (let i = 0; i < 4096; i++) {
    const k = (i * 7919) % RULES;
    const base = `svc${k}.example${k % 97}.com`;
    queries.push(i % 3 === 0 ? [`api.v2.${base}`, 443] : i % 3 === 1 ? [base, 443] : [`miss${i}.example${k % 97}.net`, 80]);
  }
  let hits = 0;
  for (const [h, p] of queries) if (allowlist.allows(h, p)) hits++;
  let n = 0;
  const t0 = performance.now();
  const end = t0 + DECISION_SECONDS * 1000;
  while (performance.now() < end) {
    for (let i = 0; i < queries.length; i++) {
      const q = queries[i]!;
      allowlist.allows(q[0], q[1]);
    }
    n += queries.length;
  }
  return { rules: RULES, decisionsPerSecond: Math.round(n / ((performance.now() - t0) / 1000)), hitRate: hits / queries.length };
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), `volant-egress-bench-${process.pid}-`));
  chmodSync(dir, 0o777); // squid drops to its own user and writes its log and pid here
  const dns = await startDnsServer({ records: { [NAME]: { a: ['127.0.0.1'] } } });
  const source = await startSource();
  let ours: { child: ChildProcess; port: number } | undefined;
  let squid: { child: ChildProcess; port: number } | { skipped: string } | undefined;
  const oursRuns: number[] = [];
  const squidRuns: number[] = [];
  try {
    ours = await startOurs(dns.address, source.port);
    squid = await startSquid(dir);
    await tunnelRun(ours.port, source.port); // warm-up
    if ('port' in squid) await tunnelRun(squid.port, source.port);
    for (let i = 0; i < RUNS_EACH; i++) {
      oursRuns.push(await tunnelRun(ours.port, source.port));
      if ('port' in squid) squidRuns.push(await tunnelRun(squid.port, source.port));
    }
  } finally {
    if (ours) await stop(ours.child);
    if (squid && 'child' in squid) await stop(squid.child);
    source.server.close();
    await dns.close();
    rmSync(dir, { recursive: true, force: true });
  }
  const decisions = benchDecisions();
  const oursMiBs = median(oursRuns);
  const squidMiBs = squidRuns.length ? median(squidRuns) : null;
  const ratio = squidMiBs ? oursMiBs / squidMiBs : null;
  const fmt = (x: number): string => x.toFixed(0).padStart(8);
  console.log(`CONNECT tunnel download, ${BYTES_PER_RUN / (1024 * 1024)} MiB per run, ${RUNS_EACH} alternating runs each`);
  console.log('proxy      median MiB/s   runs');
  console.log(`volant     ${fmt(oursMiBs)}       ${oursRuns.map((x) => x.toFixed(0)).join(', ')}`);
  if (squidMiBs !== null) console.log(`squid      ${fmt(squidMiBs)}       ${squidRuns.map((x) => x.toFixed(0)).join(', ')}`);
  else console.log(`squid      skipped: ${(squid as { skipped: string }).skipped}`);
  console.log(`ratio volant/squid: ${ratio === null ? 'n/a' : ratio.toFixed(2)} (goal >= 1.0)`);
  console.log(`Allowlist.allows with ${decisions.rules} rules: ${decisions.decisionsPerSecond.toLocaleString('en')} decisions/s (goal >= 1,000,000; hit rate ${(decisions.hitRate * 100).toFixed(0)}%)`);
  console.log(
    JSON.stringify({
      bench: 'egress',
      bytes_per_run: BYTES_PER_RUN,
      runs_each: RUNS_EACH,
      ours_mib_s: Math.round(oursMiBs),
      squid_mib_s: squidMiBs === null ? null : Math.round(squidMiBs),
      ratio_vs_squid: ratio === null ? null : Number(ratio.toFixed(3)),
      ratio_goal: 1.0,
      squid_skipped: squid && 'skipped' in squid ? squid.skipped : undefined,
      allowlist_rules: decisions.rules,
      allowlist_decisions_per_s: decisions.decisionsPerSecond,
      allowlist_goal_per_s: 1_000_000,
    }),
  );
}

main().catch((e) => {
  console.error(`bench/egress: ${(e as Error).stack ?? e}`);
  process.exit(1);
});

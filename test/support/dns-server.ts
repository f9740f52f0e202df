/**
 * A small real DNS server over UDP (RFC 1035 wire format) for tests: answers A, AAAA and CNAME
 * from a table, NXDOMAIN for unknown names, and can play the rebinding attacker (a name whose
 * answer changes on successive queries) or a dead resolver (never answers). It records every
 * query so a test can assert how often the proxy asked.
 *
 * Records (names case-insensitive, no trailing dot):
 *   { "ok.test": { "a": ["127.0.0.1"], "aaaa": ["::1"] },
 *     "alias.test": { "cname": "ok.test" },
 *     "rebind.test": { "sequence": [{ "a": ["93.184.216.34"] }, { "a": ["127.0.0.1"] }] },
 *     "dead.test": { "drop": true } }
 * A `sequence` answers its n-th entry on the n-th query of that name and type (the last entry
 * after that), with TTL 0.
 *
 * As a script: `node --import tsx test/support/dns-server.ts --port 53 [--host 127.0.0.1] --records JSON`
 * prints `dns-server listening on HOST:PORT` and serves until SIGTERM/SIGINT.
 */

import { createSocket, type Socket } from 'node:dgram';
import { isIP } from 'node:net';
import { pathToFileURL } from 'node:url';

export interface DnsAnswer {
  a?: string[];
  aaaa?: string[];
  cname?: string;
}

export interface DnsRecord extends DnsAnswer {
  sequence?: DnsAnswer[];
  drop?: boolean;
}

export type DnsRecords = Record<string, DnsRecord>;

export interface DnsQueryLog {
  name: string;
  type: 'A' | 'AAAA' | 'CNAME' | string;
}

export interface DnsServer {
  host: string;
  port: number;
  /** `host:port` as node:dns setServers takes it. */
  address: string;
  queries: DnsQueryLog[];
  /** Replaces the table (and resets sequence counters). */
  setRecords(records: DnsRecords): void;
  close(): Promise<void>;
}

const TYPE_A = 1;
const TYPE_CNAME = 5;
const TYPE_AAAA = 28;
const CLASS_IN = 1;
const RCODE_NXDOMAIN = 3;
const RCODE_FORMERR = 1;
const TTL_S = 60;
const MAX_CNAME_CHAIN = 8;

const typeName = (t: number): string => (t === TYPE_A ? 'A' : t === TYPE_AAAA ? 'AAAA' : t === TYPE_CNAME ? 'CNAME' : String(t));

function encodeName(name: string): Buffer {
  const parts = name.split('.').filter((l) => l.length > 0);
  return Buffer.concat([...parts.map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l, 'latin1')])), Buffer.from([0])]);
}

function readQuestion(msg: Buffer): { name: string; type: number; end: number } | undefined {
  let off = 12;
  const labels: string[] = [];
  while (off < msg.length) {
    const len = msg[off]!;
    if (len === 0) {
      off++;
      break;
    }
    if (len > 63 || off + 1 + len > msg.length) return undefined;
    labels.push(msg.subarray(off + 1, off + 1 + len).toString('latin1'));
    off += 1 + len;
  }
  if (off + 4 > msg.length) return undefined;
  return { name: labels.join('.').toLowerCase(), type: msg.readUInt16BE(off), end: off + 4 };
}

function rr(name: string, type: number, ttl: number, rdata: Buffer): Buffer {
  const head = Buffer.alloc(10);
  head.writeUInt16BE(type, 0);
  head.writeUInt16BE(CLASS_IN, 2);
  head.writeUInt32BE(ttl, 4);
  head.writeUInt16BE(rdata.length, 8);
  return Buffer.concat([encodeName(name), head, rdata]);
}

function ipv4Bytes(a: string): Buffer {
  return Buffer.from(a.split('.').map(Number));
}

function ipv6Bytes(a: string): Buffer {
  // Expand via the URL parser's canonical form, then fill the '::' gap.
  const canonical = new URL(`http://[${a}]/`).hostname.slice(1, -1);
  const [head, tail] = canonical.includes('::') ? canonical.split('::') : [canonical, undefined];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = [...h, ...new Array<string>(8 - h.length - t.length).fill('0'), ...t];
  const b = Buffer.alloc(16);
  for (const [i, g] of groups.entries()) b.writeUInt16BE(Number.parseInt(g, 16), i * 2);
  return b;
}

export async function startDnsServer(opts: { host?: string; port?: number; records?: DnsRecords } = {}): Promise<DnsServer> {
  const host = opts.host ?? '127.0.0.1';
  let records: DnsRecords = {};
  const counters = new Map<string, number>();
  const queries: DnsQueryLog[] = [];
  const setRecords = (r: DnsRecords): void => {
    records = Object.fromEntries(Object.entries(r).map(([k, v]) => [k.toLowerCase().replace(/\.$/, ''), v]));
    counters.clear();
  };
  setRecords(opts.records ?? {});

  const answerFor = (name: string, type: number): DnsAnswer | undefined => {
    const rec = records[name];
    if (!rec) return undefined;
    if (!rec.sequence) return rec;
    const key = `${name}|${type}`;
    const n = counters.get(key) ?? 0;
    counters.set(key, n + 1);
    return rec.sequence[Math.min(n, rec.sequence.length - 1)];
  };

  const socket: Socket = createSocket(isIP(host) === 6 ? 'udp6' : 'udp4');
  socket.on('message', (msg, rinfo) => {
    if (msg.length < 12) return;
    const q = readQuestion(msg);
    const header = Buffer.alloc(12);
    msg.copy(header, 0, 0, 2);
    const rd = msg[2]! & 0x01;
    if (!q) {
      header.writeUInt16BE(0x8000 | (rd << 8) | 0x80 | RCODE_FORMERR, 2);
      socket.send(header, rinfo.port, rinfo.address);
      return;
    }
    queries.push({ name: q.name, type: typeName(q.type) });
    if (records[q.name]?.drop) return;
    const question = msg.subarray(12, q.end);
    const answers: Buffer[] = [];
    let name = q.name;
    let found = false;
    for (let hop = 0; hop < MAX_CNAME_CHAIN; hop++) {
      const ans = answerFor(name, q.type);
      if (!ans) break;
      found = true;
      const ttl = records[name]?.sequence ? 0 : TTL_S;
      if (ans.cname && q.type !== TYPE_CNAME) {
        const target = ans.cname.toLowerCase().replace(/\.$/, '');
        answers.push(rr(name, TYPE_CNAME, ttl, encodeName(target)));
        name = target;
        continue;
      }
      if (q.type === TYPE_A) for (const a of ans.a ?? []) answers.push(rr(name, TYPE_A, ttl, ipv4Bytes(a)));
      if (q.type === TYPE_AAAA) for (const a of ans.aaaa ?? []) answers.push(rr(name, TYPE_AAAA, ttl, ipv6Bytes(a)));
      if (q.type === TYPE_CNAME && ans.cname) answers.push(rr(name, TYPE_CNAME, ttl, encodeName(ans.cname)));
      break;
    }
    // QR, opcode 0, AA, RD copied, RA; NXDOMAIN when the queried name is unknown.
    header.writeUInt16BE(0x8400 | (rd << 8) | 0x80 | (found ? 0 : RCODE_NXDOMAIN), 2);
    header.writeUInt16BE(1, 4);
    header.writeUInt16BE(answers.length, 6);
    socket.send(Buffer.concat([header, question, ...answers]), rinfo.port, rinfo.address);
  });
  await new Promise<void>((resolve, reject) => {
    socket.once('error', reject);
    socket.bind(opts.port ?? 0, host, () => {
      socket.off('error', reject);
      resolve();
    });
  });
  const port = socket.address().port;
  return {
    host,
    port,
    address: isIP(host) === 6 ? `[${host}]:${port}` : `${host}:${port}`,
    queries,
    setRecords,
    close: () => new Promise<void>((resolve) => socket.close(() => resolve())),
  };
}

async function main(argv: string[]): Promise<void> {
  const arg = (flag: string): string | undefined => {
    const i = argv.indexOf(flag);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  const recordsText = arg('--records') ?? '{}';
  let records: DnsRecords;
  try {
    records = JSON.parse(recordsText) as DnsRecords;
  } catch (e) {
    process.stderr.write(`dns-server: --records is not JSON: ${(e as Error).message}\n`);
    process.exit(2);
  }
  const server = await startDnsServer({ host: arg('--host') ?? '127.0.0.1', port: Number(arg('--port') ?? 0), records });
  process.stdout.write(`dns-server listening on ${server.address}\n`);
  const stop = (): void => {
    server.close().then(() => process.exit(0));
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main(process.argv.slice(2)).catch((e) => {
    process.stderr.write(`dns-server: ${(e as Error).message}\n`);
    process.exit(1);
  });
}

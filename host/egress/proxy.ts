/**
 * The per-VM egress proxy: an HTTP/1.1 forward proxy on a Unix socket (the VM's `<vsock>_3128`,
 * reached by guest-initiated hybrid vsock) or on TCP (the bridge address; `policyFor` maps the
 * source address to the VM). It serves `CONNECT host:port` tunnels and absolute-form `http://`
 * requests, and nothing else.
 *
 * What must hold (decide.ts has the pipeline):
 *  - every request is decided on exactly the bytes the client sent, and refused with an HTTP
 *    status and a JSON body naming the reason, never with a hang or a silent close (except after
 *    a tunnel's 200, where closing is all HTTP leaves);
 *  - the proxy resolves names itself and dials exactly an address it checked (no second lookup,
 *    so DNS rebinding cannot swap a private address in after the check);
 *  - plain HTTP is re-issued by undici to the pinned address with the client's Host header, hop-by-hop
 *    and Proxy-* headers removed, bodies streamed; `upgradeToHttps` sends it over TLS verified
 *    against the host name;
 *  - each decision produces one audit record and one counter increment.
 */

import { unlinkSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { isIP, type NetConnectOpts, connect as netConnect, type Socket } from 'node:net';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Client } from 'undici';
import { Allowlist } from '../../shared/allowlist.js';
import { VolantError } from '../../shared/errors.js';
import { AddressPolicy } from './address-policy.js';
import { type AllowedTarget, type Denial, decideAddresses, decideAllowlist, decideTunnelPayload, denialBody, deny, type DenyReason } from './decide.js';
import { EgressLimits } from './limits.js';
import { EgressMetrics } from './metrics.js';
import { createDnsResolver, DNS_TIMEOUT_MS, type NameResolver } from './resolver.js';
import { UpstreamReader } from './relay.js';
import { readClientHello } from './sni.js';
import { parseAbsoluteTarget, parseConnectTarget, type HttpTarget, type Target } from './target.js';
import { connectionTokens, isHopByHop } from '../../shared/http-headers.js';

export const CONNECT_TIMEOUT_MS = 10_000;
export const IDLE_TIMEOUT_MS = 300_000;
export const CLIENT_HELLO_TIMEOUT_MS = 10_000;
export const HEADERS_TIMEOUT_MS = 30_000;
export const CLOSE_LINGER_MS = 2000;
export const MAX_HEADER_BYTES = 16 * 1024;
export const MAX_REQUEST_BODY_BYTES = 64 * 1024 * 1024;
/**
 * Stream buffer per socket and direction. With Node's default (16 KiB) every 64 KiB read
 * overfills the writer, so each read pauses and resumes the reader (two epoll changes per read);
 * a larger mark keeps bulk tunnels streaming while still bounding memory per connection.
 */
export const TUNNEL_BUFFER_BYTES = 512 * 1024;

export interface EgressPolicy {
  vmName: string;
  allowedDomains: readonly string[];
}

export interface EgressPeer {
  remoteAddress?: string;
}

export interface AuditRecord {
  time: string;
  vm: string | null;
  method: string;
  host: string | null;
  port: number | null;
  address: string | null;
  decision: 'allow' | 'deny';
  reason: DenyReason | 'allowed';
  rule: string | null;
  status: number;
  bytes_in: number;
  bytes_out: number;
  duration_ms: number;
}

export interface EgressProxyOptions {
  listen: { path: string } | { host: string; port: number };
  policyFor(peer: EgressPeer): EgressPolicy | undefined;
  /** DNS servers (`ip`, `ip:port`); or any NameResolver. Default: the system's resolvers. */
  resolver?: { servers: readonly string[] } | NameResolver;
  dnsTimeoutMs?: number;
  connectTimeoutMs?: number;
  idleTimeoutMs?: number;
  clientHelloTimeoutMs?: number;
  /** CIDRs that may be dialled although private/loopback/... (config egress.allow_private). */
  allowPrivate?: readonly string[];
  /** The host's own addresses or ranges: never dialled, whatever allowPrivate covers (address-policy.ts). */
  deniedAddresses?: readonly string[];
  /** Re-issue plain http:// requests over https, verifying the certificate against the name. */
  upgradeToHttps?: boolean;
  /** Extra trust anchors for upstream TLS (tests; private PKI). */
  upstreamCa?: string | Buffer | (string | Buffer)[];
  maxTunnelsPerVm?: number;
  requestsPerSecondPerVm?: number;
  requestBurstPerVm?: number;
  maxConcurrent?: number;
  maxHeaderBytes?: number;
  maxRequestBodyBytes?: number;
  audit?(record: AuditRecord): void;
}

export interface EgressProxy {
  address: { path: string } | { host: string; port: number };
  metrics: EgressMetrics;
  close(): Promise<void>;
}

/** Header pairs to forward: hop-by-hop, Proxy-* and Connection-listed headers removed, and Expect (we answer it). */
export function forwardableHeaders(raw: readonly string[]): string[] {
  const listed = new Set<string>(['expect']);
  for (let i = 0; i < raw.length; i += 2) {
    if (raw[i]!.toLowerCase() === 'connection') for (const t of connectionTokens(raw[i + 1]!)) listed.add(t);
  }
  const out: string[] = [];
  for (let i = 0; i < raw.length; i += 2) {
    const k = raw[i]!.toLowerCase();
    if (isHopByHop(k, listed)) continue;
    out.push(raw[i]!, raw[i + 1]!);
  }
  return out;
}

interface Exchange {
  start: number;
  vm: string | null;
  method: string;
  target?: Target;
  address?: string;
  rule?: string;
}

const bracket = (a: string): string => (isIP(a) === 6 ? `[${a}]` : a);

const POSITIVE_OPTIONS = [
  'dnsTimeoutMs',
  'connectTimeoutMs',
  'idleTimeoutMs',
  'clientHelloTimeoutMs',
  'maxTunnelsPerVm',
  'requestsPerSecondPerVm',
  'requestBurstPerVm',
  'maxConcurrent',
  'maxHeaderBytes',
  'maxRequestBodyBytes',
] as const;

/** Refuses nonsensical limits before anything listens. */
function checkOptions(opts: EgressProxyOptions): void {
  for (const k of POSITIVE_OPTIONS) {
    const v = opts[k];
    if (v !== undefined && !(typeof v === 'number' && Number.isFinite(v) && v > 0)) {
      throw new VolantError('INVALID_ARGUMENT', `egress option ${k} must be a positive number, got ${JSON.stringify(v)}`, { option: k });
    }
  }
  if (typeof opts.policyFor !== 'function') throw new VolantError('INVALID_ARGUMENT', 'egress option policyFor must be a function');
  const l = opts.listen as { path?: unknown; host?: unknown; port?: unknown } | undefined;
  const validPath = typeof l?.path === 'string' && l.path.length > 0;
  const validTcp = typeof l?.host === 'string' && Number.isInteger(l.port) && (l.port as number) >= 0 && (l.port as number) <= 65535;
  if (!validPath && !validTcp) throw new VolantError('INVALID_ARGUMENT', 'egress option listen must be { path } or { host, port (0-65535) }');
}

/** Starts an egress proxy; rejects with VolantError INVALID_ARGUMENT for bad options (nothing listens then). */
export async function startEgressProxy(opts: EgressProxyOptions): Promise<EgressProxy> {
  checkOptions(opts);
  const resolver: NameResolver =
    opts.resolver && 'resolve' in opts.resolver
      ? opts.resolver
      : createDnsResolver({ servers: opts.resolver?.servers ?? [], timeoutMs: opts.dnsTimeoutMs ?? DNS_TIMEOUT_MS });
  const addresses = new AddressPolicy({ allowPrivate: opts.allowPrivate, deniedAddresses: opts.deniedAddresses });
  const limits = new EgressLimits({
    maxTunnelsPerVm: opts.maxTunnelsPerVm,
    requestsPerSecondPerVm: opts.requestsPerSecondPerVm,
    requestBurstPerVm: opts.requestBurstPerVm,
    maxConcurrentTotal: opts.maxConcurrent,
  });
  const metrics = new EgressMetrics();
  const connectTimeoutMs = opts.connectTimeoutMs ?? CONNECT_TIMEOUT_MS;
  const idleTimeoutMs = opts.idleTimeoutMs ?? IDLE_TIMEOUT_MS;
  const helloTimeoutMs = opts.clientHelloTimeoutMs ?? CLIENT_HELLO_TIMEOUT_MS;
  const maxBody = opts.maxRequestBodyBytes ?? MAX_REQUEST_BODY_BYTES;
  const allowlists = new Map<string, { rules: readonly string[]; joined: string; allowlist: Allowlist }>();
  const openSockets = new Set<Socket>();

  /** The compiled allowlist of a VM, recompiled only when its rules change (same array: no work). */
  const allowlistFor = (p: EgressPolicy): Allowlist => {
    const cached = allowlists.get(p.vmName);
    if (cached && cached.rules === p.allowedDomains) return cached.allowlist;
    const joined = p.allowedDomains.join('\n');
    if (cached && cached.joined === joined) {
      cached.rules = p.allowedDomains;
      return cached.allowlist;
    }
    const allowlist = new Allowlist(p.allowedDomains);
    allowlists.set(p.vmName, { rules: p.allowedDomains, joined, allowlist });
    return allowlist;
  };

  const vmOf = (socket: { remoteAddress?: string }): string | null => {
    try {
      return opts.policyFor({ remoteAddress: socket.remoteAddress })?.vmName ?? null;
    } catch {
      return null;
    }
  };

  const audit = (x: Exchange, decision: 'allow' | 'deny', reason: DenyReason | 'allowed', status: number, bytesIn = 0, bytesOut = 0): void => {
    const method = x.method === 'CONNECT' ? 'CONNECT' : 'HTTP';
    metrics.recordDecision({ vm: x.vm ?? '', method, decision, reason });
    if (x.vm) {
      metrics.recordBytes(x.vm, 'in', bytesIn);
      metrics.recordBytes(x.vm, 'out', bytesOut);
    }
    if (!opts.audit) return;
    try {
      opts.audit({
        time: new Date().toISOString(),
        vm: x.vm,
        method: x.method,
        host: x.target?.host ?? null,
        port: x.target?.port ?? null,
        address: x.address ?? null,
        decision,
        reason,
        rule: x.rule ?? null,
        status,
        bytes_in: bytesIn,
        bytes_out: bytesOut,
        duration_ms: Math.round(performance.now() - x.start),
      });
    } catch {
      // An audit sink that throws must not take the proxy down.
    }
  };

  /** Steps 1-4 shared by CONNECT and plain requests: policy, target, allowlist, admission, DNS, address check. */
  const admitAndResolve = async (
    x: Exchange,
    peer: EgressPeer,
    parse: () => { ok: true; target: Target } | { ok: false; reason: DenyReason; message: string },
    tunnel: boolean,
    dialPort?: (t: Target) => number,
  ): Promise<{ allowed: AllowedTarget; dial: string[]; release: () => void } | Denial> => {
    let policy: EgressPolicy | undefined;
    try {
      policy = opts.policyFor(peer);
    } catch {
      policy = undefined;
    }
    if (!policy) return deny(403, 'EGRESS_DENIED', 'no-policy', `no VM with outbound access is known for this connection (${peer.remoteAddress ?? 'unix socket'})`);
    x.vm = policy.vmName;
    const parsed = parse();
    if (!parsed.ok) {
      const status = parsed.reason === 'userinfo' || parsed.reason === 'host-mismatch' || parsed.reason === 'scheme' ? 403 : 400;
      return deny(status, status === 403 ? 'EGRESS_DENIED' : 'INVALID_ARGUMENT', parsed.reason, parsed.message);
    }
    x.target = parsed.target;
    let allowlist: Allowlist;
    try {
      allowlist = allowlistFor(policy);
    } catch (e) {
      return deny(500, 'INTERNAL', 'no-policy', `VM ${policy.vmName} has an invalid allowlist: ${(e as Error).message}`);
    }
    const checkTarget = dialPort ? { ...parsed.target, port: dialPort(parsed.target) } : parsed.target;
    const allowed = decideAllowlist(allowlist, checkTarget);
    if ('status' in allowed) return allowed;
    x.rule = allowed.rule;
    const admission = limits.admit(policy.vmName, tunnel, performance.now());
    if (admission === 'rate-limited') return deny(429, 'RATE_LIMITED', 'rate-limited', `VM ${policy.vmName} exceeds ${limits.rate} egress requests per second`);
    if (admission === 'tunnel-limit') return deny(429, 'RATE_LIMITED', 'tunnel-limit', `VM ${policy.vmName} already has ${limits.maxTunnelsPerVm} open tunnels`);
    if (admission === 'overloaded') return deny(503, 'OVERLOADED', 'overloaded', `egress proxy is at its limit of ${limits.maxConcurrentTotal} concurrent connections`);
    const vm = policy.vmName;
    let released = false;
    const release = (): void => {
      if (released) return;
      released = true;
      limits.release(vm, tunnel);
    };
    let resolved: string[];
    if (allowed.literal) resolved = [allowed.host];
    else {
      try {
        resolved = await resolver.resolve(allowed.host);
      } catch (e) {
        release();
        const reason = ((e as VolantError).details as { reason?: DenyReason } | undefined)?.reason ?? 'dns-error';
        const code = e instanceof VolantError ? e.code : 'UPSTREAM_UNREACHABLE';
        return deny(code === 'TIMEOUT' ? 504 : 502, code, reason, (e as Error).message, { rule: allowed.rule });
      }
    }
    const dial = decideAddresses(addresses, allowed, resolved);
    if (!Array.isArray(dial)) {
      release();
      if (dial.address) x.address = dial.address;
      return dial;
    }
    return { allowed, dial, release };
  };

  const handleConnect = async (req: IncomingMessage, client: Socket, head: Buffer): Promise<void> => {
    const x: Exchange = { start: performance.now(), vm: null, method: 'CONNECT' };
    openSockets.add(client);
    client.on('close', () => openSockets.delete(client));
    client.on('error', () => client.destroy());
    client.pause();
    const refuse = (d: Denial): void => {
      audit(x, 'deny', d.reason, d.status);
      if (!client.writable) return;
      refuseOnSocket(client, d);
    };
    const r = await admitAndResolve(x, { remoteAddress: client.remoteAddress }, () => parseConnectTarget(req.url ?? ''), true);
    if ('status' in r) {
      refuse(r);
      return;
    }
    let upstream: Socket;
    const reader = new UpstreamReader();
    try {
      upstream = await dialFirst(r.dial, r.allowed.port, connectTimeoutMs, reader, (a) => {
        x.address = a;
      });
    } catch (e) {
      r.release();
      const timeout = (e as VolantError).code === 'TIMEOUT';
      refuse(deny(timeout ? 504 : 502, timeout ? 'TIMEOUT' : 'UPSTREAM_UNREACHABLE', timeout ? 'connect-timeout' : 'connect-failed', (e as Error).message, { rule: r.allowed.rule, address: x.address }));
      return;
    }
    if (client.destroyed) {
      upstream.destroy();
      r.release();
      audit(x, 'deny', 'connect-failed', 499);
      return;
    }
    const vm = x.vm!;
    metrics.tunnelOpened(vm);
    openSockets.add(upstream);
    let helloTimer: NodeJS.Timeout | undefined;
    let verdict: { decision: 'allow' | 'deny'; reason: DenyReason | 'allowed' } = { decision: 'allow', reason: 'allowed' };
    let relaying = false;
    const destroyBoth = (): void => {
      client.destroy();
      upstream.destroy();
    };
    const fail = (d: Denial): void => {
      verdict = { decision: 'deny', reason: d.reason };
      destroyBoth();
    };
    // The tunnel is over when both sockets have closed. One side closing ends the other
    // gracefully, so bytes still queued for a slow reader are delivered, not cut off.
    let open = 2;
    const onClose = (other: Socket) => (hadError: boolean) => {
      if (hadError || verdict.decision === 'deny') other.destroy();
      else other.end();
      if (--open > 0) return;
      clearTimeout(helloTimer);
      openSockets.delete(upstream);
      r.release();
      metrics.tunnelClosed(vm);
      audit(x, verdict.decision, verdict.reason, 200, upstream.bytesRead, upstream.bytesWritten);
    };
    client.on('close', onClose(upstream));
    upstream.on('close', onClose(client));
    // http.Server sockets allow half-open: a client that ends before the tunnel is decided is done.
    client.once('end', () => {
      if (!relaying) destroyBoth();
    });
    upstream.on('error', () => upstream.destroy());
    client.setTimeout(idleTimeoutMs, destroyBoth);
    upstream.setTimeout(idleTimeoutMs, destroyBoth);
    client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
    // A rule naming the port admits server-speaks-first protocols: relay the server at once.
    if (r.allowed.ruleNamesPort) reader.relay(upstream, client);
    let pending: Buffer = head;
    if (!r.allowed.ruleNamesPort) {
      helloTimer = setTimeout(
        () => fail(deny(403, 'EGRESS_DENIED', 'client-hello-invalid', `no complete TLS ClientHello within ${helloTimeoutMs} ms`, { rule: r.allowed.rule })),
        helloTimeoutMs,
      );
    }
    const inspect = (): boolean => {
      const v = decideTunnelPayload(r.allowed, readClientHello(pending));
      if (v.state === 'need-more') return false;
      client.off('data', onData);
      clearTimeout(helloTimer);
      if (v.state === 'deny') {
        fail(v.denial);
        return true;
      }
      relaying = true;
      client.pause();
      upstream.write(pending);
      client.pipe(upstream);
      if (!r.allowed.ruleNamesPort) reader.relay(upstream, client);
      client.resume();
      return true;
    };
    const onData = (chunk: Buffer): void => {
      pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
      inspect();
    };
    if (pending.length === 0 || !inspect()) {
      client.on('data', onData);
      client.resume();
    }
  };

  const handleRequest = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const x: Exchange = { start: performance.now(), vm: null, method: req.method ?? 'GET' };
    const refuse = (d: Denial): void => {
      audit(x, 'deny', d.reason, d.status);
      if (res.headersSent) {
        res.destroy();
        return;
      }
      const body = denialBody(d);
      res.writeHead(d.status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), connection: 'close' });
      res.end(body);
      req.resume();
    };
    const upgrade = opts.upgradeToHttps === true;
    let httpTarget: HttpTarget | undefined;
    const r = await admitAndResolve(
      x,
      { remoteAddress: req.socket.remoteAddress },
      () => {
        // Node keeps only the first of repeated Host headers; the upstream would see them all.
        if (countHeader(req.rawHeaders, 'host') > 1) return { ok: false, reason: 'host-mismatch', message: 'more than one Host header' };
        const p = parseAbsoluteTarget(req.url ?? '', req.headers.host);
        if (p.ok) httpTarget = p.target;
        return p;
      },
      false,
      // Upgraded requests are decided on the port actually dialled (80 becomes 443).
      upgrade ? (t) => (t.port === 80 ? 443 : t.port) : undefined,
    );
    if ('status' in r) {
      refuse(r);
      return;
    }
    const declared = req.headers['content-length'];
    if (declared !== undefined && Number(declared) > maxBody) {
      r.release();
      refuse(deny(413, 'INVALID_ARGUMENT', 'body-too-large', `request body of ${declared} bytes exceeds ${maxBody}`, { rule: r.allowed.rule }));
      return;
    }
    const address = r.dial[0]!;
    x.address = address;
    const port = upgrade ? (r.allowed.port === 80 ? 443 : r.allowed.port) : r.allowed.port;
    const origin = `${upgrade ? 'https' : 'http'}://${bracket(address)}:${port}`;
    const client = new Client(origin, {
      connect: {
        timeout: connectTimeoutMs,
        ...(upgrade ? { servername: r.allowed.literal ? undefined : r.allowed.host, rejectUnauthorized: true, ca: opts.upstreamCa } : {}),
      },
      headersTimeout: idleTimeoutMs,
      bodyTimeout: idleTimeoutMs,
    });
    const headers = forwardableHeaders(req.rawHeaders);
    if (req.headers.host === undefined) headers.push('Host', `${bracket(x.target!.host)}${x.target!.port === 80 ? '' : `:${x.target!.port}`}`);
    const hasBody = declared !== undefined || req.headers['transfer-encoding'] !== undefined;
    let bytesOut = 0;
    let tooLarge = false;
    const counted = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        bytesOut += chunk.length;
        if (bytesOut > maxBody) {
          tooLarge = true;
          cb(new VolantError('INVALID_ARGUMENT', `request body exceeds ${maxBody} bytes`));
          return;
        }
        cb(null, chunk);
      },
    });
    const abort = new AbortController();
    res.on('close', () => {
      if (!res.writableFinished) abort.abort();
    });
    let bytesIn = 0;
    try {
      if (hasBody) req.pipe(counted);
      const up = await client.request({
        method: req.method ?? 'GET',
        path: httpTarget!.path,
        headers,
        body: hasBody ? counted : undefined,
        signal: abort.signal,
      });
      const resHeaders: string[] = [];
      const raw = up.headers;
      const listed = connectionTokens(raw.connection);
      for (const [k, v] of Object.entries(raw)) {
        if (v === undefined || isHopByHop(k.toLowerCase(), listed)) continue;
        for (const one of Array.isArray(v) ? v : [v]) resHeaders.push(k, one);
      }
      res.writeHead(up.statusCode, resHeaders);
      up.body.on('data', (c: Buffer) => {
        bytesIn += c.length;
      });
      await pipeline(up.body, res);
      audit(x, 'allow', 'allowed', up.statusCode, bytesIn, bytesOut);
    } catch (e) {
      if (tooLarge) refuse(deny(413, 'INVALID_ARGUMENT', 'body-too-large', `request body exceeds ${maxBody} bytes`, { rule: r.allowed.rule }));
      else {
        const code = (e as { code?: string }).code ?? '';
        const timeout = code === 'UND_ERR_CONNECT_TIMEOUT' || code === 'UND_ERR_HEADERS_TIMEOUT';
        const reason: DenyReason = timeout ? 'connect-timeout' : code === 'ECONNREFUSED' ? 'connect-failed' : 'upstream-error';
        refuse(deny(timeout ? 504 : 502, timeout ? 'TIMEOUT' : 'UPSTREAM_UNREACHABLE', reason, `upstream ${x.target!.host}:${port} (${address}): ${(e as Error).message}`, { rule: r.allowed.rule, address }));
      }
    } finally {
      r.release();
      client.destroy().catch(() => {});
    }
  };

  const server: Server = createServer({
    maxHeaderSize: opts.maxHeaderBytes ?? MAX_HEADER_BYTES,
    requireHostHeader: false,
    headersTimeout: HEADERS_TIMEOUT_MS,
    highWaterMark: TUNNEL_BUFFER_BYTES,
  });
  server.keepAliveTimeout = 5000;
  server.on('connect', (req, socket, head) => {
    handleConnect(req, socket as Socket, head).catch(() => (socket as Socket).destroy());
  });
  server.on('request', (req, res) => {
    handleRequest(req, res).catch(() => res.destroy());
  });
  server.on('upgrade', (req, socket) => {
    const x: Exchange = { start: performance.now(), vm: vmOf(socket as Socket), method: req.method ?? 'GET' };
    const d = deny(501, 'NOT_SUPPORTED', 'upgrade-unsupported', 'protocol upgrades are not proxied as plain requests; use CONNECT');
    audit(x, 'deny', d.reason, d.status);
    refuseOnSocket(socket as Socket, d);
  });
  server.on('connection', (s: Socket) => {
    openSockets.add(s);
    s.on('close', () => openSockets.delete(s));
  });
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
    const x: Exchange = { start: performance.now(), vm: vmOf(socket), method: 'UNKNOWN' };
    const big = err.code === 'HPE_HEADER_OVERFLOW';
    const d = big
      ? deny(431, 'INVALID_ARGUMENT', 'header-too-large', `request headers exceed ${opts.maxHeaderBytes ?? MAX_HEADER_BYTES} bytes`)
      : deny(400, 'INVALID_ARGUMENT', 'bad-target', `malformed HTTP request (${err.code ?? err.message})`);
    audit(x, 'deny', d.reason, d.status);
    if (!socket.writable || err.code === 'ECONNRESET') {
      socket.destroy();
      return;
    }
    refuseOnSocket(socket, d);
  });

  const listen = opts.listen;
  if ('path' in listen) {
    try {
      unlinkSync(listen.path);
    } catch {
      // no stale socket file
    }
  }
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    const done = (): void => {
      server.off('error', reject);
      resolve();
    };
    if ('path' in listen) server.listen(listen.path, done);
    else server.listen(listen.port, listen.host, done);
  });
  const bound = server.address();
  const address = 'path' in listen ? { path: listen.path } : { host: listen.host, port: typeof bound === 'object' && bound ? bound.port : listen.port };

  return {
    address,
    metrics,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => {
          if ('path' in listen) {
            try {
              unlinkSync(listen.path);
            } catch {
              // already gone
            }
          }
          resolve();
        });
        for (const s of openSockets) s.destroy();
      }),
  };
}

/**
 * Answers a refusal on a raw socket (CONNECT, upgrade, parse errors) and closes it. The socket
 * keeps reading so the client's close completes ours (http.Server sockets allow half-open), and
 * a client that never closes is cut after CLOSE_LINGER_MS.
 */
function refuseOnSocket(socket: Socket, d: Denial): void {
  const body = denialBody(d);
  socket.resume();
  socket.end(`HTTP/1.1 ${d.status} ${statusText(d.status)}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
  setTimeout(() => socket.destroy(), CLOSE_LINGER_MS).unref();
}

function countHeader(raw: readonly string[], name: string): number {
  let n = 0;
  for (let i = 0; i < raw.length; i += 2) if (raw[i]!.toLowerCase() === name) n++;
  return n;
}

function statusText(status: number): string {
  return (
    {
      400: 'Bad Request',
      403: 'Forbidden',
      413: 'Content Too Large',
      429: 'Too Many Requests',
      431: 'Request Header Fields Too Large',
      500: 'Internal Server Error',
      501: 'Not Implemented',
      502: 'Bad Gateway',
      503: 'Service Unavailable',
      504: 'Gateway Timeout',
    } as Record<number, string>
  )[status] ?? 'Error';
}

/** Dials the checked addresses in order until one answers, within one overall budget. */
function dialFirst(addresses: readonly string[], port: number, timeoutMs: number, reader: UpstreamReader, onTry: (a: string) => void): Promise<Socket> {
  const deadline = performance.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    let i = 0;
    let lastError: Error | undefined;
    const next = (): void => {
      const left = deadline - performance.now();
      const address = addresses[i++];
      if (address === undefined || left <= 0) {
        reject(
          left <= 0
            ? new VolantError('TIMEOUT', `connecting to port ${port} took longer than ${timeoutMs} ms`)
            : new VolantError('UPSTREAM_UNREACHABLE', `cannot connect to ${addresses.join(', ')} port ${port}: ${lastError?.message ?? 'no address'}`),
        );
        return;
      }
      onTry(address);
      // highWaterMark reaches the Duplex constructor; @types/node omits it from the connect options.
      const s = netConnect({ host: address, port, family: isIP(address), highWaterMark: TUNNEL_BUFFER_BYTES, allowHalfOpen: true, onread: reader.onread } as NetConnectOpts);
      reader.attach(s);
      const timer = setTimeout(() => {
        s.destroy();
        lastError = new Error('timeout');
        reject(new VolantError('TIMEOUT', `connecting to ${bracket(address)}:${port} took longer than ${timeoutMs} ms`));
      }, left);
      s.once('connect', () => {
        clearTimeout(timer);
        s.removeAllListeners('error');
        s.setNoDelay(true);
        resolve(s);
      });
      s.once('error', (e) => {
        clearTimeout(timer);
        lastError = e;
        s.destroy();
        next();
      });
    };
    next();
  });
}

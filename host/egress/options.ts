/**
 * What an egress proxy is started with, checked once before anything listens, and the settings
 * (explicit state) every part of the proxy reads: timeouts, size limits, upstream TLS.
 */

import { VolantError } from '../../shared/errors.js';
import type { Logger } from '../log/logger.js';
import type { EgressLimits } from './limits.js';
import type { AuditRecord } from './audit.js';
import type { EgressMetrics } from './metrics.js';
import type { NameResolver } from './resolver.js';

export const CONNECT_TIMEOUT_MS = 10_000;
export const IDLE_TIMEOUT_MS = 300_000;
export const CLIENT_HELLO_TIMEOUT_MS = 10_000;
export const HEADERS_TIMEOUT_MS = 30_000;
export const KEEP_ALIVE_TIMEOUT_MS = 5000;
/** After a refusal on a raw socket, how long the client's remaining bytes are read before the socket is cut. */
export const CLOSE_LINGER_MS = 2000;
export const MAX_HEADER_BYTES = 16 * 1024;
export const MAX_REQUEST_BODY_BYTES = 64 * 1024 * 1024;

export interface EgressPolicy {
  vmName: string;
  allowedDomains: readonly string[];
}

export interface EgressPeer {
  remoteAddress?: string;
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
  /**
   * The limiter shared by every VM's listener (host-wide concurrency, per-VM rate and tunnels).
   * When given, the four limit options below must not be: the shared limiter carries them.
   */
  limits?: EgressLimits;
  maxTunnelsPerVm?: number;
  requestsPerSecondPerVm?: number;
  requestBurstPerVm?: number;
  maxConcurrent?: number;
  maxHeaderBytes?: number;
  maxRequestBodyBytes?: number;
  /** Window over which identical denials are aggregated into one summary audit line. */
  auditWindowMs?: number;
  audit?(record: AuditRecord): void;
  /** Where the proxy reports what is not a decision (a request path that failed unexpectedly); decisions go to `audit`. */
  log?: Logger;
  /** The metric families every VM's proxy counts into (volantd's registry); default: the proxy's own. */
  metrics?: EgressMetrics;
}

/** The settings the request paths read (resolved defaults). */
export interface EgressSettings {
  connectTimeoutMs: number;
  idleTimeoutMs: number;
  helloTimeoutMs: number;
  maxHeaderBytes: number;
  maxRequestBodyBytes: number;
  upgradeToHttps: boolean;
  upstreamCa: EgressProxyOptions['upstreamCa'];
}

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
  'auditWindowMs',
] as const;

const LIMIT_OPTIONS = ['maxTunnelsPerVm', 'requestsPerSecondPerVm', 'requestBurstPerVm', 'maxConcurrent'] as const;

/** Refuses nonsensical options before anything listens (INVALID_ARGUMENT naming the option). */
export function checkOptions(opts: EgressProxyOptions): void {
  for (const k of POSITIVE_OPTIONS) {
    const v = opts[k];
    if (v !== undefined && !(typeof v === 'number' && Number.isFinite(v) && v > 0)) {
      throw new VolantError('INVALID_ARGUMENT', `egress option ${k} must be a positive number, got ${JSON.stringify(v)}`, { option: k });
    }
  }
  if (opts.limits !== undefined) {
    for (const k of LIMIT_OPTIONS) {
      if (opts[k] !== undefined) throw new VolantError('INVALID_ARGUMENT', `egress option ${k} cannot be combined with a shared limits object (it carries the limits)`, { option: k });
    }
  }
  if (typeof opts.policyFor !== 'function') throw new VolantError('INVALID_ARGUMENT', 'egress option policyFor must be a function');
  const l = opts.listen as { path?: unknown; host?: unknown; port?: unknown } | undefined;
  const validPath = typeof l?.path === 'string' && l.path.length > 0;
  const validTcp = typeof l?.host === 'string' && Number.isInteger(l.port) && (l.port as number) >= 0 && (l.port as number) <= 65535;
  if (!validPath && !validTcp) throw new VolantError('INVALID_ARGUMENT', 'egress option listen must be { path } or { host, port (0-65535) }');
}

export function settingsOf(opts: EgressProxyOptions): EgressSettings {
  return {
    connectTimeoutMs: opts.connectTimeoutMs ?? CONNECT_TIMEOUT_MS,
    idleTimeoutMs: opts.idleTimeoutMs ?? IDLE_TIMEOUT_MS,
    helloTimeoutMs: opts.clientHelloTimeoutMs ?? CLIENT_HELLO_TIMEOUT_MS,
    maxHeaderBytes: opts.maxHeaderBytes ?? MAX_HEADER_BYTES,
    maxRequestBodyBytes: opts.maxRequestBodyBytes ?? MAX_REQUEST_BODY_BYTES,
    upgradeToHttps: opts.upgradeToHttps === true,
    upstreamCa: opts.upstreamCa,
  };
}

/**
 * The outbound allowlist: which destinations a workload may reach. Rules are
 *
 *   example.com         that name exactly
 *   *.example.com       any subdomain of example.com (not example.com itself)
 *   .example.com        example.com and its subdomains (Squid's spelling)
 *   203.0.113.7, [2001:db8::1]   that IP literal exactly (the only way an IP target passes)
 *
 * each optionally followed by `:port` (no port: any port), then optionally by options, separated
 * by spaces:
 *
 *   legacy.example.com:8443 sni=optional   a TLS client that sends no server name (SNI) is
 *                                          admitted through a CONNECT tunnel (by default a
 *                                          ClientHello without SNI for a name is refused)
 *
 * Names are compared as lower-case ASCII (IDN → punycode) with one trailing dot removed.
 * IP-literal targets, in any notation the URL parser accepts (decimal `2130706433`, octal, hex,
 * IPv6, mapped), never match a name rule. Options of identical targets add up.
 *
 * A decision is a few hash lookups: one for the exact name and one per parent domain, so it
 * costs O(labels in the host), not O(rules).
 */

import { isIP } from 'node:net';
import { domainToASCII } from 'node:url';
import { VolantError } from './errors.js';

const ANY_PORT = -1;
const LABEL = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/;
const PLAIN_ASCII_HOST = /^[a-z0-9.-]+$/;
const CANONICAL_NAME = /^(?=.{1,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?$/;
const MAX_RULES = 100_000;
const MAX_HOST_LENGTH = 253;

/** The options a rule may carry after its target. */
export const RULE_OPTIONS = ['sni=optional'] as const;
export type RuleOption = (typeof RULE_OPTIONS)[number];

/** A rule's text split into its target (`host[:port]`) and its options; no validation. */
export function splitRuleOptions(rule: string): { target: string; options: string[] } {
  const parts = rule.trim().split(/[ \t]+/);
  return { target: parts[0] ?? '', options: parts.slice(1) };
}

type PortSet = Set<number>;

export interface RuleMatch {
  rule: string;
}

export interface Decision {
  allowed: boolean;
  /** The rule that allowed the target, when one did. */
  rule?: string;
  /** The options of the rule that allowed the target. */
  options?: ReadonlySet<RuleOption>;
  /** Why it was refused, when it was. */
  reason?: string;
}

interface ParsedRule {
  kind: 'exact' | 'subdomains' | 'domain-and-subdomains' | 'ip';
  host: string;
  port: number;
  options: RuleOption[];
}

function invalid(rule: string, why: string): VolantError {
  return new VolantError('INVALID_ARGUMENT', `allowlist rule ${JSON.stringify(rule.slice(0, 100))} is invalid: ${why}`, { rule });
}

function splitPort(text: string): { host: string; port: string | undefined } {
  if (text.startsWith('[')) {
    const close = text.indexOf(']');
    if (close < 0) return { host: text, port: undefined };
    const after = text.slice(close + 1);
    return { host: text.slice(1, close), port: after.startsWith(':') ? after.slice(1) : after === '' ? undefined : after };
  }
  const colon = text.lastIndexOf(':');
  if (colon >= 0 && text.indexOf(':') === colon) return { host: text.slice(0, colon), port: text.slice(colon + 1) };
  return { host: text, port: undefined };
}

function parsePort(p: string | undefined, rule: string): number {
  if (p === undefined) return ANY_PORT;
  if (!/^[0-9]{1,5}$/.test(p) || Number(p) < 1 || Number(p) > 65535) throw invalid(rule, `port ${JSON.stringify(p)} is not 1-65535`);
  return Number(p);
}

/**
 * Canonical form of an IP literal, or undefined when `host` is not one. Uses the WHATWG URL host
 * parser, which is what HTTP clients apply, so `0x7f.1`, `017700000001` and `2130706433` are all
 * recognised as 127.0.0.1.
 */
export function canonicalIpLiteral(host: string): string | undefined {
  let h = host;
  if (h.startsWith('[') && h.endsWith(']')) h = h.slice(1, -1);
  if (isIP(h) === 6) {
    try {
      return new URL(`http://[${h}]/`).hostname.slice(1, -1);
    } catch {
      return undefined;
    }
  }
  if (isIP(h) === 4) return h;
  // Numeric IPv4 spellings: only characters the URL parser's IPv4 path can take.
  if (!/^[0-9a-fA-FxX.]+$/.test(h) || !/^[0-9]/.test(h.replace(/\.$/, '').split('.').pop() ?? '')) return undefined;
  try {
    const parsed = new URL(`http://${h}/`).hostname;
    return isIP(parsed) === 4 ? parsed : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Normalises a host name the way rules are stored: trailing dot removed, lower-case, IDN to
 * punycode, every label LDH. Returns undefined when the name cannot be a DNS host name.
 */
export function normalizeHostName(host: string): string | undefined {
  if (typeof host !== 'string' || host.length === 0 || host.length > MAX_HOST_LENGTH + 1) return undefined;
  let h = host.endsWith('.') ? host.slice(0, -1) : host;
  if (h.length === 0) return undefined;
  if (!PLAIN_ASCII_HOST.test(h)) {
    // Refuse what no host name contains before the IDN mapping can fold it into something valid
    // (e.g. fullwidth '．' or '％' tricks are mapped deliberately by UTS 46; '@', '/', '\' never are).
    if (/[\s@/\\?#%:[\]]/.test(h)) return undefined;
    h = domainToASCII(h.toLowerCase());
    if (h === '') return undefined;
    if (h.endsWith('.')) h = h.slice(0, -1);
  }
  if (h.length > MAX_HOST_LENGTH) return undefined;
  for (const label of h.split('.')) if (!LABEL.test(label)) return undefined;
  return h;
}

function parseOptions(texts: readonly string[], raw: string): RuleOption[] {
  const out: RuleOption[] = [];
  for (const t of texts) {
    if (!(RULE_OPTIONS as readonly string[]).includes(t)) {
      throw invalid(raw, `unknown option ${JSON.stringify(t.slice(0, 40))} (options: ${RULE_OPTIONS.join(', ')})`);
    }
    out.push(t as RuleOption);
  }
  return out;
}

function parseRule(raw: unknown): ParsedRule {
  if (typeof raw !== 'string') throw invalid(String(raw), 'a rule must be a string');
  const text = raw.trim();
  if (text === '') throw invalid(raw, 'empty rule');
  if (text.length > 300) throw invalid(raw, 'longer than 300 characters');
  if (/[\r\n\f\v]/.test(text)) throw invalid(raw, 'a rule is one line');
  const { target: rule, options: optionTexts } = splitRuleOptions(text);
  if (/[\s@/\\?#%]/.test(rule)) throw invalid(raw, 'rules are host names, optionally with :port (no scheme, path, userinfo or spaces)');
  const options = parseOptions(optionTexts, raw);
  const { host, port: portText } = splitPort(rule);
  const port = parsePort(portText, raw);
  const ip = canonicalIpLiteral(host);
  if (ip !== undefined) {
    if (isIP(host.replace(/^\[|\]$/g, '')) === 0) throw invalid(raw, 'IP rules must be written in standard notation (dotted-quad or RFC 5952 IPv6)');
    return { kind: 'ip', host: ip, port, options };
  }
  let kind: ParsedRule['kind'] = 'exact';
  let name = host;
  if (name.startsWith('*.')) {
    kind = 'subdomains';
    name = name.slice(2);
  } else if (name.startsWith('.')) {
    kind = 'domain-and-subdomains';
    name = name.slice(1);
  }
  if (name.includes('*')) throw invalid(raw, "'*' is only allowed as a leading '*.' label");
  const normal = normalizeHostName(name);
  if (normal === undefined) throw invalid(raw, 'not a valid host name');
  if (kind !== 'exact' && !normal.includes('.')) throw invalid(raw, 'a wildcard must cover a registrable domain, not a whole top-level domain');
  return { kind, host: normal, port, options };
}

function addPort(map: Map<string, PortSet>, key: string, port: number): void {
  let s = map.get(key);
  if (!s) {
    s = new Set();
    map.set(key, s);
  }
  s.add(port);
}

/** No port (any) or an integer 1-65535. */
function portIsValid(port: number | undefined): boolean {
  return port === undefined || (Number.isInteger(port) && port >= 1 && port <= 65535);
}

function portAllowed(s: PortSet | undefined, port: number | undefined): boolean {
  if (!s) return false;
  return s.has(ANY_PORT) || (port !== undefined && s.has(port));
}

export class Allowlist {
  private readonly exact = new Map<string, PortSet>();
  private readonly suffix = new Map<string, PortSet>();
  private readonly ips = new Map<string, PortSet>();
  private readonly ruleText = new Map<string, string>();
  private readonly ruleOptions = new Map<string, Set<RuleOption>>();
  readonly size: number;

  /** @throws VolantError INVALID_ARGUMENT naming the first invalid rule. */
  constructor(rules: readonly string[] = []) {
    if (!Array.isArray(rules)) throw new VolantError('INVALID_ARGUMENT', 'allowlist rules must be an array of strings');
    if (rules.length > MAX_RULES) throw new VolantError('INVALID_ARGUMENT', `allowlist has ${rules.length} rules; at most ${MAX_RULES}`);
    for (const raw of rules) {
      const r = parseRule(raw);
      switch (r.kind) {
        case 'ip':
          addPort(this.ips, r.host, r.port);
          break;
        case 'exact':
          addPort(this.exact, r.host, r.port);
          break;
        case 'subdomains':
          addPort(this.suffix, r.host, r.port);
          break;
        case 'domain-and-subdomains':
          addPort(this.exact, r.host, r.port);
          addPort(this.suffix, r.host, r.port);
          break;
      }
      const key = `${r.kind}|${r.host}|${r.port}`;
      this.ruleText.set(key, String(raw).trim());
      const opts = this.ruleOptions.get(key) ?? new Set<RuleOption>();
      for (const o of r.options) opts.add(o);
      this.ruleOptions.set(key, opts);
    }
    this.size = rules.length;
  }

  /** Validates rules without keeping them: every problem, with the index of the rule. */
  static check(rules: readonly unknown[]): { index: number; message: string }[] {
    const problems: { index: number; message: string }[] = [];
    rules.forEach((r, index) => {
      try {
        parseRule(r);
      } catch (e) {
        problems.push({ index, message: (e as Error).message });
      }
    });
    return problems;
  }

  allows(host: string, port?: number): boolean {
    // Fast path: an already-canonical name (lower-case LDH labels, last label starting with a
    // letter, so it cannot be a numeric IPv4 spelling) needs neither the URL parser nor IDN.
    if (typeof host === 'string' && CANONICAL_NAME.test(host) && portIsValid(port)) {
      return this.matchName(host, port) !== undefined;
    }
    return this.decide(host, port).allowed;
  }

  decide(host: string, port?: number): Decision {
    if (typeof host !== 'string' || host.length === 0) return { allowed: false, reason: 'empty host' };
    if (!portIsValid(port)) return { allowed: false, reason: `invalid port ${port}` };
    const ip = canonicalIpLiteral(host);
    if (ip !== undefined) {
      const s = this.ips.get(ip);
      if (portAllowed(s, port)) return this.allowedBy([`ip|${ip}|${s!.has(ANY_PORT) ? ANY_PORT : (port ?? ANY_PORT)}`], ip);
      return { allowed: false, reason: `IP literal ${ip} is not in the allowlist (name rules never match IP addresses)` };
    }
    const name = normalizeHostName(host);
    if (name === undefined) return { allowed: false, reason: 'not a valid host name' };
    const m = this.matchName(name, port);
    if (m) {
      const p = m.ports.has(ANY_PORT) ? ANY_PORT : (port ?? ANY_PORT);
      const kinds: ParsedRule['kind'][] = m.viaSuffix ? ['subdomains', 'domain-and-subdomains'] : ['exact', 'domain-and-subdomains'];
      return this.allowedBy(kinds.map((k) => `${k}|${m.host}|${p}`), m.host);
    }
    return { allowed: false, reason: `${name}${port === undefined ? '' : `:${port}`} matches no allowlist rule` };
  }

  /** The rule entry admitting a normalised name: exact first, then each parent domain. */
  private matchName(name: string, port: number | undefined): { host: string; ports: PortSet; viaSuffix: boolean } | undefined {
    const e = this.exact.get(name);
    if (portAllowed(e, port)) return { host: name, ports: e!, viaSuffix: false };
    if (this.suffix.size === 0) return undefined;
    let dot = name.indexOf('.');
    while (dot >= 0) {
      const parent = name.slice(dot + 1);
      const s = this.suffix.get(parent);
      if (portAllowed(s, port)) return { host: parent, ports: s!, viaSuffix: true };
      dot = name.indexOf('.', dot + 1);
    }
    return undefined;
  }

  /** The decision for the first rule key that exists: its text and the options of every rule with that key. */
  private allowedBy(keys: readonly string[], fallback: string): Decision {
    for (const key of keys) {
      const text = this.ruleText.get(key);
      if (text === undefined) continue;
      const options = this.ruleOptions.get(key);
      return options !== undefined && options.size > 0 ? { allowed: true, rule: text, options } : { allowed: true, rule: text };
    }
    return { allowed: true, rule: fallback };
  }
}

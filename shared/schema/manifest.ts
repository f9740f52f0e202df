/**
 * The plugin manifest (`plugin.json`): what a plugin image runs and how it is networked.
 * Declared once as TypeBox schemas; the same objects validate files, type the code, and feed
 * the API's OpenAPI document.
 *
 * `network` is the canonical key. The guide also writes it `networking`; both are accepted and
 * normalised to `network` (giving both is an error, since they could disagree).
 */

import { type Static, Type } from '@sinclair/typebox';
import { Allowlist } from '../allowlist.js';
import type { Problem } from '../errors.js';
import { tryParseCidr, tryParseIPv4 } from '../ipv4.js';
import { PLUGIN_NAME_PATTERN } from '../names.js';
import { isPlainObject, structuralProblems, type Validated } from './validate.js';

export const NetworkMode = Type.Union([Type.Literal('vsock'), Type.Literal('bridged'), Type.Literal('dhcp')], {
  description: 'vsock: no network interface, reached over vsock only; bridged: a tap on the bridge with a leased address; dhcp: a tap, address from a DHCP server',
});
export type NetworkMode = Static<typeof NetworkMode>;

export const MAX_ALLOWED_DOMAINS = 10_000;

export const ProxySettings = Type.Object(
  {
    enabled: Type.Optional(Type.Boolean({ description: 'serve the ingress proxy to the workload (default true)' })),
    port: Type.Optional(Type.Integer({ minimum: 1, maximum: 65535, description: 'guest port of the workload behind the ingress proxy' })),
    allow_outbound: Type.Optional(Type.Boolean({ description: 'let the workload make outbound requests through the egress proxy (default false)' })),
    allowed_domains: Type.Optional(
      Type.Array(Type.String({ maxLength: 300 }), {
        maxItems: MAX_ALLOWED_DOMAINS,
        description: "destinations the workload may reach: 'example.com', '*.example.com', '.example.com', optional ':port'",
      }),
    ),
  },
  { additionalProperties: false },
);
export type ProxySettings = Static<typeof ProxySettings>;

export const NetworkSettings = Type.Object(
  {
    mode: Type.Optional(NetworkMode),
    subnet: Type.Optional(Type.String({ maxLength: 18, description: 'IPv4 CIDR, e.g. 192.168.127.0/24' })),
    gateway: Type.Optional(Type.String({ maxLength: 15, description: 'IPv4 address inside subnet' })),
    auto_assign: Type.Optional(Type.Boolean()),
    proxy: Type.Optional(ProxySettings),
  },
  { additionalProperties: false },
);
export type NetworkSettings = Static<typeof NetworkSettings>;

export const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]{0,127}$/;
export const EnvMap = Type.Record(Type.RegExp(ENV_NAME), Type.String({ maxLength: 32768 }), {
  additionalProperties: false,
  description: 'environment variables: names [A-Za-z_][A-Za-z0-9_]*, values up to 32 KiB',
});
export type EnvMap = Static<typeof EnvMap>;

export const RestartPolicy = Type.Union([Type.Literal('always'), Type.Literal('on-failure'), Type.Literal('exit')], {
  description: 'always (default): restart with backoff whenever it exits; on-failure: only on non-zero exit or signal; exit: power the VM off when it exits',
});
export type RestartPolicy = Static<typeof RestartPolicy>;

export const WorkloadHttp = Type.Object(
  {
    enabled: Type.Optional(Type.Boolean()),
    port: Type.Optional(Type.Integer({ minimum: 1, maximum: 65535 })),
    base_url: Type.Optional(Type.String({ maxLength: 2048, description: 'where the workload listens inside the guest, e.g. http://127.0.0.1:3000' })),
  },
  { additionalProperties: false },
);

export const Workload = Type.Object(
  {
    type: Type.Union([Type.Literal('http'), Type.Literal('exec')]),
    entrypoint: Type.Array(Type.String({ minLength: 1, maxLength: 4096 }), { minItems: 1, maxItems: 256 }),
    env: Type.Optional(EnvMap),
    workdir: Type.Optional(Type.String({ pattern: '^/', maxLength: 4096, description: 'absolute path inside the guest' })),
    http: Type.Optional(WorkloadHttp),
    restart: Type.Optional(RestartPolicy),
  },
  { additionalProperties: false },
);
export type Workload = Static<typeof Workload>;

export const HealthCheck = Type.Object(
  {
    endpoint: Type.String({ pattern: '^/', maxLength: 2048, description: 'path on the workload, e.g. /healthz' }),
    timeout_ms: Type.Optional(Type.Integer({ minimum: 1, maximum: 600_000 })),
  },
  { additionalProperties: false },
);

export const MAX_CPUS = 64;
export const MIN_MEMORY_MB = 64;
export const MAX_MEMORY_MB = 262_144;

export const Resources = Type.Object(
  {
    cpu_cores: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_CPUS })),
    memory_mb: Type.Optional(Type.Integer({ minimum: MIN_MEMORY_MB, maximum: MAX_MEMORY_MB })),
  },
  { additionalProperties: false },
);

/** How a built image is laid out and what it needs; `volar plugins build` writes it (docs/runtime-image.md). */
export const ImageInfo = Type.Object(
  {
    layout: Type.Union([Type.Literal('shared'), Type.Literal('single')]),
    /** `shared`: the runtime image the initramfs mounts, by content hash and format version, and what went into it besides the defaults. */
    runtime: Type.Optional(
      Type.Object(
        {
          hash: Type.String({ pattern: '^[0-9a-f]{64}$' }),
          version: Type.Integer({ minimum: 1 }),
          binaries: Type.Optional(Type.Array(Type.String({ minLength: 2, maxLength: 4095, pattern: '^/' }), { maxItems: 256 })),
          modules: Type.Optional(Type.Array(Type.String({ pattern: '^[A-Za-z0-9_-]{1,64}$' }), { maxItems: 1024 })),
        },
        { additionalProperties: false },
      ),
    ),
    /** The least guest memory this image boots and serves with. */
    min_memory_mb: Type.Integer({ minimum: MIN_MEMORY_MB, maximum: MAX_MEMORY_MB }),
  },
  { additionalProperties: false },
);
export type ImageInfo = Static<typeof ImageInfo>;

export const PluginManifest = Type.Object(
  {
    schema_version: Type.Optional(Type.String({ maxLength: 16 })),
    name: Type.String({ pattern: PLUGIN_NAME_PATTERN, description: '1-63 letters, digits, - or _' }),
    version: Type.String({ minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9][A-Za-z0-9.+_-]*$' }),
    description: Type.Optional(Type.String({ maxLength: 4096 })),
    runtime: Type.Optional(Type.String({ maxLength: 64 })),
    labels: Type.Optional(Type.Record(Type.String({ maxLength: 128 }), Type.String({ maxLength: 1024 }))),
    network: Type.Optional(NetworkSettings),
    workload: Workload,
    health_check: Type.Optional(HealthCheck),
    resources: Type.Optional(Resources),
    image: Type.Optional(ImageInfo),
  },
  { additionalProperties: false, $id: 'PluginManifest' },
);
export type PluginManifest = Static<typeof PluginManifest>;

/** Checks that need more than structure: addresses, subnets, rules, URLs. */
export function networkProblems(net: NetworkSettings | undefined, base: string): Problem[] {
  const problems: Problem[] = [];
  if (!net) return problems;
  const subnet = net.subnet === undefined ? undefined : tryParseCidr(net.subnet);
  if (net.subnet !== undefined && !subnet) problems.push({ path: `${base}/subnet`, message: `${JSON.stringify(net.subnet)} is not an IPv4 CIDR like 192.168.127.0/24` });
  if (subnet && subnet.prefix > 30) problems.push({ path: `${base}/subnet`, message: 'prefix longer than /30 leaves no room for guests' });
  if (net.gateway !== undefined) {
    const gw = tryParseIPv4(net.gateway);
    if (gw === undefined) problems.push({ path: `${base}/gateway`, message: `${JSON.stringify(net.gateway)} is not a dotted-quad IPv4 address` });
    else if (subnet && ((gw & subnet.mask) >>> 0 !== subnet.network || gw === subnet.network || gw === subnet.broadcast)) {
      problems.push({ path: `${base}/gateway`, message: `${net.gateway} is not a usable address inside ${net.subnet}` });
    }
  }
  const rules = net.proxy?.allowed_domains;
  if (Array.isArray(rules)) {
    for (const p of Allowlist.check(rules)) problems.push({ path: `${base}/proxy/allowed_domains/${p.index}`, message: p.message });
  }
  return problems;
}

function manifestProblems(m: PluginManifest): Problem[] {
  const problems = networkProblems(m.network, '/network');
  const base = m.workload.http?.base_url;
  if (base !== undefined) {
    let url: URL | undefined;
    try {
      url = new URL(base);
    } catch {
      url = undefined;
    }
    if (!url || url.protocol !== 'http:' || url.username || url.password || url.search || url.hash) {
      problems.push({ path: '/workload/http/base_url', message: `${JSON.stringify(base)} must be a plain http:// URL (no credentials, query or fragment)` });
    }
  }
  if (m.workload.type === 'http' && base === undefined && m.workload.http?.port === undefined && m.network?.proxy?.port === undefined) {
    problems.push({ path: '/workload/http', message: 'an http workload needs http.base_url or http.port so kestrel knows where to forward' });
  }
  return problems;
}

/** Moves the `networking` alias to `network`; reports giving both. */
export function normaliseNetworkAlias(input: Record<string, unknown>): { value: Record<string, unknown>; problems: Problem[] } {
  if (!('networking' in input)) return { value: input, problems: [] };
  const { networking, ...rest } = input;
  if ('network' in input) {
    return { value: rest, problems: [{ path: '/networking', message: "give either 'network' (canonical) or 'networking', not both" }] };
  }
  return { value: { ...rest, network: networking }, problems: [] };
}

export function validateManifest(input: unknown): Validated<PluginManifest> {
  if (!isPlainObject(input)) return { ok: false, problems: [{ path: '/', message: 'a plugin manifest must be a JSON object' }] };
  const { value, problems } = normaliseNetworkAlias(input);
  problems.push(...structuralProblems(PluginManifest, value));
  if (problems.length > 0) return { ok: false, problems };
  const m = value as PluginManifest;
  const semantic = manifestProblems(m);
  return semantic.length > 0 ? { ok: false, problems: semantic } : { ok: true, value: m };
}

/** Where kestrel forwards ingress: base_url, else http://127.0.0.1:<port>. */
export function workloadBaseUrl(m: PluginManifest): string | undefined {
  if (m.workload.http?.base_url) return m.workload.http.base_url.replace(/\/+$/, '');
  const port = m.workload.http?.port ?? m.network?.proxy?.port;
  return port === undefined ? undefined : `http://127.0.0.1:${port}`;
}

/**
 * Where kestrel's raw relay (AGENT_RELAY_PORT) pipes connections: the workload's host and port,
 * when its base URL has no path prefix. A prefix must be added to every request line, which
 * only the HTTP-aware path does, so such a workload has no relay and the host keeps using
 * kestrel's HTTP port for it. Guest and host ask this one function, so they agree.
 */
export function workloadRelayTarget(m: PluginManifest): { host: string; port: number } | undefined {
  const base = workloadBaseUrl(m);
  if (base === undefined) return undefined;
  const url = new URL(base);
  if (url.pathname !== '/' && url.pathname !== '') return undefined;
  return { host: url.hostname.replace(/^\[(.*)\]$/, '$1'), port: Number(url.port || 80) };
}

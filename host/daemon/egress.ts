/**
 * Per-VM egress listeners (the orchestrator's `EgressStarter`): one `startEgressProxy` per VM that
 * allows outbound traffic, so the policy of a listener is exactly that VM's allowlist.
 *  - vsock VMs: the guest connects to (CID 2, 3128); the VMM carries that to `<vsock socket>_3128`.
 *  - bridged/dhcp VMs: a TCP listener on the bridge address with a kernel-chosen port, passed to
 *    kestrel as `volant.egress=tcp:<gw>:<port>`; a bridged VM is accepted only from its own address.
 */

import { formatIPv4, type Cidr } from '../../shared/ipv4.js';
import { EGRESS_VSOCK_PORT, guestInitiatedSocketPath } from '../../shared/vsock.js';
import type { VolantConfig } from '../config/schema.js';
import type { EgressMetrics } from '../egress/metrics.js';
import { startEgressProxy } from '../egress/proxy.js';
import type { EgressHandle, EgressStarter } from '../orchestrator/ports.js';

/**
 * Merges the Prometheus text of several per-VM proxies into one exposition: each family's HELP and
 * TYPE once, then every proxy's samples (they are labelled by VM, so they never collide).
 */
export function mergeExpositions(texts: string[]): string {
  const head = new Map<string, string[]>();
  const samples = new Map<string, string[]>();
  for (const text of texts) {
    let family = '';
    for (const line of text.split('\n')) {
      if (line === '') continue;
      const meta = /^# (HELP|TYPE) (\S+)/.exec(line);
      if (meta) {
        family = meta[2]!;
        if (!head.has(family)) head.set(family, []);
        const h = head.get(family)!;
        if (h.length < 2 && !h.some((x) => x.startsWith(`# ${meta[1]} `))) h.push(line);
        if (!samples.has(family)) samples.set(family, []);
        continue;
      }
      samples.get(family)?.push(line);
    }
  }
  let out = '';
  for (const [family, lines] of head) out += `${[...lines, ...(samples.get(family) ?? [])].join('\n')}\n`;
  return out;
}

export interface EgressStarterWithMetrics {
  start: EgressStarter;
  /** Prometheus text of every live per-VM proxy. */
  renderMetrics(): string;
}

export function createEgressStarter(cfg: Pick<VolantConfig, 'egress'>, hostCidr: Cidr, log: (line: string) => void): EgressStarterWithMetrics {
  const gateway = formatIPv4(hostCidr.address);
  const live = new Set<{ metrics: EgressMetrics }>();
  const start: EgressStarter = async (vm): Promise<EgressHandle> => {
    const viaVsock = vm.mode === 'vsock';
    const policy = { vmName: vm.name, allowedDomains: vm.allowedDomains };
    const proxy = await startEgressProxy({
      listen: viaVsock ? { path: guestInitiatedSocketPath(vm.vsockSocketPath, EGRESS_VSOCK_PORT) } : { host: gateway, port: 0 },
      policyFor: (peer) => (viaVsock || vm.mode === 'dhcp' || peer.remoteAddress === vm.ip || peer.remoteAddress === `::ffff:${vm.ip}` ? policy : undefined),
      resolver: cfg.egress.dns_servers.length > 0 ? { servers: cfg.egress.dns_servers } : undefined,
      allowPrivate: cfg.egress.allow_private,
      deniedAddresses: [gateway],
      upgradeToHttps: cfg.egress.upgrade_to_https,
      connectTimeoutMs: cfg.egress.connect_timeout_ms,
      dnsTimeoutMs: cfg.egress.dns_timeout_ms,
      maxTunnelsPerVm: cfg.egress.max_tunnels_per_vm,
      requestsPerSecondPerVm: cfg.egress.requests_per_second_per_vm,
      audit: (r) => log(`egress ${JSON.stringify(r)}`),
    });
    const a = proxy.address;
    const route = 'path' in a ? ({ kind: 'vsock' } as const) : ({ kind: 'tcp', host: gateway, port: a.port } as const);
    live.add(proxy);
    return {
      route,
      close: async () => {
        live.delete(proxy);
        await proxy.close();
      },
    };
  };
  return { start, renderMetrics: () => mergeExpositions([...live].map((p) => p.metrics.render())) };
}

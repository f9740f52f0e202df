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
import { startEgressProxy } from '../egress/proxy.js';
import type { EgressHandle, EgressStarter } from '../orchestrator/ports.js';

export function createEgressStarter(cfg: Pick<VolantConfig, 'egress'>, hostCidr: Cidr, log: (line: string) => void): EgressStarter {
  const gateway = formatIPv4(hostCidr.address);
  return async (vm): Promise<EgressHandle> => {
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
    return { route, close: () => proxy.close() };
  };
}

/**
 * Per-VM egress listeners (the orchestrator's `EgressStarter`): one `startEgressProxy` per VM that
 * allows outbound traffic, so the policy of a listener is exactly that VM's allowlist. Route and
 * peers are the network policy's:
 *  - hybrid vsock: the guest connects to (CID 2, 3128); the VMM carries that to the VM's own
 *    `<vsock socket>_3128`, so whoever arrives there is that VM;
 *  - TCP: a listener on the bridge address with a kernel-chosen port, passed to kestrel as
 *    `volant.egress=tcp:<gw>:<port>`. It serves a peer only when the peer's address is the VM's
 *    (IPAM or Volant's DHCP lease, read at each connection) and the bridge's neighbour table holds
 *    the VM's MAC for it; where no lease is known (a DHCP server Volant does not run), the MAC
 *    alone. Anyone else gets 403 `no-policy`.
 * Every listener refuses to dial the host itself: all addresses of all interfaces (read when the
 * listener starts) and the loopback / "this host" ranges, whatever `egress.allow_private` says.
 * Every listener shares one `EgressLimits`: the overall concurrency limit is host-wide, and each
 * VM's rate and tunnel budget is keyed by its name.
 */

import { readFileSync } from 'node:fs';
import { networkInterfaces } from 'node:os';
import { formatIPv4, type Cidr } from '../../shared/ipv4.js';
import { egressServesPeer } from '../../shared/network-policy.js';
import { EGRESS_VSOCK_PORT, guestInitiatedSocketPath } from '../../shared/vsock.js';
import type { VolantConfig } from '../config/schema.js';
import { hostDeniedAddresses } from '../egress/address-policy.js';
import type { AuditRecord } from '../egress/audit.js';
import { EgressLimits } from '../egress/limits.js';
import type { EgressMetrics } from '../egress/metrics.js';
import { startEgressProxy } from '../egress/proxy.js';
import type { Logger } from '../log/logger.js';
import { macForAddress, parseProcNetArp } from '../network/neighbours.js';
import type { EgressHandle, EgressStarter } from '../orchestrator/ports.js';

/** Every address of every interface of this host (its network namespace), as Node sees them now. */
export function hostInterfaceAddresses(): string[] {
  return Object.values(networkInterfaces())
    .flat()
    .flatMap((a) => (a ? [a.address] : []));
}

/** The MAC the kernel's neighbour table holds for `address` on `bridge` (a synchronous read of /proc/net/arp). */
export function neighbourMac(bridge: string, address: string): string | undefined {
  try {
    return macForAddress(parseProcNetArp(readFileSync('/proc/net/arp', 'utf8'), bridge), address);
  } catch {
    return undefined;
  }
}

export interface EgressWiring {
  bridge: string;
  /** Test seams; default: this host's interfaces and neighbour table. */
  interfaceAddresses?: () => string[];
  macOf?: (address: string) => string | undefined;
}

/** Where the listeners report: decisions to `audit` (one record each) and `metrics`, anything else to `log`. */
export interface EgressObservers {
  log?: Logger;
  audit?: (record: AuditRecord) => void;
  /** The families every VM's listener counts into (volantd's registry); default: each listener its own. */
  metrics?: EgressMetrics;
}

export interface DaemonEgress {
  start: EgressStarter;
  /** The one limiter every VM's listener shares. */
  limits: EgressLimits;
}

export function createEgressStarter(cfg: Pick<VolantConfig, 'egress'>, hostCidr: Cidr, wiring: EgressWiring, observers: EgressObservers = {}): DaemonEgress {
  const gateway = formatIPv4(hostCidr.address);
  const interfaceAddresses = wiring.interfaceAddresses ?? hostInterfaceAddresses;
  const macOf = wiring.macOf ?? ((address: string) => neighbourMac(wiring.bridge, address));
  const limits = new EgressLimits({ maxTunnelsPerVm: cfg.egress.max_tunnels_per_vm, requestsPerSecondPerVm: cfg.egress.requests_per_second_per_vm });
  const start: EgressStarter = async (vm): Promise<EgressHandle> => {
    const viaVsock = vm.egress.route.via === 'hybrid-vsock';
    const peers = vm.egress.peers;
    const policy = { vmName: vm.name, allowedDomains: vm.egress.allowedDomains };
    const proxy = await startEgressProxy({
      listen: viaVsock ? { path: guestInitiatedSocketPath(vm.vsockSocketPath, EGRESS_VSOCK_PORT) } : { host: gateway, port: vm.port ?? 0 },
      policyFor: (peer) => {
        const address = peer.remoteAddress?.replace(/^::ffff:/, '');
        const mac = peers.kind === 'vm-socket' || address === undefined ? undefined : macOf(address);
        return egressServesPeer(peers, { address, mac }, vm.guest()) ? policy : undefined;
      },
      resolver: cfg.egress.dns_servers.length > 0 ? { servers: cfg.egress.dns_servers } : undefined,
      allowPrivate: cfg.egress.allow_private,
      deniedAddresses: hostDeniedAddresses([gateway, ...interfaceAddresses()]),
      upgradeToHttps: cfg.egress.upgrade_to_https,
      connectTimeoutMs: cfg.egress.connect_timeout_ms,
      dnsTimeoutMs: cfg.egress.dns_timeout_ms,
      limits,
      audit: observers.audit,
      log: observers.log?.child({ vm: vm.name }),
      metrics: observers.metrics,
    });
    const a = proxy.address;
    const route = 'path' in a ? ({ kind: 'vsock' } as const) : ({ kind: 'tcp', host: gateway, port: a.port } as const);
    return { route, close: () => proxy.close() };
  };
  return { start, limits };
}

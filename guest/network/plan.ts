/**
 * Step 4 of boot, the decision half: BootConfig → NetworkPlan, a list of steps that apply.ts
 * carries out in order. Pure, so the table tests pin exactly what each mode does:
 *
 *   every mode  lo up, hostname, /etc/hosts naming it
 *   bridged     eth0 up, address/prefix, default route via the gateway, /etc/resolv.conf
 *   dhcp        eth0 up, then a DHCP client whose script applies the lease (dhcp-script.ts)
 *   vsock       nothing but lo: the VM has no network interface
 *
 * /etc/resolv.conf is written only when there is something to put in it (static DNS); in dhcp
 * mode the lease's DNS is used unless `volant.dns` was given.
 */

import type { BootConfig } from '../boot/cmdline.js';

export const ETH0 = 'eth0';

export type NetworkStep =
  | { op: 'link-up'; device: string }
  | { op: 'address'; device: string; address: string; prefix: number }
  | { op: 'default-route'; gateway: string; device: string }
  | { op: 'hostname'; name: string }
  | { op: 'write-file'; path: string; content: string }
  | { op: 'dhcp'; device: string; hostname: string; dns: string[] };

export interface NetworkPlan {
  steps: NetworkStep[];
  /** What /healthz reports for eth0 when the plan is static (dhcp fills it in once leased). */
  eth0: { address: string; prefix: number; gateway: string | null } | null;
}

export function hostsFile(hostname: string, address?: string): string {
  const short = hostname.split('.')[0]!;
  const names = short === hostname ? hostname : `${hostname} ${short}`;
  const lines = ['127.0.0.1\tlocalhost', '::1\tlocalhost ip6-localhost ip6-loopback', address ? `${address}\t${names}` : `127.0.1.1\t${names}`];
  return `${lines.join('\n')}\n`;
}

export function resolvConf(servers: string[]): string {
  return `${servers.map((s) => `nameserver ${s}`).join('\n')}\n`;
}

export function planNetwork(config: Pick<BootConfig, 'mode' | 'ip' | 'hostname' | 'dns'>): NetworkPlan {
  const steps: NetworkStep[] = [
    { op: 'link-up', device: 'lo' },
    { op: 'hostname', name: config.hostname },
  ];
  let eth0: NetworkPlan['eth0'] = null;
  if (config.mode === 'bridged') {
    if (!config.ip) throw new Error('bridged plan without ip= settings (bootConfigFromCmdline guarantees them)');
    const device = config.ip.device ?? ETH0;
    steps.push({ op: 'link-up', device }, { op: 'address', device, address: config.ip.client, prefix: config.ip.prefix });
    if (config.ip.gateway) steps.push({ op: 'default-route', gateway: config.ip.gateway, device });
    eth0 = { address: config.ip.client, prefix: config.ip.prefix, gateway: config.ip.gateway ?? null };
    steps.push({ op: 'write-file', path: '/etc/hosts', content: hostsFile(config.hostname, config.ip.client) });
    if (config.dns.length > 0) steps.push({ op: 'write-file', path: '/etc/resolv.conf', content: resolvConf(config.dns) });
    return { steps, eth0 };
  }
  steps.push({ op: 'write-file', path: '/etc/hosts', content: hostsFile(config.hostname) });
  if (config.mode === 'dhcp') {
    steps.push({ op: 'link-up', device: ETH0 }, { op: 'dhcp', device: ETH0, hostname: config.hostname, dns: config.dns });
    if (config.dns.length > 0) steps.push({ op: 'write-file', path: '/etc/resolv.conf', content: resolvConf(config.dns) });
  }
  return { steps, eth0 };
}

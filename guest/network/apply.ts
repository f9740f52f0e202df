/**
 * Step 4 of boot, the side-effect half: carries out a NetworkPlan with the native addon
 * (links, addresses, routes, hostname) and files. DHCP runs busybox `udhcpc` in the
 * foreground with our script; a DHCP failure is reported but does not stop the boot, because
 * the agent stays reachable over vsock and /healthz says eth0 has no address.
 *
 * Once leased, kestrel announces itself with one UDP datagram to the gateway's discard port:
 * the ARP request that precedes it is what lets the host find this guest's address by MAC in
 * the bridge's neighbour table (host/network/neighbours.ts), since only the DHCP server knows it.
 */

import { createSocket } from 'node:dgram';
import { spawnTracked } from '../children.js';
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { addDefaultRoute, interfaceUp, setInterfaceAddress, sethostname } from '../../native/index.js';
import { say } from '../console.js';
import { DHCP_LEASE_PATH, DHCP_SCRIPT_PATH, type DhcpLease, dhcpScript, parseLeaseFile, udhcpcArgs } from './dhcp-script.js';
import type { NetworkPlan, NetworkStep } from './plan.js';

export const DHCP_TIMEOUT_MS = 30_000;
/** The discard service (RFC 863): nothing needs to listen there for the announcement to work. */
export const ANNOUNCE_PORT = 9;
export const ANNOUNCE_PAYLOAD = 'volant kestrel leased\n';

/** Sends the announcement datagram; failures are reported on the console, never thrown. */
export function announceLease(gateway: string): Promise<void> {
  return new Promise((resolve) => {
    const socket = createSocket('udp4');
    let finished = false;
    const finish = (e?: Error | null) => {
      if (finished) return;
      finished = true;
      if (e) say(`dhcp: announcing to ${gateway}: ${e.message}`);
      socket.close();
      resolve();
    };
    socket.once('error', finish);
    socket.send(ANNOUNCE_PAYLOAD, ANNOUNCE_PORT, gateway, finish);
  });
}

function writeFile(path: string, content: string): void {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, content);
}

function runDhcp(step: Extract<NetworkStep, { op: 'dhcp' }>): Promise<DhcpLease | null> {
  writeFile(DHCP_SCRIPT_PATH, dhcpScript({ leasePath: DHCP_LEASE_PATH, resolvConfPath: '/etc/resolv.conf', writeResolvConf: step.dns.length === 0 }));
  chmodSync(DHCP_SCRIPT_PATH, 0o755);
  const args = udhcpcArgs({ device: step.device, hostname: step.hostname, scriptPath: DHCP_SCRIPT_PATH });
  return new Promise((resolve) => {
    const child = spawnTracked('udhcpc', args, { stdio: ['ignore', 'inherit', 'inherit'], timeout: DHCP_TIMEOUT_MS });
    child.once('error', (e) => {
      say(`dhcp: cannot run udhcpc: ${e.message}`);
      resolve(null);
    });
    child.once('exit', (code, signal) => {
      let lease: DhcpLease | undefined;
      try {
        lease = parseLeaseFile(readFileSync(DHCP_LEASE_PATH, 'utf8'));
      } catch {
        lease = undefined;
      }
      if (!lease) say(`dhcp: no lease on ${step.device} (udhcpc exited ${signal ?? code})`);
      else say(`dhcp: ${step.device} ${lease.address}/${lease.prefix} via ${lease.gateway ?? 'no gateway'}`);
      if (lease?.gateway) void announceLease(lease.gateway).then(() => resolve(lease));
      else resolve(lease ?? null);
    });
  });
}

/** Applies the plan in order; returns eth0's settings as configured (static or leased). */
export async function applyNetworkPlan(plan: NetworkPlan): Promise<NetworkPlan['eth0']> {
  let eth0 = plan.eth0;
  for (const step of plan.steps) {
    switch (step.op) {
      case 'link-up':
        interfaceUp(step.device);
        break;
      case 'address':
        setInterfaceAddress(step.device, step.address, step.prefix);
        break;
      case 'default-route':
        addDefaultRoute(step.gateway, step.device);
        break;
      case 'hostname':
        sethostname(step.name);
        break;
      case 'write-file':
        writeFile(step.path, step.content);
        break;
      case 'dhcp':
        eth0 = await runDhcp(step);
        break;
    }
  }
  return eth0;
}

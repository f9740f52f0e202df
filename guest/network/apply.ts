/**
 * Step 4 of boot, the side-effect half: carries out a NetworkPlan with the native addon
 * (links, addresses, routes, hostname) and files. DHCP runs busybox `udhcpc` with our script
 * for the life of the VM, so the lease stays renewed; boot waits for the first lease only. A
 * DHCP failure is reported but does not stop the boot, because the agent stays reachable over
 * vsock and /healthz says eth0 has no address.
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
/** How often the first lease is looked for while udhcpc negotiates. */
export const LEASE_POLL_MS = 100;
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

function readLease(): DhcpLease | undefined {
  try {
    return parseLeaseFile(readFileSync(DHCP_LEASE_PATH, 'utf8'));
  } catch {
    return undefined;
  }
}

/**
 * Starts udhcpc for the life of the VM (it keeps the lease renewed) and resolves with the first
 * lease, or null when udhcpc gives up (-n) or none comes within DHCP_TIMEOUT_MS.
 */
function runDhcp(step: Extract<NetworkStep, { op: 'dhcp' }>): Promise<DhcpLease | null> {
  writeFile(DHCP_SCRIPT_PATH, dhcpScript({ leasePath: DHCP_LEASE_PATH, resolvConfPath: '/etc/resolv.conf', writeResolvConf: step.dns.length === 0 }));
  chmodSync(DHCP_SCRIPT_PATH, 0o755);
  const args = udhcpcArgs({ device: step.device, hostname: step.hostname, scriptPath: DHCP_SCRIPT_PATH });
  return new Promise((resolve) => {
    let settled = false;
    const settle = (lease: DhcpLease | null): void => {
      if (settled) return;
      settled = true;
      clearInterval(poll);
      clearTimeout(timer);
      if (!lease) {
        resolve(null);
        return;
      }
      say(`dhcp: ${step.device} ${lease.address}/${lease.prefix} via ${lease.gateway ?? 'no gateway'}`);
      if (lease.gateway) void announceLease(lease.gateway).then(() => resolve(lease));
      else resolve(lease);
    };
    const poll = setInterval(() => {
      const lease = readLease();
      if (lease) settle(lease);
    }, LEASE_POLL_MS);
    const timer = setTimeout(() => {
      say(`dhcp: no lease on ${step.device} within ${DHCP_TIMEOUT_MS} ms (udhcpc keeps trying)`);
      settle(null);
    }, DHCP_TIMEOUT_MS);
    const child = spawnTracked('udhcpc', args, { stdio: ['ignore', 'inherit', 'inherit'] });
    child.once('error', (e) => {
      say(`dhcp: cannot run udhcpc: ${e.message}`);
      settle(null);
    });
    child.once('exit', (code, signal) => {
      if (settled) say(`dhcp: udhcpc exited (${signal ?? code}); the lease on ${step.device} is no longer renewed`);
      else {
        say(`dhcp: no lease on ${step.device} (udhcpc exited ${signal ?? code})`);
        settle(readLease() ?? null);
      }
    });
  });
}

/**
 * Applies the plan in order; returns how to read eth0's settings: static ones as configured, a
 * DHCP lease as it is now (udhcpc renews it and may move it, which rewrites the lease file).
 */
export async function applyNetworkPlan(plan: NetworkPlan): Promise<() => NetworkPlan['eth0']> {
  let eth0 = plan.eth0;
  let dhcp = false;
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
        dhcp = true;
        eth0 = await runDhcp(step);
        break;
    }
  }
  const fixed = eth0;
  return dhcp ? () => readLease() ?? null : () => fixed;
}

/**
 * The script busybox `udhcpc` runs for each DHCP event. udhcpc hands the lease over in
 * environment variables (`interface`, `ip`, `mask` as a prefix length, `router`, `dns`); the
 * script applies it with busybox `ip` and writes it to a lease file that kestrel reads back for
 * /healthz (on every bound and renew; a deconfig removes it). The text is generated here (pure)
 * so tests can run it against a real interface.
 *
 * `writeResolvConf` is false when `volant.dns` fixed the resolvers: the lease must not undo that.
 */

export const DHCP_SCRIPT_PATH = '/run/volant/udhcpc.sh';
/** udhcpc: send this many discovers, this many seconds apart, then give up (-n). */
export const DHCP_DISCOVER_TRIES = 5;
export const DHCP_DISCOVER_INTERVAL_S = 2;
export const DHCP_LEASE_PATH = '/run/volant/dhcp.lease';

const shellQuote = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;

export function dhcpScript(opts: { leasePath: string; resolvConfPath: string; writeResolvConf: boolean }): string {
  const resolv = opts.writeResolvConf
    ? `    if [ -n "$dns" ]; then
      : > ${shellQuote(opts.resolvConfPath)}
      for d in $dns; do echo "nameserver $d" >> ${shellQuote(opts.resolvConfPath)}; done
    fi
`
    : '';
  return `#!/bin/sh
# Written by kestrel: applies a udhcpc lease with busybox ip (see guest/network/dhcp-script.ts).
case "$1" in
  deconfig)
    ip -4 addr flush dev "$interface"
    ip link set dev "$interface" up
    rm -f ${shellQuote(opts.leasePath)}
    ;;
  bound|renew)
    ip -4 addr flush dev "$interface"
    ip addr add "$ip/\${mask:-24}" dev "$interface" || exit 1
    gw=""
    for r in $router; do gw="$r"; break; done
    if [ -n "$gw" ]; then ip route replace default via "$gw" dev "$interface" || exit 1; fi
${resolv}    printf 'address=%s\\nprefix=%s\\ngateway=%s\\n' "$ip" "\${mask:-24}" "$gw" > ${shellQuote(opts.leasePath)}
    ;;
  leasefail|nak)
    echo "kestrel: dhcp: $1 on $interface" >&2
    ;;
esac
exit 0
`;
}

/**
 * busybox udhcpc in the foreground (-f) for the life of the VM: it renews the lease (and takes a
 * new one after a NAK), running the script each time; it gives up only when no first lease comes
 * (-n). The host binds the VM to its lease, so a lease that lapsed would cut the VM off.
 */
export function udhcpcArgs(opts: { device: string; hostname: string; scriptPath: string; tries?: number; intervalS?: number }): string[] {
  return [
    '-i', opts.device,
    '-f', '-n',
    '-t', String(opts.tries ?? DHCP_DISCOVER_TRIES),
    '-T', String(opts.intervalS ?? DHCP_DISCOVER_INTERVAL_S),
    '-x', `hostname:${opts.hostname}`,
    '-s', opts.scriptPath,
  ];
}

export interface DhcpLease {
  address: string;
  prefix: number;
  gateway: string | null;
}

/** Reads the lease file the script wrote; undefined when it holds no usable lease. */
export function parseLeaseFile(text: string): DhcpLease | undefined {
  const fields = new Map<string, string>();
  for (const line of text.split('\n')) {
    const eq = line.indexOf('=');
    if (eq > 0) fields.set(line.slice(0, eq), line.slice(eq + 1));
  }
  const address = fields.get('address');
  const prefix = Number(fields.get('prefix'));
  if (!address || !Number.isInteger(prefix) || prefix < 0 || prefix > 32) return undefined;
  return { address, prefix, gateway: fields.get('gateway') || null };
}

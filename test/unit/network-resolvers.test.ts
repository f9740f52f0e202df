/** Guests' default DNS resolvers from the host's resolv.conf files (host/network/resolvers.ts). */

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { guestResolvers, nameservers, PUBLIC_RESOLVERS, RESOLVED_UPSTREAM_CONF, RESOLV_CONF } from '../../host/network/resolvers.js';

describe('guest resolvers', () => {
  test('nameserver lines: IPv4 only, in order, once each; comments and options ignored', () => {
    assert.deepEqual(nameservers('# x\nsearch lan\nnameserver 10.0.0.2\nnameserver fe80::1\n nameserver 10.0.0.3 \nnameserver 10.0.0.2\noptions edns0\n'), ['10.0.0.2', '10.0.0.3']);
  });
  const cases: { name: string; resolvConf?: string; resolvedUpstream?: string; servers: readonly string[]; source: string | RegExp }[] = [
    { name: 'the host resolvers a guest can reach', resolvConf: 'nameserver 192.168.1.1\nnameserver 9.9.9.9\n', servers: ['192.168.1.1', '9.9.9.9'], source: RESOLV_CONF },
    { name: 'at most three', resolvConf: 'nameserver 1.0.0.1\nnameserver 1.0.0.2\nnameserver 1.0.0.3\nnameserver 1.0.0.4\n', servers: ['1.0.0.1', '1.0.0.2', '1.0.0.3'], source: RESOLV_CONF },
    { name: "systemd-resolved's stub: its upstreams", resolvConf: 'nameserver 127.0.0.53\n', resolvedUpstream: 'nameserver 10.1.1.1\n', servers: ['10.1.1.1'], source: RESOLVED_UPSTREAM_CONF },
    { name: 'a local stub with no upstream list: public resolvers', resolvConf: 'nameserver 127.0.0.1\n', servers: PUBLIC_RESOLVERS, source: /public/ },
    { name: 'loopback entries are dropped, the rest kept', resolvConf: 'nameserver 127.0.0.53\nnameserver 10.2.2.2\n', servers: ['10.2.2.2'], source: RESOLV_CONF },
    { name: 'no resolv.conf at all: public resolvers', servers: PUBLIC_RESOLVERS, source: /public/ },
    { name: 'IPv6-only host: public resolvers', resolvConf: 'nameserver 2001:db8::1\n', servers: PUBLIC_RESOLVERS, source: /public/ },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const r = guestResolvers({ resolvConf: c.resolvConf, resolvedUpstream: c.resolvedUpstream });
      assert.deepEqual(r.servers, [...c.servers]);
      if (typeof c.source === 'string') assert.equal(r.source, c.source);
      else assert.match(r.source, c.source);
    });
  }
});

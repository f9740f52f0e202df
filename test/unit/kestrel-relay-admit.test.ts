/** Who may use kestrel's raw relay (guest/server/relay.ts `relayAdmits`, docs/agent.md). */

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { relayAdmits } from '../../guest/server/relay.js';

describe('relayAdmits', () => {
  it("admits the host's bridge address on TCP, plain or IPv4-mapped, and nobody else", () => {
    assert.equal(relayAdmits('192.168.127.1', '192.168.127.1'), true);
    assert.equal(relayAdmits('::ffff:192.168.127.1', '192.168.127.1'), true);
    assert.equal(relayAdmits('192.168.127.101', '192.168.127.1'), false, 'another VM on the bridge');
    assert.equal(relayAdmits('10.0.0.1', '192.168.127.1'), false);
    assert.equal(relayAdmits('192.168.127.1', undefined), false, 'no known host address: no TCP peer');
  });

  it('admits a peer without an address (vsock: only the host reaches a guest port from outside)', () => {
    assert.equal(relayAdmits(undefined, undefined), true);
    assert.equal(relayAdmits(undefined, '192.168.127.1'), true);
  });
});

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AGENT_VSOCK_PORT, encodeConnect } from '../../shared/index.js';

test('the agent port handshake is CONNECT 8080', () => {
  assert.equal(encodeConnect(AGENT_VSOCK_PORT).toString(), 'CONNECT 8080\n');
});

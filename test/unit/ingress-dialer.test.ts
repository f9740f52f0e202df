/** The one agent dialer's AF_VSOCK branch, driven by a stand-in connect (no AF_VSOCK socket is opened here). */

import assert from 'node:assert/strict';
import { Socket } from 'node:net';
import { describe, it } from 'node:test';
import { agentPort, describeTransport, dialAgent, ingressUpstreamPort, transportKey } from '../../host/ingress/dialer.js';
import { isVolantError } from '../../shared/errors.js';

describe('AF_VSOCK transport', () => {
  it('keys and names it by CID', () => {
    assert.equal(transportKey({ kind: 'af-vsock', cid: 7 }), 'af-vsock:7');
    assert.equal(describeTransport({ kind: 'af-vsock', cid: 7 }), 'AF_VSOCK CID 7 port 8080');
    assert.notEqual(transportKey({ kind: 'af-vsock', cid: 7 }), transportKey({ kind: 'af-vsock', cid: 8 }));
  });

  it('dials (CID, 8080) through the connect it is given', async () => {
    const seen: [number, number][] = [];
    const sock = new Socket();
    const got = await dialAgent({ kind: 'af-vsock', cid: 42 }, 1000, async (cid, port) => {
      seen.push([cid, port]);
      return sock;
    });
    assert.equal(got, sock);
    assert.deepEqual(seen, [[42, 8080]]);
  });

  it('a refused connect is UPSTREAM_UNREACHABLE naming the CID; a slow one is TIMEOUT and its late socket is destroyed', async () => {
    await assert.rejects(
      dialAgent({ kind: 'af-vsock', cid: 3 }, 1000, () => Promise.reject(Object.assign(new Error('connect ECONNRESET'), { code: 'ECONNRESET' }))),
      (e: unknown) => isVolantError(e) && e.code === 'UPSTREAM_UNREACHABLE' && /CID 3 port 8080: ECONNRESET/.test(e.message),
    );
    const late = new Socket();
    let release!: (s: Socket) => void;
    const pending = new Promise<Socket>((r) => {
      release = r;
    });
    await assert.rejects(dialAgent({ kind: 'af-vsock', cid: 3 }, 20, () => pending), (e: unknown) => isVolantError(e) && e.code === 'TIMEOUT');
    release(late);
    await pending;
    await new Promise((r) => setImmediate(r));
    assert.equal(late.destroyed, true);
  });
});

describe('the port the ingress dials', () => {
  it('is the raw relay (8081) where kestrel runs one, else the agent port of the transport', () => {
    assert.equal(ingressUpstreamPort({ kind: 'vsock', socketPath: '/run/v/vsock.sock', relay: true }, '/hello?x=1'), 8081);
    assert.equal(ingressUpstreamPort({ kind: 'af-vsock', cid: 5, relay: true }, '/'), 8081);
    assert.equal(ingressUpstreamPort({ kind: 'tcp', host: '10.0.0.2', port: 8080, relay: true }, '/healthzz'), 8081);
    assert.equal(ingressUpstreamPort({ kind: 'vsock', socketPath: '/run/v/vsock.sock' }, '/hello'), 8080);
    assert.equal(ingressUpstreamPort({ kind: 'tcp', host: '10.0.0.2', port: 9000, relay: false }, '/hello'), 9000);
    // kestrel's own paths stay kestrel's, whichever port serves the rest.
    for (const path of ['/healthz', '/healthz?verbose=1', '/v1/logs', '/v1/logs?follow=1']) {
      assert.equal(ingressUpstreamPort({ kind: 'vsock', socketPath: '/s', relay: true }, path), 8080, path);
    }
    assert.equal(agentPort({ kind: 'tcp', host: '10.0.0.2', port: 8080, relay: true }), 8080, "kestrel's API stays on its HTTP port");
  });

  it('a transport with and without the relay are different pools; errors name the port dialled', async () => {
    assert.notEqual(transportKey({ kind: 'af-vsock', cid: 7, relay: true }), transportKey({ kind: 'af-vsock', cid: 7 }));
    assert.equal(describeTransport({ kind: 'vsock', socketPath: '/s', relay: true }, 8081), 'hybrid vsock /s port 8081');
    const seen: number[] = [];
    await dialAgent({ kind: 'af-vsock', cid: 9, relay: true }, 1000, async (_cid, port) => {
      seen.push(port);
      return new Socket();
    }, 8081);
    assert.deepEqual(seen, [8081]);
    await assert.rejects(
      dialAgent({ kind: 'af-vsock', cid: 9 }, 1000, () => Promise.reject(Object.assign(new Error('x'), { code: 'ECONNRESET' })), 8081),
      (e: unknown) => isVolantError(e) && /CID 9 port 8081: ECONNRESET/.test(e.message),
    );
  });
});

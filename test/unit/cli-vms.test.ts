/** volar's pure pieces: create-request building, --env parsing, tables. */

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { VolantError } from '../../shared/errors.js';
import { ApiClient, apiSocketPath, chooseApi, formatTable } from '../../host/cli/client.js';
import { createRequest, formatVmTable, parseEnvPairs } from '../../host/cli/commands/vms.js';

describe('volar vms create request', () => {
  it('maps flags to the API body', () => {
    assert.deepEqual(createRequest('web', { plugin: 'p', network: 'bridged', ip: '192.168.127.120', cpus: '2', memory: '512', env: ['A=1', 'B=x=y', 'C='] }), {
      name: 'web',
      plugin: 'p',
      network: { mode: 'bridged' },
      ip: '192.168.127.120',
      cpus: 2,
      memory_mb: 512,
      env: { A: '1', B: 'x=y', C: '' },
    });
    assert.deepEqual(createRequest('web', { plugin: 'p' }), { name: 'web', plugin: 'p' });
  });
  it('passes non-numeric sizes through so the API names the field', () => {
    assert.equal(createRequest('w', { plugin: 'p', cpus: '2.5' }).cpus as unknown, '2.5');
  });
  it('refuses a bad --network and --env without a name', () => {
    assert.throws(() => createRequest('w', { plugin: 'p', network: 'wifi' }), /--network "wifi": use bridged, dhcp, vsock/);
    for (const bad of ['A', '=v', '']) assert.throws(() => parseEnvPairs([bad]), (e: unknown) => e instanceof VolantError && e.code === 'INVALID_ARGUMENT');
  });
});

describe('tables', () => {
  it('aligns columns and leaves the last unpadded', () => {
    assert.equal(formatTable(['A', 'BB'], [['xxx', 'y'], ['z', 'longer']]), 'A    BB\nxxx  y\nz    longer');
    assert.equal(formatVmTable([]), 'no VMs');
  });
});

describe('ApiClient address', () => {
  it('accepts http and unix:, refuses others', () => {
    assert.equal(new ApiClient({ api: 'http://127.0.0.1:9', stateDir: '/nonexistent' }).api, 'http://127.0.0.1:9');
    assert.equal(new ApiClient({ api: 'unix:/run/volant/api.sock', stateDir: '/nonexistent' }).api, 'unix:/run/volant/api.sock');
    assert.throws(() => new ApiClient({ api: 'ftp://x', stateDir: '/nonexistent' }), /use http:\/\/HOST:PORT or unix:\/path/);
    assert.throws(() => new ApiClient({ api: 'not a url', stateDir: '/nonexistent' }), /use http:\/\/HOST:PORT or unix:\/path/);
  });
});

describe('how volar reaches volantd', () => {
  const there = (path: string) => (p: string) => p === path;
  const nothing = () => false;
  it('explicit --api wins; else the Unix socket when it is there (no token); else loopback TCP', () => {
    assert.equal(chooseApi({ api: 'http://10.0.0.1:8080' }, () => true), 'http://10.0.0.1:8080');
    assert.equal(chooseApi({}, there('/run/volant/volantd.sock')), 'unix:/run/volant/volantd.sock');
    assert.equal(chooseApi({ stateDir: '/tmp/s' }, there('/tmp/s/run/volantd.sock')), 'unix:/tmp/s/run/volantd.sock');
    assert.equal(chooseApi({ socket: '/x/v.sock', stateDir: '/tmp/s' }, there('/x/v.sock')), 'unix:/x/v.sock');
    assert.equal(chooseApi({}, nothing), 'http://127.0.0.1:8080');
    assert.equal(apiSocketPath({}), '/run/volant/volantd.sock');
  });
});

/**
 * The QMP client's error paths against a scripted server on a Unix socket (the happy path runs
 * against real QEMU in test/integration/vmm-qemu.test.ts). The server speaks QMP as
 * docs/interop/qmp-spec.rst describes: greeting, then one JSON reply per command.
 */

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { qmpExecute } from '../../host/vmm/qmp.js';
import { VolantError } from '../../shared/errors.js';

const dir = mkdtempSync(join(tmpdir(), `volant-vmm-qmp-${process.pid}-`));
let n = 0;
const GREETING = '{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}}, "capabilities": ["oob"]}}\r\n';

/** A server that greets (unless told not to) and answers each command line with `reply(command)`. */
async function qmpServer(reply: (cmd: string, sock: Socket) => string | undefined, greeting = GREETING): Promise<{ path: string; seen: string[]; server: Server }> {
  const path = join(dir, `qmp-${n++}.sock`);
  const seen: string[] = [];
  const server = createServer((sock) => {
    sock.write(greeting);
    let buf = '';
    sock.on('data', (c) => {
      buf += c.toString();
      for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
        const cmd = (JSON.parse(buf.slice(0, i)) as { execute: string }).execute;
        buf = buf.slice(i + 1);
        seen.push(cmd);
        const out = reply(cmd, sock);
        if (out !== undefined) sock.write(out);
      }
    });
  });
  await new Promise<void>((r) => server.listen(path, r));
  return { path, seen, server };
}

const isErr = (code: string, match: RegExp) => (e: unknown) => e instanceof VolantError && e.code === code && match.test(e.message);

describe('qmpExecute', () => {
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('negotiates capabilities first, skips events, runs commands in order', async () => {
    const { path, seen, server } = await qmpServer((cmd) => `{"event": "POWERDOWN", "timestamp": {"seconds": 1, "microseconds": 2}}\r\n{"return": {"cmd": "${cmd}"}}\r\n`);
    await qmpExecute(path, ['query-status', 'system_powerdown']);
    assert.deepEqual(seen, ['qmp_capabilities', 'query-status', 'system_powerdown']);
    server.close();
  });

  it('an error reply fails with its class and description', async () => {
    const { path, server } = await qmpServer((cmd) => (cmd === 'qmp_capabilities' ? '{"return": {}}\n' : '{"error": {"class": "CommandNotFound", "desc": "The command nope has not been found"}}\n'));
    await assert.rejects(qmpExecute(path, ['nope']), isErr('VMM_FAILED', /QMP nope: CommandNotFound: The command nope has not been found/));
    server.close();
  });

  it('a peer that is not QMP (no greeting, garbage) is a protocol error', async () => {
    const notQmp = await qmpServer(() => undefined, '{"hello": 1}\n');
    await assert.rejects(qmpExecute(notQmp.path, ['quit']), isErr('PROTOCOL_ERROR', /expected a greeting/));
    notQmp.server.close();
    const garbage = await qmpServer(() => undefined, 'SSH-2.0-OpenSSH\n');
    await assert.rejects(qmpExecute(garbage.path, ['quit']), isErr('PROTOCOL_ERROR', /not JSON/));
    garbage.server.close();
  });

  it('silence times out; a close mid-command fails; a close after quit is success', async () => {
    const silent = await qmpServer(() => undefined);
    await assert.rejects(qmpExecute(silent.path, ['query-status'], 200), isErr('TIMEOUT', /waiting for qmp_capabilities/));
    silent.server.close();
    const closes = await qmpServer((cmd, sock) => (cmd === 'qmp_capabilities' ? '{"return": {}}\n' : void sock.destroy()));
    await assert.rejects(qmpExecute(closes.path, ['query-status']), isErr('VMM_FAILED', /closed while waiting for query-status/));
    await qmpExecute(closes.path, ['quit']);
    closes.server.close();
  });

  it('no socket is a VMM failure, not a crash', async () => {
    await assert.rejects(qmpExecute(join(dir, 'absent.sock'), ['quit']), isErr('VMM_FAILED', /ENOENT/));
  });
});

/**
 * Finding a dhcp guest by MAC in `ip -j -4 neigh show dev <bridge>` output (host/network/neighbours.ts),
 * and the one probe `LinuxNetworkManager.neighbourAddress` runs for it.
 */

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { LinuxNetworkManager } from '../../host/network/linux.js';
import { addressForMac, macForAddress, parseNeighbours, parseProcNetArp } from '../../host/network/neighbours.js';
import type { Command, CommandResult, CommandRunner } from '../../host/network/runner.js';

const MAC = '52:54:00:ab:cd:ef';

/** Shaped like iproute2 6.x `ip -j -4 neigh show dev vbr0`. */
const TABLE = JSON.stringify([
  { dst: '192.168.127.20', lladdr: '52:54:00:11:22:33', state: ['REACHABLE'] },
  { dst: '192.168.127.31', lladdr: '52:54:00:ab:cd:ef', state: ['STALE'] },
  { dst: '192.168.127.44', state: ['FAILED'] },
  { dst: '192.168.127.45', lladdr: '52:54:00:99:99:99', state: ['INCOMPLETE'] },
]);

describe('parseNeighbours + addressForMac', () => {
  const cases: { name: string; json: string; mac: string; want: string | undefined }[] = [
    { name: 'a STALE entry (what the guest ARP request leaves) is found', json: TABLE, mac: MAC, want: '192.168.127.31' },
    { name: 'MAC compared case-insensitively', json: TABLE, mac: MAC.toUpperCase(), want: '192.168.127.31' },
    { name: 'another MAC is not this VM', json: TABLE, mac: '52:54:00:00:00:01', want: undefined },
    { name: 'FAILED/INCOMPLETE entries never count', json: TABLE, mac: '52:54:00:99:99:99', want: undefined },
    {
      name: 'a confirmed entry wins over a STALE one for the same MAC (the lease moved)',
      json: JSON.stringify([
        { dst: '192.168.127.21', lladdr: MAC, state: ['STALE'] },
        { dst: '192.168.127.22', lladdr: MAC, state: ['REACHABLE'] },
      ]),
      mac: MAC,
      want: '192.168.127.22',
    },
    { name: 'empty output (no neighbours yet)', json: '', mac: MAC, want: undefined },
    { name: 'empty array', json: '[]', mac: MAC, want: undefined },
    { name: 'not JSON', json: 'Device "vbr0" does not exist.', mac: MAC, want: undefined },
    { name: 'JSON but not an array', json: '{"dst":"192.168.127.31","lladdr":"52:54:00:ab:cd:ef"}', mac: MAC, want: undefined },
    {
      name: 'malformed rows are skipped, good ones kept',
      json: JSON.stringify([null, 7, 'x', { dst: 12, lladdr: MAC }, { dst: 'fe80::1', lladdr: MAC }, { dst: '192.168.127.300', lladdr: MAC }, { dst: '192.168.127.33', lladdr: 'zz:54:00:ab:cd:ef' }, { dst: '192.168.127.34', lladdr: MAC, state: 'weird' }]),
      mac: MAC,
      want: '192.168.127.34',
    },
  ];
  for (const c of cases) {
    test(c.name, () => {
      assert.equal(addressForMac(parseNeighbours(c.json), c.mac), c.want);
    });
  }

  test('parse keeps address, lower-cased MAC and states', () => {
    assert.deepEqual(parseNeighbours(JSON.stringify([{ dst: '10.0.0.2', lladdr: 'AA:BB:CC:DD:EE:FF', state: ['DELAY'] }])), [{ address: '10.0.0.2', mac: 'aa:bb:cc:dd:ee:ff', states: ['DELAY'] }]);
  });
});

describe('LinuxNetworkManager.neighbourAddress', () => {
  class Recorder implements CommandRunner {
    readonly commands: Command[] = [];
    constructor(private readonly answer: CommandResult) {}
    async run(command: Command): Promise<CommandResult> {
      this.commands.push(command);
      return this.answer;
    }
  }

  test('runs one read-only probe of the bridge and answers by MAC', async () => {
    const runner = new Recorder({ code: 0, stdout: TABLE, stderr: '' });
    assert.equal(await new LinuxNetworkManager(runner).neighbourAddress('vbr0', MAC), '192.168.127.31');
    assert.deepEqual(runner.commands, [{ argv: ['ip', '-j', '-4', 'neigh', 'show', 'dev', 'vbr0'], probe: true }]);
  });

  test('a failing probe (bridge gone) is "not found"', async () => {
    const runner = new Recorder({ code: 1, stdout: '', stderr: 'Cannot find device "vbr0"' });
    assert.equal(await new LinuxNetworkManager(runner).neighbourAddress('vbr0', MAC), undefined);
  });

  test('a hostile bridge name is refused before anything runs', async () => {
    const runner = new Recorder({ code: 0, stdout: TABLE, stderr: '' });
    await assert.rejects(new LinuxNetworkManager(runner).neighbourAddress('vbr0; reboot', MAC), /bridge name/);
    assert.equal(runner.commands.length, 0);
  });
});

describe('parseProcNetArp + macForAddress (what an egress listener reads to bind a peer to a MAC)', () => {
  const ARP = [
    'IP address       HW type     Flags       HW address            Mask     Device',
    '192.168.127.20   0x1         0x2         02:aa:bb:cc:dd:ee     *        vbr0',
    '192.168.127.21   0x1         0x0         00:00:00:00:00:00     *        vbr0',
    '10.99.0.2        0x1         0x2         02:00:00:00:00:99     *        ve-up',
    'garbage line',
    '192.168.127.22   0x1         0x6         02:AA:BB:CC:DD:EF     *        vbr0',
  ].join('\n');
  test('complete entries only, MACs lower-cased, filtered by device', () => {
    const on = parseProcNetArp(ARP, 'vbr0');
    assert.deepEqual(
      on.map((e) => [e.address, e.mac]),
      [
        ['192.168.127.20', '02:aa:bb:cc:dd:ee'],
        ['192.168.127.22', '02:aa:bb:cc:dd:ef'],
      ],
    );
    assert.equal(macForAddress(on, '192.168.127.20'), '02:aa:bb:cc:dd:ee');
    assert.equal(macForAddress(on, '192.168.127.21'), undefined, 'an incomplete entry names no MAC');
    assert.equal(macForAddress(on, '10.99.0.2'), undefined, 'another device');
    assert.equal(parseProcNetArp(ARP).length, 3);
    assert.deepEqual(parseProcNetArp(''), []);
  });
});

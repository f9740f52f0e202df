// Config loading: defaults, YAML file, VOLANT_* env, flags, --state-dir, and errors that name
// the key, the value and what is allowed.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, describe, test } from 'node:test';
import { defaultDhcpRange, defaultPool, environmentKeys, loadConfig, quoteSystemdArg, statePaths, systemdUnit } from '../../host/config/index.js';
import { ValidationError } from '../../shared/errors.js';
import { GUIDE_VOLANTD_YAML } from '../support/guide-config.js';

const dir = mkdtempSync(join(tmpdir(), `volant-config-${process.pid}-`));
after(() => rmSync(dir, { recursive: true, force: true }));
const NO_FILE = join(dir, 'absent.yaml');

function yamlFile(text: string): string {
  const f = join(dir, `c${Math.random().toString(36).slice(2)}.yaml`);
  writeFileSync(f, text);
  return f;
}

function problems(fn: () => unknown): { path: string; message: string }[] {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof ValidationError, `expected ValidationError, got ${e}`);
    return e.problems;
  }
  assert.fail('expected a ValidationError');
}

describe('layers', () => {
  test('defaults match the documented ones', () => {
    const c = loadConfig({ file: null });
    assert.equal(c.network.bridge, 'vbr0');
    assert.equal(c.network.host_cidr, '192.168.127.1/24');
    assert.equal(c.network.pool_start, '192.168.127.100');
    assert.equal(c.network.pool_end, '192.168.127.254');
    assert.equal(c.state_dir, '/var/lib/volant');
    assert.equal(c.runtime_dir, '/run/volant');
    assert.equal(c.vmm.qemu.vsock, 'vhost-user', 'QEMU VMs get the vhost-user vsock device unless told otherwise');
    assert.equal(loadConfig({ file: yamlFile('vmm:\n  prefer: qemu\n') }).vmm.qemu.vsock, 'vhost-user', 'setting another vmm key keeps the default');
  });

  test('file < env < flags, section by section', () => {
    const file = yamlFile('network:\n  bridge: br-file\n  dns: [1.1.1.1]\negress:\n  connect_timeout_ms: 4000\n');
    const c = loadConfig({ file, env: { VOLANT_EGRESS_CONNECT_TIMEOUT_MS: '5000', VOLANT_NETWORK_RESERVATIONS: 'db=192.168.127.120, web=192.168.127.121' }, overrides: { network: { bridge: 'br-flag' } } });
    assert.equal(c.network.bridge, 'br-flag');
    assert.deepEqual(c.network.dns, ['1.1.1.1']);
    assert.equal(c.egress.connect_timeout_ms, 5000);
    assert.deepEqual(c.network.reservations, { db: '192.168.127.120', web: '192.168.127.121' });
    assert.equal(c.network.host_cidr, '192.168.127.1/24');
  });

  test('--state-dir moves the runtime dir, database and logs under it unless runtime_dir is set', () => {
    const c = loadConfig({ file: null, overrides: { state_dir: dir } });
    assert.equal(c.runtime_dir, join(dir, 'run'));
    assert.equal(statePaths(c).database, join(dir, 'volant.db'));
    assert.equal(c.log.dir, join(dir, 'logs'));
    const d = loadConfig({ file: null, env: { VOLANT_RUNTIME_DIR: '/run/elsewhere' }, overrides: { state_dir: dir } });
    assert.equal(d.runtime_dir, '/run/elsewhere');
  });

  test('a custom subnet gets a pool inside it by default', () => {
    const c = loadConfig({ file: null, env: { VOLANT_NETWORK_HOST_CIDR: '10.200.0.1/16' } });
    assert.equal(c.network.pool_start, '10.200.0.100');
    assert.equal(c.network.pool_end, '10.200.255.254');
    assert.deepEqual(defaultPool('10.0.0.1/29'), { pool_start: '10.0.0.2', pool_end: '10.0.0.6' });
  });

  test('the API socket follows the runtime dir; the DHCP range fits below the pool unless set', () => {
    const c = loadConfig({ file: null });
    assert.equal(c.api.socket, '/run/volant/volantd.sock');
    assert.equal(c.api.unsafe_loopback_without_token, false);
    assert.deepEqual([c.dhcp.server, c.dhcp.range_start, c.dhcp.range_end, c.dhcp.lease_time_s], ['auto', '192.168.127.10', '192.168.127.99', 3600]);
    assert.equal(loadConfig({ file: null, overrides: { state_dir: dir } }).api.socket, join(dir, 'run', 'volantd.sock'));
    assert.equal(loadConfig({ file: null, env: { VOLANT_API_SOCKET: '' } }).api.socket, '');
    const custom = loadConfig({ file: null, overrides: { dhcp: { range_start: '192.168.127.30', range_end: '192.168.127.40' } } });
    assert.deepEqual([custom.dhcp.range_start, custom.dhcp.range_end], ['192.168.127.30', '192.168.127.40']);
    // A pool that starts right after the host leaves no room: no default range, and no error.
    const full = loadConfig({ file: null, overrides: { network: { pool_start: '192.168.127.2' } } });
    assert.equal(full.dhcp.range_start, undefined);
    assert.deepEqual(defaultDhcpRange('10.0.0.1/29', '10.0.0.5'), undefined);
    assert.deepEqual(defaultDhcpRange('10.0.0.1/24', '10.0.0.200'), { range_start: '10.0.0.10', range_end: '10.0.0.199' });
  });

  test('log: level info, files under <state_dir>/logs unless log.dir is set; VOLANT_LOG_LEVEL and VOLANT_LOG_DIR override', () => {
    const c = loadConfig({ file: null });
    assert.deepEqual(c.log, { level: 'info', dir: '/var/lib/volant/logs', audit_max_bytes: 64 * 1024 * 1024, audit_files: 4 });
    const f = loadConfig({ file: yamlFile('log:\n  level: warn\n  dir: /var/log/volant\n'), overrides: { state_dir: dir } });
    assert.deepEqual([f.log.level, f.log.dir, f.log.audit_files], ['warn', '/var/log/volant', 4]);
    const e = loadConfig({ file: yamlFile('log:\n  level: warn\n'), env: { VOLANT_LOG_LEVEL: 'debug', VOLANT_LOG_DIR: 'rel/logs', VOLANT_LOG_AUDIT_MAX_BYTES: '1048576' } });
    assert.deepEqual([e.log.level, e.log.dir, e.log.audit_max_bytes], ['debug', resolve('rel/logs'), 1048576]);
    const bad = problems(() => loadConfig({ file: null, env: { VOLANT_LOG_LEVEL: 'loud', VOLANT_LOG_AUDIT_MAX_BYTES: '10' } }));
    assert.deepEqual(
      bad.map((p) => p.path),
      ['/log/level', '/log/audit_max_bytes'],
    );
    assert.match(bad[0]!.message, /one of "fatal", "error", "warn", "info", "debug", "trace", "silent" \(got "loud"\)/);
  });

  test('every config key has exactly one VOLANT_ variable', () => {
    const vars = environmentKeys().map((k) => k.variable);
    assert.equal(new Set(vars).size, vars.length);
    assert.ok(vars.includes('VOLANT_STATE_DIR'));
    assert.ok(vars.includes('VOLANT_NETWORK_HOST_CIDR'));
    assert.ok(vars.includes('VOLANT_EGRESS_ALLOW_PRIVATE'));
  });

  test('an explicitly named file (flag or VOLANT_CONFIG) that does not exist is an error', () => {
    assert.throws(() => loadConfig({ file: NO_FILE }), { code: 'NOT_FOUND' });
    assert.throws(() => loadConfig({ env: { VOLANT_CONFIG: NO_FILE } }), { code: 'NOT_FOUND' });
  });
});

describe('bad config names the key, the value and what is allowed', () => {
  const cases: [string, Parameters<typeof loadConfig>[0], string, RegExp][] = [
    ['pool outside the subnet', { overrides: { network: { pool_start: '10.0.0.5' } } }, '/network/pool_start', /10\.0\.0\.5.*outside 192\.168\.127\.1\/24/],
    ['pool covering the host', { overrides: { network: { pool_start: '192.168.127.1' } } }, '/network/pool_start', /host address 192\.168\.127\.1/],
    ['pool end = broadcast', { overrides: { network: { pool_end: '192.168.127.255' } } }, '/network/pool_end', /outside/],
    ['pool reversed', { overrides: { network: { pool_start: '192.168.127.200', pool_end: '192.168.127.150' } } }, '/network/pool_end', /comes before/],
    ['host is the network address', { overrides: { network: { host_cidr: '192.168.127.0/24' } } }, '/network/host_cidr', /network or broadcast/],
    ['host prefix too long for a pool', { overrides: { network: { host_cidr: '10.0.0.1/31' } } }, '/network/host_cidr', /prefix 8-30/],
    ['host without prefix', { overrides: { network: { host_cidr: '10.0.0.1' } } }, '/network/host_cidr', /prefix 8-30/],
    ['bridge with shell characters', { overrides: { network: { bridge: 'br0;reboot' } } }, '/network/bridge', /br0;reboot/],
    ['bridge too long', { overrides: { network: { bridge: 'a-very-long-bridge' } } }, '/network/bridge', /1-15/],
    ['count not a number', { env: { VOLANT_EGRESS_MAX_TUNNELS_PER_VM: 'many' } }, '/egress/max_tunnels_per_vm', /integer.*"many"/],
    ['count too big', { env: { VOLANT_EGRESS_MAX_TUNNELS_PER_VM: '200000' } }, '/egress/max_tunnels_per_vm', /100000.*200000/],
    ['vmm not one of', { overrides: { vmm: { prefer: 'firecracker' as 'qemu' } } }, '/vmm/prefer', /"auto", "cloud-hypervisor", "qemu".*firecracker/],
    ['qemu vsock not one of', { file: yamlFile('vmm:\n  qemu:\n    vsock: vhost-net\n') }, '/vmm/qemu/vsock', /"vhost-user", "vhost-kernel".*vhost-net/],
    ['octal-looking address', { overrides: { network: { pool_start: '192.168.127.0100' } } }, '/network/pool_start', /dotted-quad|match/],
    ['reservation outside pool', { overrides: { network: { reservations: { db: '192.168.127.5' } } } }, '/network/reservations/db', /outside the pool/],
    ['reservation clash', { overrides: { network: { reservations: { db: '192.168.127.150', web: '192.168.127.150' } } } }, '/network/reservations/web', /already reserved for "db"/],
    ['reservation for an invalid VM name', { overrides: { network: { reservations: { 'a b': '192.168.127.150' } } } }, '/network/reservations/a b', /not a valid VM name/],
    ['DHCP range overlapping the pool', { overrides: { dhcp: { range_start: '192.168.127.90', range_end: '192.168.127.110' } } }, '/dhcp/range_start', /overlaps the address pool 192\.168\.127\.100-192\.168\.127\.254/],
    ['DHCP range inside the pool', { overrides: { dhcp: { range_start: '192.168.127.150', range_end: '192.168.127.160' } } }, '/dhcp/range_start', /overlaps the address pool/],
    ['DHCP range containing the host', { overrides: { dhcp: { range_start: '192.168.127.1', range_end: '192.168.127.50' } } }, '/dhcp/range_start', /host address 192\.168\.127\.1/],
    ['DHCP range outside the subnet', { overrides: { dhcp: { range_start: '10.0.0.10', range_end: '10.0.0.20' } } }, '/dhcp/range_start', /outside 192\.168\.127\.1\/24/],
    ['DHCP range reversed', { overrides: { dhcp: { range_start: '192.168.127.50', range_end: '192.168.127.20' } } }, '/dhcp/range_end', /comes before/],
    ['DHCP range half given', { overrides: { dhcp: { range_start: '192.168.127.20' } } }, '/dhcp/range_end', /both range_start and range_end/],
    ['DHCP server not one of', { overrides: { dhcp: { server: 'isc' as 'auto' } } }, '/dhcp/server', /"auto", "volant", "external"/],
    ['unsafe waiver not a boolean', { env: { VOLANT_API_UNSAFE_LOOPBACK_WITHOUT_TOKEN: 'yes' } }, '/api/unsafe_loopback_without_token', /boolean/],
  ];
  for (const [title, opts, path, message] of cases) {
    test(title, () => {
      const p = problems(() => loadConfig({ file: null, ...opts }));
      const hit = p.find((x) => x.path === path);
      assert.ok(hit, `no problem at ${path}: ${JSON.stringify(p)}`);
      assert.match(hit.message, message);
    });
  }

  test('unknown keys and non-mapping files are refused', () => {
    assert.match(problems(() => loadConfig({ file: yamlFile('netwrok:\n  bridge: x\n') }))[0]!.message, /unknown field/);
    assert.equal(problems(() => loadConfig({ file: yamlFile('- a\n- b\n') }))[0]!.path, '/');
    assert.match(problems(() => loadConfig({ file: yamlFile('network: [unclosed\n') }))[0]!.message, /not valid YAML/);
  });
});

describe('systemd unit', () => {
  test('ExecStart arguments are quoted the systemd way; specifiers and variables cannot sneak in', () => {
    assert.equal(quoteSystemdArg('/usr/bin/node'), '/usr/bin/node');
    assert.equal(quoteSystemdArg('/srv/my state'), '"/srv/my state"');
    assert.equal(quoteSystemdArg('/srv/100%'), '"/srv/100%%"');
    assert.equal(quoteSystemdArg('/srv/$HOME'), '"/srv/$$HOME"');
    assert.equal(quoteSystemdArg('a"b\\c'), '"a\\"b\\\\c"');
    assert.throws(() => quoteSystemdArg('a\nExecStartPre=/bin/sh'), /line break/);
    const unit = systemdUnit({ execStart: ['/usr/bin/node', '/opt/volant/bin/volantd.js', '--state-dir', '/srv/v 1'], stateDir: '/srv/v 1', runtimeDir: '/srv/v 1/run' });
    assert.match(unit, /^ExecStart=\/usr\/bin\/node \/opt\/volant\/bin\/volantd\.js --state-dir "\/srv\/v 1"$/m);
    assert.match(unit, /^ReadWritePaths="\/srv\/v 1" "\/srv\/v 1\/run"$/m);
    assert.match(unit, /^KillMode=process$/m);
  });
});

describe("the guides' names", () => {
  test("the guide's volantd.yaml loads as the canonical network keys", () => {
    const c = loadConfig({ file: yamlFile(GUIDE_VOLANTD_YAML) });
    assert.deepEqual(
      { bridge: c.network.bridge, host_cidr: c.network.host_cidr, pool_start: c.network.pool_start, pool_end: c.network.pool_end },
      { bridge: 'volant0', host_cidr: '10.200.0.1/16', pool_start: '10.200.1.0', pool_end: '10.200.255.254' },
    );
  });
  test('a subnet without a gateway puts the host on its first address; the pool then follows it', () => {
    const c = loadConfig({ file: yamlFile('networking:\n  bridge:\n    subnet: 10.9.0.0/24\n') });
    assert.deepEqual([c.network.host_cidr, c.network.pool_start, c.network.pool_end], ['10.9.0.1/24', '10.9.0.100', '10.9.0.254']);
  });
  test('what has no canonical counterpart, or is set twice, is refused naming the canonical key', () => {
    const cases: [string, string, RegExp][] = [
      ['networking:\n  bridge:\n    subnet: 10.200.0.0/16\n    gateway: 10.201.0.1\n', '/networking/bridge/gateway', /not a host address inside "10\.200\.0\.0\/16" \(network\.host_cidr/],
      ['networking:\n  bridge:\n    gateway: 10.200.0.1\n', '/networking/bridge/gateway', /needs networking\.bridge\.subnet.*network\.host_cidr/],
      ['networking:\n  bridge:\n    ipv6:\n      enabled: true\n', '/networking/bridge/ipv6', /IPv6 bridges are not supported/],
      ['networking:\n  bridge:\n    name: a\nnetwork:\n  bridge: b\n', '/networking/bridge/name', /network\.bridge is the canonical key/],
      ['networking:\n  dns: [1.1.1.1]\n', '/networking/dns', /canonical: network/],
      ['networking:\n  bridge:\n    subnet: nonsense\n', '/networking/bridge/subnet', /not an IPv4 subnet/],
    ];
    for (const [text, path, message] of cases) {
      const p = problems(() => loadConfig({ file: yamlFile(text) }));
      const hit = p.find((x) => x.path === path);
      assert.ok(hit, `${path} in ${JSON.stringify(p)}`);
      assert.match(hit.message, message);
    }
  });
  test("the original volantd's variables work as aliases; unsupported ones name state_dir", () => {
    const c = loadConfig({ file: null, env: { VOLANT_BRIDGE: 'br9', VOLANT_SUBNET: '10.7.0.0/16', VOLANT_HOST_IP: '10.7.0.1', VOLANT_API_LISTEN: '127.0.0.1:7777', VOLANT_KERNEL_BZIMAGE: '/k/bzImage' } });
    assert.deepEqual([c.network.bridge, c.network.host_cidr, c.listen, c.kernel.path], ['br9', '10.7.0.1/16', '127.0.0.1:7777', '/k/bzImage']);
    assert.match(problems(() => loadConfig({ file: null, env: { VOLANT_DB_PATH: '/x.db' } }))[0]!.message, /state_dir/);
    assert.match(problems(() => loadConfig({ file: null, env: { VOLANT_BRIDGE: 'a', VOLANT_NETWORK_BRIDGE: 'b' } }))[0]!.message, /VOLANT_NETWORK_BRIDGE is the canonical name/);
  });
  test('the removed egress.port is refused in the file and the environment, saying why, rather than ignored', () => {
    const inFile = problems(() => loadConfig({ file: yamlFile('egress:\n  port: 3128\n') }));
    assert.deepEqual(inFile.map((p) => p.path), ['/egress/port']);
    assert.match(inFile[0]!.message, /no longer read: each VM's egress listener takes its own free port/);
    const inEnv = problems(() => loadConfig({ file: null, env: { VOLANT_EGRESS_PORT: '3128' } }));
    assert.deepEqual(inEnv.map((p) => p.path), ['$VOLANT_EGRESS_PORT']);
  });
  test('network.dns unset means "the host\'s resolvers" (left to volantd); [] means none', () => {
    assert.equal(loadConfig({ file: null }).network.dns, undefined);
    assert.deepEqual(loadConfig({ file: null, env: { VOLANT_NETWORK_DNS: '' } }).network.dns, []);
  });
});

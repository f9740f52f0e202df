/**
 * native/index.ts argument checks and the pure helpers: bad input raises an errno-style EINVAL
 * (errno, code, syscall) before anything reaches the kernel. reboot and finit_module are only
 * called with arguments the wrapper must refuse (or, for finit_module, a missing file that fails
 * at open()); they never run on this host.
 */

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { addonCandidates, prebuildTag } from '../../native/addon.js';
import {
  addDefaultRoute,
  finitModule,
  interfaceUp,
  reboot,
  sethostname,
  setInterfaceAddress,
  vsockConnect,
  vsockListen,
} from '../../native/index.js';
import { parseProcStat } from '../../native/reap.js';

const EINVAL = { code: 'EINVAL', errno: -22 };

describe('addon search order', () => {
  test('an explicit VOLANT_NATIVE_ADDON is the only candidate', () => {
    assert.deepEqual(addonCandidates({ VOLANT_NATIVE_ADDON: 'x/volant_native.node' }, '/lib/volant'), [
      path.resolve('x/volant_native.node'),
    ]);
  });
  test('otherwise: beside the bundle, then the source layout, then the dist layout', () => {
    assert.deepEqual(addonCandidates({}, '/repo/dist/native'), [
      '/repo/dist/native/volant_native.node',
      '/repo/dist/native/build/Release/volant_native.node',
      '/repo/native/build/Release/volant_native.node',
    ]);
  });
  test('with a platform tag, the packed prebuilt binary comes last, for the source and the dist layout', () => {
    assert.deepEqual(addonCandidates({}, '/pkg/dist/native', 'linux-x64').slice(3), [
      '/pkg/dist/prebuilds/linux-x64/volant_native.node',
      '/pkg/prebuilds/linux-x64/volant_native.node',
    ]);
    assert.deepEqual(addonCandidates({ VOLANT_NATIVE_ADDON: '/x.node' }, '/pkg/dist/native', 'linux-x64'), ['/x.node']);
  });
  test('prebuilt binaries are glibc builds: musl Linux gets no tag and builds from source', () => {
    const cases: [string, string, string | undefined, string | undefined][] = [
      ['linux', 'x64', '2.36', 'linux-x64'],
      ['linux', 'arm64', '2.36', 'linux-arm64'],
      ['linux', 'x64', undefined, undefined],
      ['darwin', 'arm64', undefined, 'darwin-arm64'],
    ];
    for (const [platform, arch, glibc, want] of cases) assert.equal(prebuildTag(platform, arch, glibc), want, `${platform} ${arch} glibc ${glibc}`);
  });
});

describe('an addon that cannot be loaded', () => {
  // Loading is per process and remembered, so each case runs in a fresh child.
  const probe = `
    const m = await import(process.env.NATIVE_INDEX_URL);
    let thrown;
    try { m.interfaceUp('lo'); } catch (e) { thrown = { code: e.code, message: e.message }; }
    process.stdout.write(JSON.stringify({ available: m.nativeAvailable(), thrown }));
  `;
  function loadWith(addonPath: string): { available: boolean; thrown: { code: string; message: string } } {
    const child = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', probe], {
      encoding: 'utf8',
      env: { ...process.env, VOLANT_NATIVE_ADDON: addonPath, NATIVE_INDEX_URL: new URL('../../native/index.ts', import.meta.url).href },
    });
    assert.equal(child.status, 0, child.stderr);
    return JSON.parse(child.stdout);
  }
  const dir = mkdtempSync(path.join(tmpdir(), `native-wrapper-${process.pid}-`));
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('a missing explicit path: unavailable, and calls say where it looked', () => {
    const missing = path.join(dir, 'absent.node');
    const result = loadWith(missing);
    assert.equal(result.available, false);
    assert.equal(result.thrown.code, 'ERR_VOLANT_NATIVE_UNAVAILABLE');
    assert.ok(result.thrown.message.includes(missing), result.thrown.message);
  });

  test("a file that is not a shared object: unavailable, with the loader's reason", () => {
    const bogus = path.join(dir, 'bogus.node');
    writeFileSync(bogus, 'not an ELF file');
    const result = loadWith(bogus);
    assert.equal(result.available, false);
    assert.equal(result.thrown.code, 'ERR_VOLANT_NATIVE_UNAVAILABLE');
    assert.match(result.thrown.message, /invalid ELF header|too short/);
  });
});

describe('/proc/<pid>/stat parsing', () => {
  const cases: [string, string, ReturnType<typeof parseProcStat>][] = [
    ['plain', '42 (sleep) Z 7 42 42 0 -1', { pid: 42, state: 'Z', ppid: 7 }],
    ['name with spaces and parens', '9 (a) b (c)) S 1 9 9 0', { pid: 9, state: 'S', ppid: 1 }],
    ['truncated', '9 (x', undefined],
    ['no fields after name', '9 (x)', undefined],
  ];
  for (const [name, text, expected] of cases) {
    test(name, () => assert.deepEqual(parseProcStat(text), expected));
  }
});

describe('argument checks raise EINVAL before any syscall', () => {
  const cases: [string, () => unknown, string, RegExp][] = [
    ['interface name empty', () => interfaceUp(''), 'SIOCSIFFLAGS', /1\.\.15 bytes/],
    ['interface name 16 bytes', () => interfaceUp('a'.repeat(16)), 'SIOCSIFFLAGS', /1\.\.15 bytes/],
    ['interface name with slash', () => interfaceUp('../eth0'), 'SIOCSIFFLAGS', /'\/'/],
    ['interface name with NUL', () => interfaceUp('eth0\0x'), 'SIOCSIFFLAGS', /NUL/],
    ['interface name not a string', () => interfaceUp(7 as unknown as string), 'SIOCSIFFLAGS', /string/],
    ['address out of range', () => setInterfaceAddress('eth0', '10.0.0.256', 24), 'SIOCSIFADDR', /not a dotted-quad/],
    ['address octal spelling', () => setInterfaceAddress('eth0', '010.0.0.1', 24), 'SIOCSIFADDR', /not a dotted-quad/],
    ['prefix 33', () => setInterfaceAddress('eth0', '10.0.0.2', 33), 'SIOCSIFNETMASK', /0\.\.32/],
    ['prefix negative', () => setInterfaceAddress('eth0', '10.0.0.2', -1), 'SIOCSIFNETMASK', /0\.\.32/],
    ['prefix fractional', () => setInterfaceAddress('eth0', '10.0.0.2', 24.5), 'SIOCSIFNETMASK', /0\.\.32/],
    ['gateway hostname', () => addDefaultRoute('gateway.local'), 'SIOCADDRT', /not a dotted-quad/],
    ['route device too long', () => addDefaultRoute('10.0.0.1', 'x'.repeat(40)), 'SIOCADDRT', /1\.\.15 bytes/],
    ['hostname empty', () => sethostname(''), 'sethostname', /1\.\.64 bytes/],
    ['hostname 65 bytes', () => sethostname('h'.repeat(65)), 'sethostname', /1\.\.64 bytes/],
    ['hostname with NUL', () => sethostname('a\0b'), 'sethostname', /NUL/],
    ['module path with NUL', () => finitModule('/lib/x.ko\0/etc/shadow'), 'finit_module', /NUL/],
    ['module path empty', () => finitModule(''), 'finit_module', /1\.\.4096 bytes/],
    ['module params not a string', () => finitModule('/x.ko', 1 as unknown as string), 'finit_module', /string/],
    ['reboot halt', () => reboot('halt' as 'restart'), 'reboot', /'power-off' or 'restart'/],
    ['reboot undefined', () => reboot(undefined as unknown as 'restart'), 'reboot', /'power-off' or 'restart'/],
    ['reboot numeric command', () => reboot(0x4321fedc as unknown as 'restart'), 'reboot', /'power-off' or 'restart'/],
  ];
  for (const [name, call, syscall, message] of cases) {
    test(name, () => assert.throws(call, { ...EINVAL, syscall, message }));
  }

  test('vsock ports and CIDs must be 32-bit unsigned integers (no socket is opened)', async () => {
    await assert.rejects(vsockConnect(2, 2 ** 32), { ...EINVAL, syscall: 'connect' });
    await assert.rejects(vsockConnect(-1, 80), { ...EINVAL, syscall: 'connect' });
    await assert.rejects(vsockConnect(2, Number.NaN), { ...EINVAL, syscall: 'connect' });
    await assert.rejects(vsockListen(1.5, () => {}), { ...EINVAL, syscall: 'bind' });
    await assert.rejects(vsockListen(8080, () => {}, { backlog: 0 }), { ...EINVAL, syscall: 'listen' });
    await assert.rejects(vsockListen(8080, 'x' as unknown as () => void), { ...EINVAL, syscall: 'listen' });
  });
});

describe('kernel errors carry errno, code and syscall', () => {
  test('a module file that does not exist fails at open() with ENOENT (finit_module is never reached)', () => {
    const missing = `/nonexistent/native-${process.pid}/mod.ko`;
    assert.throws(() => finitModule(missing), {
      code: 'ENOENT',
      errno: -2,
      syscall: 'open',
      message: `ENOENT: no such file or directory, open '${missing}'`,
    });
  });
  test('an unknown interface is ENODEV from the ioctl', () => {
    assert.throws(() => interfaceUp(`nx${process.pid}`.slice(0, 15)), { code: 'ENODEV', errno: -19, syscall: 'SIOCGIFFLAGS' });
  });
});

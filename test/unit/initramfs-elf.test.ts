/**
 * The ELF reader and library resolver: checked against binutils' readelf and glibc's ldd as
 * oracles (the builder itself uses neither), on RUNPATH/$ORIGIN with objects compiled here, and
 * on malformed files.
 */

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { ldSoConfDirs, parseElf, resolveElfClosure } from '../../initramfs/elf.js';
import { VolantError } from '../../shared/errors.js';
import { hasCommand, skipUnlessStrict } from '../support/strict.js';

const work = mkdtempSync(join(tmpdir(), `volant-initramfs-elf-${process.pid}-`));
after(() => rmSync(work, { recursive: true, force: true }));


describe('ELF reader', () => {
  test('DT_NEEDED and PT_INTERP of /usr/bin/node match readelf', () => {
    const info = parseElf(readFileSync('/usr/bin/node'), '/usr/bin/node');
    const dyn = execFileSync('readelf', ['-dW', '/usr/bin/node'], { encoding: 'utf8' });
    const needed = [...dyn.matchAll(/\(NEEDED\)\s+Shared library: \[([^\]]+)\]/g)].map((m) => m[1]);
    assert.deepEqual(info.needed, needed);
    const interp = /Requesting program interpreter: ([^\]]+)\]/.exec(execFileSync('readelf', ['-lW', '/usr/bin/node'], { encoding: 'utf8' }))?.[1];
    assert.equal(info.interpreter, interp);
    assert.equal(info.machine, 62);
  });

  test('the closure of node equals what ldd reports (ldd only as the oracle)', async () => {
    const closure = await resolveElfClosure(['/usr/bin/node']);
    const ldd = execFileSync('ldd', ['/usr/bin/node'], { encoding: 'utf8' });
    const fromLdd = [...ldd.matchAll(/=>\s+(\/\S+)/g)].map((m) => m[1]!);
    assert.deepEqual(closure.libraries.filter((l) => !l.includes('ld-linux')), [...new Set(fromLdd)].sort());
    assert.equal(closure.interpreter, '/lib64/ld-linux-x86-64.so.2');
  });

  test('ld.so.conf includes are followed', async () => {
    const root = join(work, 'conf');
    mkdirSync(join(root, 'etc/ld.so.conf.d'), { recursive: true });
    writeFileSync(join(root, 'etc/ld.so.conf'), '# comment\ninclude /etc/ld.so.conf.d/*.conf\n/opt/first\n');
    writeFileSync(join(root, 'etc/ld.so.conf.d/b.conf'), '/opt/b\n');
    writeFileSync(join(root, 'etc/ld.so.conf.d/a.conf'), '/opt/a # trailing\n\n');
    writeFileSync(join(root, 'etc/ld.so.conf.d/skip.txt'), '/opt/skip\n');
    assert.deepEqual(await ldSoConfDirs('/etc/ld.so.conf', root), ['/opt/a', '/opt/b', '/opt/first']);
  });

  test('DT_RUNPATH with $ORIGIN finds a private library; a missing one is an error naming it', { skip: skipUnlessStrict(hasCommand('cc') ? false : 'no C compiler') }, async () => {
    const dir = join(work, 'origin');
    mkdirSync(join(dir, 'priv'), { recursive: true });
    writeFileSync(join(dir, 'lib.c'), 'int volant_answer(void) { return 42; }\n');
    writeFileSync(join(dir, 'main.c'), 'int volant_answer(void); int main(void) { return volant_answer() - 42; }\n');
    execFileSync('cc', ['-shared', '-fPIC', '-o', join(dir, 'priv/libvolanttest.so'), join(dir, 'lib.c')]);
    execFileSync('cc', ['-o', join(dir, 'prog'), join(dir, 'main.c'), `-L${join(dir, 'priv')}`, '-lvolanttest', '-Wl,--enable-new-dtags,-rpath,$ORIGIN/priv']);
    const closure = await resolveElfClosure([join(dir, 'prog')]);
    assert.ok(closure.libraries.includes(join(dir, 'priv/libvolanttest.so')), closure.libraries.join(','));
    assert.ok(closure.libraries.some((l) => l.endsWith('/libc.so.6')));
    rmSync(join(dir, 'priv/libvolanttest.so'));
    await assert.rejects(resolveElfClosure([join(dir, 'prog')]), (e: unknown) => e instanceof VolantError && e.code === 'NOT_FOUND' && /needs libvolanttest\.so/.test(e.message));
  });

  test('malformed input is a VolantError, never a crash or a hang', () => {
    const node = readFileSync('/usr/bin/node');
    const cases: [string, Buffer][] = [
      ['empty', Buffer.alloc(0)],
      ['text', Buffer.from('#!/bin/sh\necho hi\n'.padEnd(80, ' '))],
      ['truncated', node.subarray(0, 100)],
      ['32-bit', Buffer.concat([Buffer.from([0x7f, 0x45, 0x4c, 0x46, 1, 1]), Buffer.alloc(100)])],
    ];
    const hugePh = Buffer.from(node.subarray(0, 4096));
    hugePh.writeUInt16LE(0xffff, 56);
    cases.push(['huge phnum', hugePh]);
    const farPh = Buffer.from(node.subarray(0, 4096));
    farPh.writeBigUInt64LE(0xffff_ffff_ffffn, 32);
    cases.push(['program headers past the end', farPh]);
    for (const [name, buf] of cases) assert.throws(() => parseElf(buf, name), VolantError, name);
  });

  test('a program that is missing or not ELF is refused with its path', async () => {
    const script = join(work, 'script.sh');
    writeFileSync(script, '#!/bin/sh\n');
    await assert.rejects(resolveElfClosure([script]), new RegExp(`${script} is missing or is not an ELF program`));
    await assert.rejects(resolveElfClosure([join(work, 'nope')]), /nope is missing/);
  });
});

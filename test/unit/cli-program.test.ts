/**
 * volar's pure decisions: the exit status of every error code, what a thrown error prints,
 * the SSE parser under any chunking, event lines, log lines for `vms logs --json`, and the shell
 * completion scripts (run in a real bash and zsh against the generated function).
 */

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { CommanderError } from 'commander';
import { ErrorCodes, VolantError } from '../../shared/errors.js';
import { completionScript, completionTree } from '../../host/cli/commands/completion.js';
import { LogLineReader, parseLogLine } from '../../host/api/log-lines.js';
import { EXIT, exitCodeFor, exitCodesHelp } from '../../host/cli/exit-codes.js';
import { buildProgram, failureOf } from '../../host/cli/program.js';
import { describeVmEvent, SseParser } from '../../host/cli/progress.js';
import { kernelCacheDir, testKernel } from '../support/kernel.js';
import { hasCommand, strictSkip } from '../support/strict.js';

describe('exit status', () => {
  it('every error code has one, and the kinds the docs name are distinct', () => {
    const table: [string, number][] = [
      ['INVALID_ARGUMENT', EXIT.USAGE],
      ['VALIDATION_FAILED', EXIT.USAGE],
      ['NOT_FOUND', EXIT.NOT_FOUND],
      ['NAME_TAKEN', EXIT.CONFLICT],
      ['IP_TAKEN', EXIT.CONFLICT],
      ['INVALID_STATE', EXIT.CONFLICT],
      ['POOL_EXHAUSTED', EXIT.CONFLICT],
      ['INTERNAL', EXIT.SERVER],
      ['VMM_FAILED', EXIT.SERVER],
      ['UPSTREAM_UNREACHABLE', EXIT.UNREACHABLE],
      ['UNAUTHORIZED', EXIT.DENIED],
    ];
    for (const [code, exit] of table) assert.equal(exitCodeFor(code as never), exit, code);
    for (const code of ErrorCodes) assert.ok(Number.isInteger(exitCodeFor(code)) && exitCodeFor(code) > 0, code);
    assert.equal(new Set([EXIT.USAGE, EXIT.NOT_FOUND, EXIT.CONFLICT, EXIT.SERVER]).size, 4);
    assert.equal(exitCodeFor(undefined), EXIT.FAILED);
  });
  it('the help text lists every code under its status', () => {
    const help = exitCodesHelp();
    for (const code of ErrorCodes) assert.ok(help.includes(code), code);
    assert.match(help, /^ {2}3 {2}not found \(NOT_FOUND\)$/m);
  });
  it('what a thrown error becomes', () => {
    assert.deepEqual(failureOf(new VolantError('NAME_TAKEN', 'a VM named x exists')), { exit: EXIT.CONFLICT, code: 'NAME_TAKEN', message: 'a VM named x exists', details: undefined });
    assert.deepEqual(failureOf(new CommanderError(1, 'commander.unknownOption', "error: unknown option '--x'")), { exit: EXIT.USAGE, code: 'INVALID_ARGUMENT', message: "unknown option '--x'" });
    assert.equal(failureOf(new CommanderError(0, 'commander.helpDisplayed', '(outputHelp)')), undefined);
    assert.equal(failureOf(new CommanderError(0, 'commander.version', '1.0.0')), undefined);
    assert.equal(failureOf(new CommanderError(1, 'commander.help', '(outputHelp)'))?.exit, EXIT.USAGE, 'a group without its subcommand is a usage error');
    assert.deepEqual(failureOf(new Error('boom')), { exit: EXIT.FAILED, code: 'FAILED', message: 'boom' });
  });
});

describe('events feed', () => {
  const feed = ': volantd events\n\nid: 1\nevent: vm.state\ndata: {"type":"vm.state","vm":"a","state":"creating"}\n\n: keep-alive\n\nid: 2\r\nevent: vm.phase\r\ndata: {"type":"vm.phase","vm":"a","phase":"launch VMM"}\r\n\r\n';
  it('parses the same messages whatever the chunking; comments and CRLF are handled', () => {
    const whole = new SseParser().push(feed);
    assert.deepEqual(
      whole.map((m) => [m.id, m.event, JSON.parse(m.data).type]),
      [
        ['1', 'vm.state', 'vm.state'],
        ['2', 'vm.phase', 'vm.phase'],
      ],
    );
    for (const size of [1, 2, 3, 7, 50]) {
      const p = new SseParser();
      const got = [];
      for (let i = 0; i < feed.length; i += size) got.push(...p.push(feed.slice(i, i + size)));
      assert.deepEqual(got, whole, `chunks of ${size}`);
    }
  });
  it('multi-line data joins with a newline; a message without data is not one', () => {
    assert.deepEqual(new SseParser().push('data: a\ndata: b\n\nevent: x\n\n'), [{ event: 'message', data: 'a\nb' }]);
  });
  it('one line per event', () => {
    assert.equal(describeVmEvent({ type: 'vm.state', state: 'creating' }), 'creating');
    assert.equal(describeVmEvent({ type: 'vm.phase', phase: 'launch VMM' }), 'phase: launch VMM');
    assert.equal(describeVmEvent({ type: 'vm.state', state: 'failed', error: 'launch VMM: boom' }), 'failed: launch VMM: boom');
    assert.equal(describeVmEvent({ type: 'vm.deleted' }), 'deleted');
  });
});

describe('vms logs --json lines', () => {
  it('splits the source prefix off, across chunks', () => {
    assert.deepEqual(parseLogLine('serial| kestrel: booting'), { source: 'serial', line: 'kestrel: booting' });
    assert.deepEqual(parseLogLine('workload| '), { source: 'workload', line: '' });
    assert.deepEqual(parseLogLine('no prefix'), { source: 'unknown', line: 'no prefix' });
    const l = new LogLineReader();
    assert.deepEqual(l.push('serial| a\nwork'), [{ source: 'serial', line: 'a' }]);
    assert.deepEqual(l.push('load| b\n'), [{ source: 'workload', line: 'b' }]);
    assert.deepEqual(l.push('serial| c'), []);
    assert.deepEqual(l.flush(), [{ source: 'serial', line: 'c' }]);
  });
});

describe('volar completion', () => {
  const dir = mkdtempSync(join(tmpdir(), `volant-completion-${process.pid}-`));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const cases: [string, string[]][] = [
    ['volar ', ['setup', 'vms', 'plugins', 'completion']],
    ['volar --', ['--json', '--state-dir', '--version']],
    ['volar vms ', ['create', 'list', 'logs']],
    ['volar vms list --', ['--json', '--api']],
    ['volar --json vms create web --n', ['--network', '--no-wait']],
    ['volar vms create web --network ', ['bridged', 'dhcp', 'vsock']],
    ['volar plugins build dir --compression ', ['gzip', 'zstd', 'lz4', 'none']],
    ['volar completion ', ['bash', 'zsh']],
  ];

  it('the tree has every command, global options at every level, --version only at the top', () => {
    const nodes = completionTree(buildProgram());
    const byPath = new Map(nodes.map((n) => [n.path, n]));
    for (const p of ['vms/create', 'vms/logs', 'plugins/build', 'kernel/fetch', 'debug/ipam', 'setup', 'completion']) assert.ok(byPath.has(p), p);
    const flags = (p: string) => byPath.get(p)!.options.flatMap((o) => o.flags);
    assert.ok(flags('vms/create').includes('--json') && flags('vms/create').includes('--no-wait'));
    assert.ok(flags('').includes('--version') && !flags('vms/create').includes('--version'));
    assert.throws(() => completionScript(buildProgram(), 'fish'), /use bash or zsh/);
  });

  it('bash: the generated function completes commands, options and choices', () => {
    const file = join(dir, 'volar.bash');
    writeFileSync(file, completionScript(buildProgram(), 'bash'));
    for (const [line, want] of cases) {
      const script = `source ${file}; read -ra COMP_WORDS <<< "$LINE"; [[ "$LINE" == *" " ]] && COMP_WORDS+=(""); COMP_CWORD=$(( \${#COMP_WORDS[@]} - 1 )); _volar; printf '%s\\n' "\${COMPREPLY[@]}"`;
      const got = execFileSync('bash', ['-c', script], { env: { LINE: line, PATH: process.env.PATH }, encoding: 'utf8' }).split('\n').filter(Boolean);
      for (const w of want) assert.ok(got.includes(w), `${JSON.stringify(line)}: ${w} not in ${got.join(' ')}`);
    }
  });

  it('zsh: the generated function offers the same candidates to _describe', (t) => {
    if (strictSkip(t, hasCommand('zsh') ? false : 'zsh is not installed (scripts/install-deps.sh installs it)')) return;
    const file = join(dir, '_volar');
    writeFileSync(file, completionScript(buildProgram(), 'zsh'));
    execFileSync('zsh', ['-n', file]);
    for (const [line, want] of cases) {
      // _describe's last argument names the array of `name:description` items offered.
      const script = `_describe() { local n=\${@[-1]}; local -a a; a=("\${(@P)n}"); print -rl -- "\${a[@]%%:*}" }; compdef() { : }; source ${file}; words=(\${(z)LINE}); [[ "$LINE" == *" " ]] && words+=(""); CURRENT=\${#words}; _volar`;
      const got = execFileSync('zsh', ['-f', '-c', script], { env: { LINE: line, PATH: process.env.PATH }, encoding: 'utf8' }).split('\n').filter(Boolean);
      for (const w of want) assert.ok(got.includes(w), `${JSON.stringify(line)}: ${w} not in ${got.join(' ')}`);
    }
  });
});

describe('volar kernel fetch --json', () => {
  it('prints where the cached kernel is as one JSON object (nothing downloaded again)', { timeout: 600_000 }, async () => {
    const cached = await testKernel();
    const cli = new URL('../../host/cli/main.ts', import.meta.url).pathname;
    const out = execFileSync(process.execPath, ['--import', 'tsx', cli, '--json', 'kernel', 'fetch', '--dest', kernelCacheDir()], { encoding: 'utf8' });
    assert.deepEqual(JSON.parse(out), { version: cached.version, vmlinuz: cached.vmlinuz, modulesDir: cached.modulesDir });
  });
});

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { formatCmdlineParam, parseCmdline, VolantError } from '../../shared/index.js';

describe('parseCmdline splits like the kernel', () => {
  const cases: [string, [string, string | undefined][], string[]?][] = [
    ['', []],
    ['   ', []],
    ['quiet', [['quiet', undefined]]],
    ['console=ttyS0 quiet', [['console', 'ttyS0'], ['quiet', undefined]]],
    ['a=1\tb=2\nc=3', [['a', '1'], ['b', '2'], ['c', '3']]],
    ['x="hello world" y=2', [['x', 'hello world'], ['y', '2']]],
    ['"quoted flag" z', [['quoted flag', undefined], ['z', undefined]]],
    ['"k=v w"', [['k', 'v w']]],
    ['a==b', [['a', '=b']]],
    ['a=', [['a', '']]],
    ['ip=10.0.0.2::10.0.0.1:255.255.255.0:h:eth0:off', [['ip', '10.0.0.2::10.0.0.1:255.255.255.0:h:eth0:off']]],
    ['a=1 -- init args here', [['a', '1']], ['init', 'args', 'here']],
    ['a=1 --', [['a', '1']], []],
    ['a="unterminated value', [['a', 'unterminated value']]],
    ['volant.env=eyJBIjoiMSJ9 volant.mode=vsock', [['volant.env', 'eyJBIjoiMSJ9'], ['volant.mode', 'vsock']]],
    ['ünï=cødé', [['ünï', 'cødé']]],
  ];
  for (const [input, params, init] of cases) {
    test(JSON.stringify(input), () => {
      const c = parseCmdline(input);
      assert.deepEqual(
        c.params.map((p) => [p.key, p.value]),
        params,
      );
      assert.deepEqual([...c.initArgs], init ?? []);
    });
  }

  test('last value wins, like the kernel and init', () => {
    const c = parseCmdline('volant.mode=vsock volant.mode=bridged quiet');
    assert.equal(c.get('volant.mode'), 'bridged');
    assert.equal(c.get('quiet'), '');
    assert.equal(c.get('missing'), undefined);
    assert.equal(c.has('quiet'), true);
    assert.deepEqual([...c.withPrefix('volant.')], [['volant.mode', 'bridged']]);
  });

  test('huge and non-string input are refused', () => {
    assert.throws(() => parseCmdline('a'.repeat(70_000)), VolantError);
    assert.throws(() => parseCmdline(undefined as unknown as string), VolantError);
  });
});

describe('formatCmdlineParam cannot be used to inject a parameter', () => {
  test('plain and quoted values round-trip', () => {
    for (const value of ['ttyS0', 'two words', '', 'a=b=c', 'ünicode', 'tab\there'.replace('\t', ' ')]) {
      const text = `${formatCmdlineParam('k', value)} next=1`;
      const c = parseCmdline(text);
      assert.equal(c.get('k'), value);
      assert.equal(c.get('next'), '1');
      assert.equal(c.params.length, 2);
    }
    assert.equal(formatCmdlineParam('quiet'), 'quiet');
  });
  const hostile: [string, string | undefined][] = [
    ['k', 'x" init=/bin/sh "'],
    ['k', 'line\nbreak'],
    ['k', 'nul\u0000'],
    ['k', 'esc\u001b[2J'],
    ['bad key', 'v'],
    ['k=v', 'v'],
    ['', 'v'],
    ['k"', 'v'],
    ['a'.repeat(65), 'v'],
  ];
  for (const [key, value] of hostile) {
    test(`refuses ${JSON.stringify([key, value])}`, () => {
      assert.throws(() => formatCmdlineParam(key, value), (e: unknown) => e instanceof VolantError && e.code === 'INVALID_ARGUMENT');
    });
  }
});

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { LineSplitter, LogRing } from '../../guest/logs/ring.js';

describe('log ring', () => {
  test('keeps the newest lines under its byte limit, in order, with sequence numbers', () => {
    const ring = new LogRing(100);
    for (let i = 0; i < 50; i++) ring.push('stdout', `line-${i}`);
    const kept = ring.snapshot();
    assert.ok(ring.size.bytes <= 100);
    assert.equal(kept.at(-1)!.text, 'line-49');
    assert.deepEqual(
      kept.map((l) => l.seq),
      kept.map((_, i) => kept[0]!.seq + i),
    );
    assert.equal(ring.dropped + kept.length, 50);
  });
  test('followers see each new line once, and stop when they unsubscribe', () => {
    const ring = new LogRing();
    const seen: string[] = [];
    const stop = ring.follow((l) => seen.push(`${l.stream}:${l.text}`));
    ring.push('stdout', 'a');
    ring.push('stderr', 'b');
    stop();
    ring.push('stdout', 'c');
    assert.deepEqual(seen, ['stdout:a', 'stderr:b']);
  });
  test('memory stays bounded under a long flood', () => {
    const ring = new LogRing(10_000);
    for (let i = 0; i < 200_000; i++) ring.push('stdout', 'x'.repeat(50));
    assert.ok(ring.size.bytes <= 10_000);
    assert.ok(ring.size.lines <= 10_000 / 51 + 1);
  });
});

describe('line splitter', () => {
  const split = (chunks: string[], max = 8): string[] => {
    const out: string[] = [];
    const s = new LineSplitter((t) => out.push(t), max);
    for (const c of chunks) s.write(Buffer.from(c));
    s.end();
    return out;
  };
  const cases: [string, string[], string[]][] = [
    ['one line', ['abc\n'], ['abc']],
    ['lines across chunks', ['ab', 'c\nde', 'f\n'], ['abc', 'def']],
    ['CRLF', ['a\r\nb\r\n'], ['a', 'b']],
    ['empty lines', ['\n\n'], ['', '']],
    ['a last line without newline is flushed at end', ['abc'], ['abc']],
    ['an overlong line is cut at the limit', ['abcdefghijkl\n'], ['abcdefgh', 'ijkl']],
    ['exactly the limit then newline: one line', ['abcdefgh\n'], ['abcdefgh']],
  ];
  for (const [name, chunks, expected] of cases) test(name, () => assert.deepEqual(split(chunks), expected));
});

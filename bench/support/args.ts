/**
 * Command-line flags the benchmarks share: `--NAME N`, an integer in 1..max, or the default.
 * A wrong value stops the bench with what was wrong and what is allowed.
 */

export function integerFlag(argv: readonly string[], name: string, fallback: number, max: number): number {
  const at = argv.indexOf(name);
  if (at < 0) return fallback;
  const n = Number(argv[at + 1]);
  if (!Number.isInteger(n) || n < 1 || n > max) throw new Error(`${name} takes an integer from 1 to ${max}, got ${JSON.stringify(argv[at + 1])}`);
  return n;
}

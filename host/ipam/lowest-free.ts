/**
 * "The lowest free number in a range" over an indexed integer column, answered by SQLite without
 * reading the taken numbers into JS: either the start is free, or the answer is one past the
 * first taken number whose successor is not taken (each step an index probe).
 *
 * Lowest-first allocation packs the range densely from its start, so that walk would grow with
 * every lease. A persisted hint (`allocation_hints`) remembers where the taken prefix ends:
 * everything in [start, hint) is taken or skipped. A search starts at the hint; delete triggers
 * move it back down on every release. The hint is keyed by the range and the skip list, so a
 * changed pool or reservation set starts from scratch.
 *
 * The hint is only rewritten when a search walked more than HINT_SLACK numbers past it: a hint
 * that is a little low is still true, and costs a walk of at most that many index probes, while
 * writing it costs a page in every transaction. So a lease that is released and taken again (the
 * common churn) writes no hint at all, and filling the range rewrites it once per HINT_SLACK.
 * Call `take` inside the transaction that inserts the chosen number; the table's UNIQUE/PRIMARY
 * KEY stays the final guard against handing a number out twice.
 */

import type Database from 'better-sqlite3';

/** The integer columns we allocate from; fixed here so no caller text reaches the SQL. */
export const NUMBERED_COLUMNS = {
  leases: { table: 'ip_leases', column: 'ip_num', hint: 'ip' },
  cids: { table: 'vms', column: 'cid', hint: 'cid' },
} as const;

export type NumberedColumn = keyof typeof NUMBERED_COLUMNS;

/** A search may walk this many taken numbers past the hint before the hint is moved up. */
export const HINT_SLACK = 16;

export class LowestFree {
  private readonly gap: Database.Statement<{ from: number; to: number }, { free: number | null }>;
  private readonly readHint: Database.Statement<[string], { pool_key: string; lowest_maybe_free: number }>;
  private readonly writeHint: Database.Statement<[string, string, number]>;
  private readonly kind: string;

  constructor(db: Database.Database, which: NumberedColumn) {
    const { table, column, hint } = NUMBERED_COLUMNS[which];
    this.kind = hint;
    this.gap = db.prepare(`
      SELECT CASE
        WHEN NOT EXISTS (SELECT 1 FROM ${table} WHERE ${column} = @from) THEN @from
        ELSE (SELECT t.${column} + 1 FROM ${table} t
              WHERE t.${column} >= @from AND t.${column} < @to
                AND NOT EXISTS (SELECT 1 FROM ${table} n WHERE n.${column} = t.${column} + 1)
              ORDER BY t.${column} LIMIT 1)
      END AS free`);
    this.readHint = db.prepare('SELECT pool_key, lowest_maybe_free FROM allocation_hints WHERE kind = ?');
    this.writeHint = db.prepare(`INSERT INTO allocation_hints (kind, pool_key, lowest_maybe_free) VALUES (?, ?, ?)
      ON CONFLICT(kind) DO UPDATE SET pool_key = excluded.pool_key, lowest_maybe_free = excluded.lowest_maybe_free`);
  }

  /**
   * The lowest number in [from, to] that is neither taken in the table nor in `skip` (sorted
   * ascending; small, e.g. reserved addresses), or undefined when the range is full. May move
   * the hint past it (the caller is about to take it), so call it only when you insert it.
   */
  take(from: number, to: number, skip: readonly number[] = []): number | undefined {
    const key = `${from}-${to}:${skip.join(',')}`;
    const hint = this.readHint.get(this.kind);
    const ours = hint !== undefined && hint.pool_key === key;
    const start = ours ? Math.max(from, hint.lowest_maybe_free) : from;
    const free = this.search(start, to, skip);
    const next = free === undefined ? to + 1 : free + 1;
    if (!ours || next - start > HINT_SLACK) this.writeHint.run(this.kind, key, next);
    return free;
  }

  /** The same answer as `take` without the hint and without recording anything. */
  search(from: number, to: number, skip: readonly number[] = []): number | undefined {
    let lo = from;
    let s = 0;
    while (lo <= to) {
      const free = this.gap.get({ from: lo, to })?.free ?? null;
      if (free === null || free > to) return undefined;
      while (s < skip.length && skip[s]! < free) s++;
      if (s < skip.length && skip[s] === free) {
        lo = free + 1;
        continue;
      }
      return free;
    }
    return undefined;
  }
}

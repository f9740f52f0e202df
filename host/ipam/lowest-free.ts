/**
 * "The lowest free number in a range" over an indexed integer column, answered by SQLite without
 * reading the taken numbers into JS: either the range start is free, or the answer is one past
 * the first taken number whose successor is not taken. Each step is an index probe, so a /16
 * pool with thousands of leases costs one query, not 65k rows. Call it inside the transaction
 * that then inserts the chosen number; the table's UNIQUE/PRIMARY KEY is the final guard.
 */

import type Database from 'better-sqlite3';

/** The integer columns we allocate from; fixed here so no caller text reaches the SQL. */
export const NUMBERED_COLUMNS = {
  leases: { table: 'ip_leases', column: 'ip_num' },
  cids: { table: 'vms', column: 'cid' },
} as const;

export type NumberedColumn = keyof typeof NUMBERED_COLUMNS;

export class LowestFree {
  private readonly stmt: Database.Statement<{ from: number; to: number }, { free: number | null }>;

  constructor(db: Database.Database, which: NumberedColumn) {
    const { table, column } = NUMBERED_COLUMNS[which];
    this.stmt = db.prepare(`
      SELECT CASE
        WHEN NOT EXISTS (SELECT 1 FROM ${table} WHERE ${column} = @from) THEN @from
        ELSE (SELECT t.${column} + 1 FROM ${table} t
              WHERE t.${column} >= @from AND t.${column} < @to
                AND NOT EXISTS (SELECT 1 FROM ${table} n WHERE n.${column} = t.${column} + 1)
              ORDER BY t.${column} LIMIT 1)
      END AS free`);
  }

  /**
   * The lowest number in [from, to] that is neither taken in the table nor in `skip` (sorted
   * ascending; small, e.g. reserved addresses), or undefined when the range is full.
   */
  find(from: number, to: number, skip: readonly number[] = []): number | undefined {
    let lo = from;
    let s = 0;
    while (lo <= to) {
      const row = this.stmt.get({ from: lo, to });
      const free = row?.free ?? null;
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

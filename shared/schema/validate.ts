/**
 * Turns TypeBox's structural errors into `Problem`s with JSON paths and readable messages, and
 * never throws on any input: a validation returns every problem it finds (up to a cap) so a user
 * fixes a file in one pass.
 */

import type { TSchema } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import type { Problem } from '../errors.js';

export const MAX_PROBLEMS = 100;

export type Validated<T> = { ok: true; value: T } | { ok: false; problems: Problem[] };

function describe(schema: TSchema, fallback: string): string {
  const anyOf = (schema as { anyOf?: { const?: unknown }[] }).anyOf;
  if (anyOf?.every((s) => s.const !== undefined)) {
    return `must be one of ${anyOf.map((s) => JSON.stringify(s.const)).join(', ')}`;
  }
  const pattern = (schema as { pattern?: string }).pattern;
  if (pattern && (schema as { description?: string }).description) {
    return `${fallback}: ${(schema as { description?: string }).description}`;
  }
  return fallback;
}

function unexpectedProperty(schema: TSchema): string {
  const patterns = Object.keys((schema as { patternProperties?: object }).patternProperties ?? {});
  return patterns.length > 0 ? `name not allowed (must match ${patterns.join(' or ')})` : 'unknown field (check the spelling)';
}

export function structuralProblems(schema: TSchema, value: unknown): Problem[] {
  const problems: Problem[] = [];
  const seen = new Set<string>();
  for (const e of Value.Errors(schema, value)) {
    const path = e.path || '/';
    // A union reports one error per branch; the first, made readable, says enough.
    if (seen.has(path)) continue;
    seen.add(path);
    const message = /Unexpected property/i.test(e.message) ? unexpectedProperty(e.schema) : describe(e.schema, e.message.replace(/^Expected/, 'expected'));
    problems.push({ path, message });
    if (problems.length >= MAX_PROBLEMS) break;
  }
  return problems;
}

export function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * `VOLANT_*` environment overrides. Each config key has exactly one variable, derived from its
 * path: top-level `state_dir` is `VOLANT_STATE_DIR`, `network.host_cidr` is
 * `VOLANT_NETWORK_HOST_CIDR`. Lists are comma-separated, reservations are `vm=ip,vm2=ip`,
 * booleans `true`/`false`. Variables that name no key (`VOLANT_API`, `VOLANT_TOKEN`, ...) belong
 * to other tools and are left alone. Conversion never guesses: a value that does not convert is
 * passed through as text so validation names the variable's key and value.
 */

import type { TSchema } from '@sinclair/typebox';
import { VolantConfig } from './schema.js';

export const ENV_PREFIX = 'VOLANT_';

interface EnvKey {
  variable: string;
  path: string[];
  schema: TSchema;
}

function kindOf(schema: TSchema): string {
  return (schema as { type?: string }).type ?? (Array.isArray((schema as { anyOf?: unknown[] }).anyOf) ? 'string' : 'unknown');
}

/** Every (variable, config path) pair, computed from the schema so the two never drift apart. */
export function environmentKeys(): EnvKey[] {
  const keys: EnvKey[] = [];
  for (const [top, schema] of Object.entries(VolantConfig.properties) as [string, TSchema][]) {
    const props = (schema as { properties?: Record<string, TSchema> }).properties;
    if (kindOf(schema) === 'object' && props) {
      for (const [leaf, leafSchema] of Object.entries(props)) {
        keys.push({ variable: `${ENV_PREFIX}${top}_${leaf}`.toUpperCase(), path: [top, leaf], schema: leafSchema });
      }
    } else {
      keys.push({ variable: `${ENV_PREFIX}${top}`.toUpperCase(), path: [top], schema });
    }
  }
  return keys;
}

function convert(text: string, schema: TSchema): unknown {
  switch (kindOf(schema)) {
    case 'integer':
    case 'number':
      return /^-?\d+(\.\d+)?$/.test(text.trim()) ? Number(text) : text;
    case 'boolean':
      return text === 'true' ? true : text === 'false' ? false : text;
    case 'array':
      return text.trim() === '' ? [] : text.split(',').map((s) => s.trim());
    case 'object': {
      const out: Record<string, string> = {};
      for (const pair of text.split(',')) {
        if (pair.trim() === '') continue;
        const eq = pair.indexOf('=');
        if (eq < 0) return text;
        out[pair.slice(0, eq).trim()] = pair.slice(eq + 1).trim();
      }
      return out;
    }
    default:
      return text;
  }
}

/** The partial config the environment sets (only keys whose variable is present). */
export function configFromEnv(env: Record<string, string | undefined>): Record<string, unknown> {
  const out: Record<string, Record<string, unknown> | unknown> = {};
  for (const key of environmentKeys()) {
    const text = env[key.variable];
    if (text === undefined) continue;
    const value = convert(text, key.schema);
    if (key.path.length === 1) out[key.path[0]!] = value;
    else {
      const top = key.path[0]!;
      const section = (out[top] ?? {}) as Record<string, unknown>;
      section[key.path[1]!] = value;
      out[top] = section;
    }
  }
  return out;
}

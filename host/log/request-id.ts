/**
 * Request ids, the thread between a client, volantd's log and the guest: an API or ingress
 * request keeps the `X-Request-Id` its client sent when it passes this rule (short, printable, no
 * separators that could split a log line or a header), else gets a fresh UUID. The API answers
 * with it, the ingress forwards it to the guest and back, and both log it as `reqId`.
 */

import { randomUUID } from 'node:crypto';

export const REQUEST_ID_HEADER = 'x-request-id';
export const REQUEST_ID = /^[A-Za-z0-9._:+/=@-]{1,200}$/;

/** The client's id when it passes the rule, else a new one. */
export function requestIdFor(given: string | string[] | undefined): string {
  return typeof given === 'string' && REQUEST_ID.test(given) ? given : randomUUID();
}

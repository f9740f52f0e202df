/**
 * What a proxy of ours may relay from an upstream's response head (the guest's answer through the
 * ingress and kestrel, an internet server's through the egress proxy). The upstream is not
 * trusted: a head that breaks these rules becomes a 502 for the client, never a relayed oddity,
 * and never a `writeHead` that throws half-way (Node stores the status text before it checks it,
 * so a throw there leaves a response that can no longer be answered).
 *
 *  - status code: an integer 100-599 (parsers accept any three digits);
 *  - reason phrase: HTAB, SP, visible ASCII and obs-text only (RFC 9112 §4; llhttp lets control
 *    bytes through, and a decoder may have turned bytes into characters above U+00FF);
 *  - field names are tokens; field values hold no CR, LF, NUL or other control byte but HTAB
 *    (RFC 9110 §5.5);
 *  - framing (RFC 9112 §6): Content-Length is one decimal value (repeats or a list of the same
 *    value count as one; differing values are refused); Transfer-Encoding appears once and is
 *    exactly `chunked` (anything else would reach the client re-framed but still encoded);
 *    never both; 1xx and 204 carry no body framing (a 204 may say `Content-Length: 0`).
 *
 * Pure: the caller passes what its parser reported, with header names and values as strings
 * (latin1 for raw bytes). `undefined` means the head may be relayed.
 */

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
/** Any byte a field value or reason phrase must not hold. */
const BAD_TEXT = /[^\t\x20-\x7e\x80-\xff]/;
const DIGITS = /^[0-9]{1,15}$/;

export const MIN_STATUS = 100;
export const MAX_STATUS = 599;

export function responseHeadProblem(status: number, reason: string, headers: readonly string[]): string | undefined {
  if (!Number.isInteger(status) || status < MIN_STATUS || status > MAX_STATUS) return `status code ${status} is not 100-599`;
  if (BAD_TEXT.test(reason)) return 'the reason phrase holds a control character';
  let contentLength: string | undefined;
  let transferEncodings = 0;
  let chunked = false;
  for (let i = 0; i < headers.length; i += 2) {
    const name = headers[i]!;
    const value = headers[i + 1]!;
    if (!TOKEN.test(name)) return `header name ${JSON.stringify(name.slice(0, 40))} is not a token`;
    if (BAD_TEXT.test(value)) return `header ${name} holds a control character in its value`;
    if (name.length === 14 && name.toLowerCase() === 'content-length') {
      for (const part of value.split(',')) {
        const v = part.trim();
        if (!DIGITS.test(v)) return `Content-Length ${JSON.stringify(value.slice(0, 40))} is not a decimal number`;
        if (contentLength !== undefined && contentLength !== v) return 'differing Content-Length values';
        contentLength = v;
      }
    } else if (name.length === 17 && name.toLowerCase() === 'transfer-encoding') {
      transferEncodings++;
      chunked = value.trim().toLowerCase() === 'chunked';
    }
  }
  if (transferEncodings > 1) return 'more than one Transfer-Encoding header';
  if (transferEncodings === 1 && !chunked) return 'Transfer-Encoding other than "chunked"';
  if (transferEncodings === 1 && contentLength !== undefined) return 'both Content-Length and Transfer-Encoding';
  if (status < 200 || status === 204) {
    if (transferEncodings > 0 || (contentLength !== undefined && contentLength.replace(/^0+/, '') !== '')) return `a ${status} response with a body`;
  }
  return undefined;
}

/** A header object (undici's `headers`, Node's `IncomingHttpHeaders`) as the flat list the check takes. */
export function flatHeaders(headers: Readonly<Record<string, string | string[] | undefined>>): string[] {
  const out: string[] = [];
  for (const name in headers) {
    const v = headers[name];
    if (v === undefined) continue;
    if (Array.isArray(v)) for (const one of v) out.push(name, one);
    else out.push(name, v);
  }
  return out;
}

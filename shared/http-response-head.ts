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
 * Pure: the caller passes what its parser reported, with header names as strings and values as
 * strings (latin1) or raw bytes. `undefined` means the head may be relayed. `ResponseHeadCheck`
 * applies the same rules field by field, for a proxy that walks the raw head once anyway.
 */

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const DIGITS = /^[0-9]{1,15}$/;
/** Field names already found to be tokens (they repeat across responses); bounded. */
const VALID_NAMES = new Set<string>();
const VALID_NAMES_MAX_ENTRIES = 2048;

export const MIN_STATUS = 100;
export const MAX_STATUS = 599;

/** Any character a field value or reason phrase must not hold (CTL but HTAB, DEL, above U+00FF). */
const BAD_TEXT = /[^\t\x20-\x7e\x80-\xff]/;

function hasBadText(text: string | Buffer): boolean {
  if (typeof text === 'string') return BAD_TEXT.test(text);
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if ((c < 0x20 && c !== 0x09) || c === 0x7f) return true;
  }
  return false;
}

function isToken(name: string): boolean {
  if (VALID_NAMES.has(name)) return true;
  if (!TOKEN.test(name)) return false;
  if (VALID_NAMES.size < VALID_NAMES_MAX_ENTRIES) VALID_NAMES.add(name);
  return true;
}

function isNamed(name: string, lower: string): boolean {
  return name.length === lower.length && (name === lower || name.toLowerCase() === lower);
}

/**
 * The rules applied one field at a time, for a proxy that walks the raw head once anyway (the
 * ingress): `field` for each header (the value as a string or as raw bytes), then `finish`.
 * The first problem found is kept.
 */
export class ResponseHeadCheck {
  problem: string | undefined;
  private contentLength: string | undefined;
  private transferEncodings = 0;
  private chunked = false;

  /** False once the head is refused. */
  field(name: string, value: string | Buffer): boolean {
    if (this.problem !== undefined) return false;
    if (!isToken(name)) this.problem = `header name ${JSON.stringify(name.slice(0, 40))} is not a token`;
    else if (hasBadText(value)) this.problem = `header ${name} holds a control character in its value`;
    else if (isNamed(name, 'content-length')) this.contentLengthOf(typeof value === 'string' ? value : value.toString('latin1'));
    else if (isNamed(name, 'transfer-encoding')) {
      this.transferEncodings++;
      this.chunked = (typeof value === 'string' ? value : value.toString('latin1')).trim().toLowerCase() === 'chunked';
    }
    return this.problem === undefined;
  }

  private contentLengthOf(value: string): void {
    if (DIGITS.test(value)) {
      if (this.contentLength !== undefined && this.contentLength !== value) this.problem = 'differing Content-Length values';
      this.contentLength = value;
      return;
    }
    for (const part of value.split(',')) {
      const v = part.trim();
      if (!DIGITS.test(v)) {
        this.problem = `Content-Length ${JSON.stringify(value.slice(0, 40))} is not a decimal number`;
        return;
      }
      if (this.contentLength !== undefined && this.contentLength !== v) {
        this.problem = 'differing Content-Length values';
        return;
      }
      this.contentLength = v;
    }
  }

  /** The verdict on the whole head, given its status line. */
  finish(status: number, reason: string): string | undefined {
    if (this.problem !== undefined) return this.problem;
    if (!Number.isInteger(status) || status < MIN_STATUS || status > MAX_STATUS) return `status code ${status} is not 100-599`;
    if (hasBadText(reason)) return 'the reason phrase holds a control character';
    if (this.transferEncodings > 1) return 'more than one Transfer-Encoding header';
    if (this.transferEncodings === 1 && !this.chunked) return 'Transfer-Encoding other than "chunked"';
    if (this.transferEncodings === 1 && this.contentLength !== undefined) return 'both Content-Length and Transfer-Encoding';
    if (status < 200 || status === 204) {
      if (this.transferEncodings > 0 || (this.contentLength !== undefined && this.contentLength.replace(/^0+/, '') !== '')) return `a ${status} response with a body`;
    }
    return undefined;
  }
}

export function responseHeadProblem(status: number, reason: string, headers: readonly string[]): string | undefined {
  const check = new ResponseHeadCheck();
  for (let i = 0; i < headers.length && check.field(headers[i]!, headers[i + 1]!); i += 2);
  return check.finish(status, reason);
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

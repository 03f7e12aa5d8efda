/**
 * Stage 1 — canonical-path check. Works on the RAW request target (`request.raw.url`), before any
 * decoding or normalisation, and rejects everything whose meaning could differ between the sidecar
 * and the upstream (path confusion / request smuggling through normalisation differences):
 *
 * - not origin-form (RFC 9112 §3.2.1): absolute-form `http://…`, authority-form, asterisk-form `*`;
 * - characters outside visible ASCII (controls, space, DEL, non-ASCII — RFC 3986 §2 allows none raw);
 * - a fragment `#` (never sent by a conforming client, RFC 9110 §7.1) and backslashes `\`;
 * - in the path: empty segments (`//`), dot segments `.`/`..` (RFC 3986 §5.2.4), `;` path
 *   parameters, and percent-encodings of `/` `\` `.` (`%2F %5C %2E`, any case), of control
 *   characters, and of any other unreserved character (RFC 3986 §2.3: such URIs are equivalent to
 *   the decoded form, so the encoded one is not canonical), plus malformed `%` escapes and
 *   encoded octets that are not UTF-8 (overlong forms such as `%C0%AF`, surrogates, stray bytes).
 *
 * Matching afterwards is case-sensitive and byte-exact, so `/API/V1/WORKS` simply matches no rule.
 */
import { ProblemError } from '../problem.ts';

/** The split request target: `path` (raw, canonical) and `query` (raw, without `?`; '' if none). */
export type CanonicalTarget = { path: string; query: string };

const VISIBLE_ASCII = /^[\x21-\x7e]*$/;
const PCT = /%([0-9A-Fa-f]{2})?/g;
// Unreserved characters (RFC 3986 §2.3): must not be percent-encoded in a canonical path.
const UNRESERVED = /[A-Za-z0-9\-._~]/;

/**
 * Validate a raw request target and split it.
 * @param rawUrl the request line's target exactly as received (Node's `IncomingMessage.url`).
 * @returns `{path, query}` — unchanged substrings of `rawUrl`.
 * @throws ProblemError 400 `non-canonical-path` naming the first rule the target breaks.
 */
export function checkCanonicalPath(rawUrl: string | undefined): CanonicalTarget {
  const reject = (why: string): never => {
    throw new ProblemError(400, 'non-canonical-path', `The request target is not canonical: ${why}.`);
  };
  if (!rawUrl) return reject('empty request target');
  if (!rawUrl.startsWith('/')) return reject('only origin-form targets (starting with "/") are accepted');
  if (!VISIBLE_ASCII.test(rawUrl)) return reject('control, space or non-ASCII characters');
  if (rawUrl.includes('#')) return reject('a fragment ("#")');
  if (rawUrl.includes('\\')) return reject('a backslash');

  const q = rawUrl.indexOf('?');
  const path = q === -1 ? rawUrl : rawUrl.slice(0, q);
  const query = q === -1 ? '' : rawUrl.slice(q + 1);

  if (path.includes('//')) return reject('an empty path segment ("//")');
  if (path.includes(';')) return reject('a path parameter (";")');
  for (const segment of path.split('/').slice(1)) {
    if (segment === '.' || segment === '..') return reject('a dot segment');
  }
  for (const m of path.matchAll(PCT)) {
    const hex = m[1];
    if (!hex) return reject('a malformed percent-encoding');
    const code = Number.parseInt(hex, 16);
    if (code === 0x2f || code === 0x5c) return reject('an encoded "/" or "\\"');
    if (code === 0x2e) return reject('an encoded "."');
    if (code < 0x20 || code === 0x7f) return reject('an encoded control character');
    if (UNRESERVED.test(String.fromCharCode(code))) return reject('an encoded unreserved character');
  }
  // RFC 3986 §2.5 / RFC 3629: encoded octets are UTF-8; overlong forms (%C0%AF = "/" to a lax
  // decoder), surrogates and stray bytes are not, and readers disagree on what they mean.
  try {
    decodeURIComponent(path);
  } catch {
    return reject('a percent-encoding that is not UTF-8 (e.g. an overlong form)');
  }
  for (const m of query.matchAll(PCT)) if (!m[1]) return reject('a malformed percent-encoding in the query');
  return { path, query };
}

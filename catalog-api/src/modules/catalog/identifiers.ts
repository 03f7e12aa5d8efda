/**
 * Music-industry identifiers: ISWC (works), IPI name number (interested parties), ISRC (recordings).
 *
 * Every validator is pure and total: it never throws, it returns either `{ ok: true, value }` with the
 * normalised (storage) form or `{ ok: false, reason }` with a short machine-readable reason:
 * `format` (wrong shape) or `check_digit` (shape right, check digit(s) wrong).
 *
 * Sources:
 * - ISWC: ISO 15707:2022 "Information and documentation — International standard musical work code
 *   (ISWC)"; the CISAC ISWC Users' Manual. Form `T-ddd.ddd.ddd-c`; check digit
 *   S = 1 + Σ_{i=1..9} i·dᵢ, c = (10 − S mod 10) mod 10. Worked example from the standard:
 *   T-034.524.680-1.
 * - IPI name number: CISAC IPI system (Interested Parties Information, successor of CAE since 2001),
 *   11 digits, the last two a modulus-101 check number over the first nine digits with weights
 *   10, 9, …, 2: r = (Σ_{i=0..8} dᵢ·(10 − i)) mod 101; check = 0 when r = 0, else (101 − r) mod 100.
 *   As implemented by django-music-publisher (music_publisher/validators.py, `check_ipi_digit`,
 *   github.com/matijakolaric-com/django-music-publisher), whose test vector 00000000199 we reuse.
 *   Note the `mod 100`: r = 1 gives check 00, like r = 0 — the published algorithm, kept as is.
 * - ISRC: ISO 3901:2019 and the IFPI ISRC Handbook (4th ed.): 12 characters CC XXX YY NNNNN —
 *   country code (2 letters), registrant code (3 alphanumerics), year of reference (2 digits),
 *   designation code (5 digits). Displayed as `CC-XXX-YY-NNNNN`; no check digit, so syntax only.
 */

/** The outcome of a validation: the normalised value, or why it is invalid. */
export type IdentifierResult = { ok: true; value: string } | { ok: false; reason: 'format' | 'check_digit' };

const ISWC_DOTTED = /^T-(\d{3})\.(\d{3})\.(\d{3})-(\d)$/;
const ISWC_COMPACT = /^T(\d{9})(\d)$/;

/**
 * The ISWC check digit for nine digits: S = 1 + Σ i·dᵢ (i = 1..9), c = (10 − S mod 10) mod 10.
 * @param nineDigits exactly nine ASCII digits
 * @returns the check digit 0..9
 * @throws RangeError when `nineDigits` is not nine digits
 */
export function iswcCheckDigit(nineDigits: string): number {
  if (!/^\d{9}$/.test(nineDigits)) throw new RangeError('iswcCheckDigit needs nine digits');
  let s = 1;
  for (let i = 0; i < 9; i++) s += (i + 1) * Number(nineDigits[i]);
  return (10 - (s % 10)) % 10;
}

/**
 * Validate an ISWC given as `T-034.524.680-1` (dotted) or `T0345246801` (compact). Upper-case `T`
 * only; surrounding whitespace is ignored; no other separators are accepted.
 * @returns the compact storage form `T` + 10 digits, or the reason (`format` | `check_digit`)
 */
export function parseIswc(input: string): IdentifierResult {
  const s = input.trim();
  const m = ISWC_DOTTED.exec(s) ?? ISWC_COMPACT.exec(s);
  if (!m) return { ok: false, reason: 'format' };
  const digits = m.length === 5 ? `${m[1]}${m[2]}${m[3]}` : m[1]!;
  const check = m.length === 5 ? m[4]! : m[2]!;
  if (iswcCheckDigit(digits) !== Number(check)) return { ok: false, reason: 'check_digit' };
  return { ok: true, value: `T${digits}${check}` };
}

/**
 * Format a stored (compact) ISWC for display: `T0345246801` → `T-034.524.680-1`.
 * Values that are not in the compact form are returned unchanged (never throws).
 */
export function formatIswc(compact: string): string {
  const m = ISWC_COMPACT.exec(compact);
  if (!m) return compact;
  const d = m[1]!;
  return `T-${d.slice(0, 3)}.${d.slice(3, 6)}.${d.slice(6, 9)}-${m[2]}`;
}

/**
 * The two-digit IPI name number check for nine base digits (weights 10..2, modulus 101).
 * @param nineDigits exactly nine ASCII digits
 * @returns the check number 0..99 (rendered with two digits)
 * @throws RangeError when `nineDigits` is not nine digits
 */
export function ipiNameCheck(nineDigits: string): number {
  if (!/^\d{9}$/.test(nineDigits)) throw new RangeError('ipiNameCheck needs nine digits');
  let sum = 0;
  for (let i = 0; i < 9; i++) sum += Number(nineDigits[i]) * (10 - i);
  const r = sum % 101;
  return r === 0 ? 0 : (101 - r) % 100;
}

/**
 * Validate an IPI name number: exactly 11 ASCII digits (leading zeros significant; surrounding
 * whitespace ignored) whose last two digits are {@link ipiNameCheck} of the first nine.
 * @returns the 11-digit storage form, or the reason (`format` | `check_digit`)
 */
export function parseIpiNameNumber(input: string): IdentifierResult {
  const s = input.trim();
  if (!/^\d{11}$/.test(s)) return { ok: false, reason: 'format' };
  if (ipiNameCheck(s.slice(0, 9)) !== Number(s.slice(9))) return { ok: false, reason: 'check_digit' };
  return { ok: true, value: s };
}

const ISRC_HYPHENATED = /^([A-Z]{2})-([A-Z0-9]{3})-(\d{2})-(\d{5})$/;
const ISRC_COMPACT = /^([A-Z]{2})([A-Z0-9]{3})(\d{2})(\d{5})$/;

/**
 * Validate an ISRC given as `CC-XXX-YY-NNNNN` or compact `CCXXXYYNNNNN` (letters case-insensitive,
 * optional `ISRC ` prefix as printed on products; surrounding whitespace ignored). Syntax only: the
 * ISRC has no check digit and the country/registrant codes are not looked up.
 * @returns the upper-case 12-character storage form, or `{ ok: false, reason: 'format' }`
 */
export function parseIsrc(input: string): IdentifierResult {
  const s = input.trim().toUpperCase().replace(/^ISRC\s+/, '');
  const m = ISRC_HYPHENATED.exec(s) ?? ISRC_COMPACT.exec(s);
  if (!m) return { ok: false, reason: 'format' };
  return { ok: true, value: `${m[1]}${m[2]}${m[3]}${m[4]}` };
}

/**
 * Format a stored ISRC for display: `USRC17607839` → `US-RC1-76-07839`; other values unchanged.
 */
export function formatIsrc(compact: string): string {
  const m = ISRC_COMPACT.exec(compact);
  return m ? `${m[1]}-${m[2]}-${m[3]}-${m[4]}` : compact;
}

/** Human-readable reason texts for the API's `errors[].reason`. */
export const IDENTIFIER_REASONS = {
  iswc: { format: 'must be an ISWC like T-034.524.680-1 or T0345246801', check_digit: 'ISWC check digit does not match' },
  ipi: { format: 'must be an IPI name number of exactly 11 digits', check_digit: 'IPI name number check digits (mod 101) do not match' },
  isrc: { format: 'must be an ISRC like CC-XXX-YY-NNNNN or CCXXXYYNNNNN', check_digit: 'ISRC has no check digit' },
} as const;

/**
 * Check-digit helpers for the music identifiers the seed generates. The catalog API owns the
 * request validators; these are kept here (for now) so the seed produces values those validators
 * accept. Sources are cited per function; the database itself only checks the syntax
 * (migrations/0002_publishers.ts).
 */

const NINE_DIGITS = /^[0-9]{9}$/;

/**
 * ISWC check digit for the nine digits after the `T` prefix.
 * Algorithm (ISO 15707 / CISAC ISWC): S = 1 + Σ i·dᵢ for i = 1..9 (d₁ = leftmost digit);
 * c = (10 − S mod 10) mod 10. Example: T-034.524.680-1 → S = 179, c = 1.
 * Sources: ../shared/ARCHITECTURE.md "Identifiers"; CISAC ISWC User's Manual (check digit), also
 * implemented as `check_iswc_digit(…, weight=1)` in django-music-publisher `music_publisher/validators.py`.
 * @param digits exactly nine ASCII digits.
 * @returns the check digit, 0..9.
 * @throws RangeError when `digits` is not nine digits.
 */
export function iswcCheckDigit(digits: string): number {
  if (!NINE_DIGITS.test(digits)) throw new RangeError(`ISWC body must be 9 digits, got ${JSON.stringify(digits)}`);
  let s = 1;
  for (let i = 0; i < 9; i++) s += (i + 1) * Number(digits[i]);
  return (10 - (s % 10)) % 10;
}

/**
 * The normalised ISWC (`T` + 10 digits, the storage form of docs/CONTRACTS.md) for a work number.
 * @param n integer 0..999 999 999 (the nine-digit work identifier, zero-padded).
 * @throws RangeError when `n` is out of range or not an integer.
 */
export function makeIswc(n: number): string {
  if (!Number.isInteger(n) || n < 0 || n > 999_999_999) throw new RangeError(`ISWC number out of range: ${n}`);
  const body = String(n).padStart(9, '0');
  return `T${body}${iswcCheckDigit(body)}`;
}

/**
 * Whether `value` is a normalised ISWC (`^T[0-9]{10}$`) with a correct check digit.
 * The dotted form `T-034.524.680-1` is not accepted here (normalise it first).
 */
export function isValidIswc(value: string): boolean {
  if (!/^T[0-9]{10}$/.test(value)) return false;
  return iswcCheckDigit(value.slice(1, 10)) === Number(value[10]);
}

/** The dotted display form of a normalised ISWC: `T0345246801` → `T-034.524.680-1`. */
export function formatIswc(value: string): string {
  return `T-${value.slice(1, 4)}.${value.slice(4, 7)}.${value.slice(7, 10)}-${value.slice(10)}`;
}

/**
 * The two check digits of a CISAC IPI name number for its first nine digits.
 * Algorithm (mod 101): Σ = Σ dᵢ·(11 − i) for i = 1..9 (weights 10, 9, …, 2 from the left);
 * r = Σ mod 101; check = 0 when r = 0, else (101 − r) mod 100, written as two digits.
 * (r = 1 gives 100, which does not fit two digits and wraps to 00.) Example: 00014107338 —
 * Σ(000141073) = 63, (101 − 63) = 38.
 * Sources: CISAC IPI system (the 11-digit IPI name number ends in a mod-101 check over the first
 * nine digits); the algorithm as implemented by `check_ipi_digit` in django-music-publisher
 * `music_publisher/validators.py` (CWR tooling); ../shared/ARCHITECTURE.md "Identifiers".
 * @param digits exactly nine ASCII digits.
 * @returns two digits as a string, "00".."99".
 * @throws RangeError when `digits` is not nine digits.
 */
export function ipiNameCheckDigits(digits: string): string {
  if (!NINE_DIGITS.test(digits)) throw new RangeError(`IPI name number body must be 9 digits, got ${JSON.stringify(digits)}`);
  let sum = 0;
  for (let i = 0; i < 9; i++) sum += Number(digits[i]) * (10 - i);
  const r = sum % 101;
  const check = r === 0 ? 0 : (101 - r) % 100;
  return String(check).padStart(2, '0');
}

/**
 * An 11-digit IPI name number for a nine-digit base.
 * @param n integer 0..999 999 999.
 * @throws RangeError when `n` is out of range or not an integer.
 */
export function makeIpiNameNumber(n: number): string {
  if (!Number.isInteger(n) || n < 0 || n > 999_999_999) throw new RangeError(`IPI base out of range: ${n}`);
  const body = String(n).padStart(9, '0');
  return body + ipiNameCheckDigits(body);
}

/** Whether `value` is 11 digits whose last two are the mod-101 check of the first nine. */
export function isValidIpiNameNumber(value: string): boolean {
  return /^[0-9]{11}$/.test(value) && ipiNameCheckDigits(value.slice(0, 9)) === value.slice(9);
}

/**
 * A normalised ISRC `CCXXXYYNNNNN` (ISO 3901: country code, 3-character registrant, 2-digit year
 * of reference, 5-digit designation code; no check digit).
 * @param country two letters A–Z; @param registrant three characters A–Z/0–9;
 * @param year 0..99; @param designation 0..99 999.
 * @throws RangeError when a part does not fit.
 */
export function makeIsrc(country: string, registrant: string, year: number, designation: number): string {
  const value = `${country}${registrant}${String(year).padStart(2, '0')}${String(designation).padStart(5, '0')}`;
  if (!isValidIsrc(value) || year > 99 || designation > 99_999) throw new RangeError(`not an ISRC: ${value}`);
  return value;
}

/** Whether `value` is a normalised ISRC: `^[A-Z]{2}[A-Z0-9]{3}[0-9]{7}$` (ISO 3901; syntax only). */
export function isValidIsrc(value: string): boolean {
  return /^[A-Z]{2}[A-Z0-9]{3}[0-9]{7}$/.test(value);
}

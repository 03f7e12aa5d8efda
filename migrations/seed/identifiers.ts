/**
 * Generators of valid music identifiers for the demo seed. The rules themselves (check digits,
 * syntax, sources) live once, in the catalog's domain module `catalog-api/src/modules/catalog/identifiers.ts`;
 * building on it guarantees the seed only produces values the API accepts.
 */
import { ipiNameCheck, iswcCheckDigit, parseIpiNameNumber, parseIsrc, parseIswc } from '../../catalog-api/src/modules/catalog/identifiers.ts';

const nineDigits = (n: number, what: string): string => {
  if (!Number.isInteger(n) || n < 0 || n > 999_999_999) throw new RangeError(`${what} out of range: ${n}`);
  return String(n).padStart(9, '0');
};

/**
 * The normalised ISWC (`T` + 10 digits, the storage form of docs/CONTRACTS.md) for a work number.
 * @param n integer 0..999 999 999 (the nine-digit work identifier, zero-padded).
 * @throws RangeError when `n` is out of range or not an integer.
 */
export function makeIswc(n: number): string {
  const body = nineDigits(n, 'ISWC number');
  return `T${body}${iswcCheckDigit(body)}`;
}

/**
 * An 11-digit IPI name number (nine base digits + the two mod-101 check digits).
 * @param n integer 0..999 999 999.
 * @throws RangeError when `n` is out of range or not an integer.
 */
export function makeIpiNameNumber(n: number): string {
  const body = nineDigits(n, 'IPI base');
  return body + String(ipiNameCheck(body)).padStart(2, '0');
}

/**
 * A normalised ISRC `CCXXXYYNNNNN` (ISO 3901: country, registrant, year, designation; no check digit).
 * @param country two letters A–Z; @param registrant three characters A–Z/0–9;
 * @param year 0..99; @param designation 0..99 999.
 * @throws RangeError when a part does not fit.
 */
export function makeIsrc(country: string, registrant: string, year: number, designation: number): string {
  const value = `${country}${registrant}${String(year).padStart(2, '0')}${String(designation).padStart(5, '0')}`;
  if (!parseIsrc(value).ok || value.length !== 12) throw new RangeError(`not an ISRC: ${value}`);
  return value;
}

/** Whether `value` is a normalised ISWC with a correct check digit (the catalog's rule). */
export const isValidIswc = (value: string): boolean => /^T\d{10}$/.test(value) && parseIswc(value).ok;
/** Whether `value` is an 11-digit IPI name number with correct check digits (the catalog's rule). */
export const isValidIpiNameNumber = (value: string): boolean => parseIpiNameNumber(value).ok;
/** Whether `value` is a normalised 12-character ISRC (the catalog's rule). */
export const isValidIsrc = (value: string): boolean => /^[A-Z0-9]{12}$/.test(value) && parseIsrc(value).ok;

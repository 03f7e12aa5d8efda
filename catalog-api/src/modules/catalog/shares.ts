/**
 * Ownership splits of a work: each songwriter's share of the performance, mechanical and sync
 * rights, in percent with two decimals (numeric(5,2)). Per right, the shares of a work sum to at most
 * 100 % (docs/CONTRACTS.md, `work_songwriters`; CISAC CWR: shares per right ≤ 100 %).
 */
import type { FieldError } from '../../errors.ts';

/** CWR writer designation codes: composer/author, composer, author (lyricist), arranger, adaptor. */
export const SONGWRITER_ROLES = ['CA', 'C', 'A', 'AR', 'AD'] as const;

/** The rights a share is given for. */
export const RIGHTS = ['performance_share', 'mechanical_share', 'sync_share'] as const;

/** One songwriter's split (percent values 0..100). */
export type Split = Record<(typeof RIGHTS)[number], number>;

/**
 * Sum the shares per right in hundredths (integers, so 33.33 + 33.33 + 33.34 is exactly 100).
 * @returns one field error `{ field: 'songwriters', reason }` per right whose total exceeds 100
 */
export function checkShareTotals(splits: readonly Split[]): FieldError[] {
  const errors: FieldError[] = [];
  for (const right of RIGHTS) {
    const hundredths = splits.reduce((sum, s) => sum + Math.round(s[right] * 100), 0);
    if (hundredths > 10_000) {
      errors.push({ field: `songwriters.${right}`, reason: `total ${(hundredths / 100).toFixed(2)} exceeds 100` });
    }
  }
  return errors;
}

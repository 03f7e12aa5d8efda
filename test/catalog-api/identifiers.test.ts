/**
 * Unit tests of catalog-api/src/modules/catalog/identifiers.ts: ISWC (ISO 15707), IPI name number (CISAC,
 * mod 101), ISRC (ISO 3901). Vectors: published ISWCs, the IPI vector of django-music-publisher's
 * tests, the ISRC handbook's example, and exhaustive single-digit corruption of valid values.
 */
import t from 'tap';
import {
  formatIsrc,
  formatIswc,
  ipiNameCheck,
  iswcCheckDigit,
  parseIpiNameNumber,
  parseIsrc,
  parseIswc,
} from '../../catalog-api/src/modules/catalog/identifiers.ts';
import { checkShareTotals } from '../../catalog-api/src/modules/catalog/shares.ts';

t.test('ISWC: published codes are valid in both forms and normalise to T + 10 digits', async (t) => {
  const published = [
    ['T-034.524.680-1', 'T0345246801'], // ISO 15707 / CISAC example
    ['T-920.464.955-8', 'T9204649558'], // "Shape of You"
    ['T-924.455.123-3', 'T9244551233'], // MusicBrainz test data
    ['T-123.456.789-4', 'T1234567894'],
    ['T-000.000.001-0', 'T0000000010'],
  ] as const;
  for (const [dotted, compact] of published) {
    t.same(parseIswc(dotted), { ok: true, value: compact }, dotted);
    t.same(parseIswc(compact), { ok: true, value: compact }, compact);
    t.same(parseIswc(`  ${dotted} `), { ok: true, value: compact }, 'surrounding whitespace ignored');
    t.equal(formatIswc(compact), dotted, `formats ${compact}`);
  }
});

t.test('ISWC: check digit formula S = 1 + Σ i·dᵢ, c = (10 − S mod 10) mod 10', async (t) => {
  t.equal(iswcCheckDigit('034524680'), 1);
  t.equal(iswcCheckDigit('000000000'), 9); // S = 1
  t.equal(iswcCheckDigit('000000001'), 0); // S = 10
  t.throws(() => iswcCheckDigit('12345678'), RangeError);
  t.throws(() => iswcCheckDigit('12345678a'), RangeError);
});

t.test('ISWC: every wrong check digit and every single-digit corruption is rejected', async (t) => {
  const base = '034524680';
  for (let c = 0; c <= 9; c++) {
    const r = parseIswc(`T${base}${c}`);
    if (c === 1) t.ok(r.ok);
    else t.same(r, { ok: false, reason: 'check_digit' }, `check digit ${c}`);
  }
  let rejected = 0;
  for (let pos = 0; pos < 9; pos++) {
    for (let d = 0; d <= 9; d++) {
      if (String(d) === base[pos]) continue;
      const digits = base.slice(0, pos) + d + base.slice(pos + 1);
      // a changed digit at weight i changes S by i·Δ; rejected unless i·Δ ≡ 0 (mod 10)
      const r = parseIswc(`T${digits}1`);
      const delta = (d - Number(base[pos])) * (pos + 1);
      t.equal(r.ok, delta % 10 === 0, `position ${pos + 1} → ${d}`);
      if (!r.ok) rejected++;
    }
  }
  t.ok(rejected > 60, `most corruptions are caught (${rejected}/81)`);
});

t.test('ISWC: malformed inputs', async (t) => {
  for (const bad of ['', 'T', 'T034524680', 'T03452468011', 't0345246801', 'T-034.524.6801', 'T-034-524-680-1', 'T 034 524 680 1', 'X0345246801', '0345246801', 'T-034.524.680-', 'T-O34.524.680-1', 'T034524680１']) {
    t.same(parseIswc(bad), { ok: false, reason: 'format' }, JSON.stringify(bad));
  }
  t.equal(formatIswc('not-an-iswc'), 'not-an-iswc', 'formatIswc leaves other values alone');
});

t.test('IPI name number: mod 101 over nine digits with weights 10..2', async (t) => {
  t.same(parseIpiNameNumber('00000000199'), { ok: true, value: '00000000199' }, 'django-music-publisher test vector');
  t.same(parseIpiNameNumber('00014107338'), { ok: true, value: '00014107338' });
  t.equal(ipiNameCheck('000000001'), 99);
  t.equal(ipiNameCheck('000000000'), 0, 'r = 0 → 00');
  // r = 1: 1 = 1·... find a body with Σ mod 101 = 1 → check (101 − 1) mod 100 = 0
  t.equal(ipiNameCheck('000000050'), (101 - ((5 * 3) % 101)) % 100);
  t.throws(() => ipiNameCheck('12345678'), RangeError);
  for (let check = 0; check < 100; check++) {
    const s = `000141073${String(check).padStart(2, '0')}`;
    t.equal(parseIpiNameNumber(s).ok, check === 38, s);
  }
  // every single-digit change in the body is caught: weights 10..2 and 101 prime
  const body = '000141073';
  for (let pos = 0; pos < 9; pos++) {
    for (let d = 0; d <= 9; d++) {
      if (String(d) === body[pos]) continue;
      const v = body.slice(0, pos) + d + body.slice(pos + 1) + '38';
      t.same(parseIpiNameNumber(v), { ok: false, reason: 'check_digit' }, v);
    }
  }
});

t.test('IPI name number: malformed inputs', async (t) => {
  for (const bad of ['', '0001410733', '000141073380', '00014107-338', 'I-000141073-3', 'abcdefghijk', '0001410733８']) {
    t.same(parseIpiNameNumber(bad), { ok: false, reason: 'format' }, JSON.stringify(bad));
  }
});

t.test('ISRC: hyphenated, compact, lower case and the ISRC prefix normalise to 12 characters', async (t) => {
  const ok = [
    ['US-RC1-76-07839', 'USRC17607839'], // ISRC handbook example
    ['USRC17607839', 'USRC17607839'],
    ['gb-aye-05-00123', 'GBAYE0500123'],
    ['ISRC FR-Z03-91-01231', 'FRZ039101231'],
    [' DE-A12-99-99999 ', 'DEA129999999'],
  ] as const;
  for (const [input, value] of ok) t.same(parseIsrc(input), { ok: true, value }, input);
  t.equal(formatIsrc('USRC17607839'), 'US-RC1-76-07839');
  t.equal(formatIsrc('nope'), 'nope');
});

t.test('ISRC: malformed inputs', async (t) => {
  for (const bad of ['', 'USRC1760783', 'USRC176078390', 'U1RC17607839', 'US-RC1-7607839', 'US-RC1-76-0783A', 'US_RC1_76_07839', 'US-R-C1-76-07839', '12RC17607839']) {
    t.same(parseIsrc(bad), { ok: false, reason: 'format' }, JSON.stringify(bad));
  }
});

t.test('share totals per right: exact in hundredths, one error per right over 100', async (t) => {
  const s = (p: number, m: number, y: number) => ({ performance_share: p, mechanical_share: m, sync_share: y });
  t.same(checkShareTotals([s(33.33, 50, 0), s(33.33, 50, 0), s(33.34, 0, 100)]), []);
  t.same(checkShareTotals([]), []);
  t.same(checkShareTotals([s(60, 100, 0), s(40.01, 0.01, 0)]), [
    { field: 'songwriters.performance_share', reason: 'total 100.01 exceeds 100' },
    { field: 'songwriters.mechanical_share', reason: 'total 100.01 exceeds 100' },
  ]);
});

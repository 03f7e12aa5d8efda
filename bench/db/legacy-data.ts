/**
 * The legacy (migration 0001) tenant database at scale, and content checksums that must survive the
 * tenant → publisher migration (0002 …) and its down migration (issue 8 §3).
 *
 * {@link loadLegacy} writes `tenants` tenants and `rows` catalog rows — 40 % works, 20 %
 * songwriters, 40 % recordings (each pointing at a work of its tenant) — with `INSERT … SELECT
 * generate_series` as the owner (legacy RLS is ENABLE without FORCE: the owner bypasses it). Like a
 * real legacy database it carries values the new constraints reject and 0002 normalises: one work in
 * ten has a dotted ISWC, one in fifty an unparseable one; one recording in ten a dashed ISRC; one
 * songwriter in ten a 9-digit CAE number, one in twenty a single-word name, one in thirty a double
 * space in its name; one tenant in five an upper-case slug.
 *
 * Checksums ({@link legacyChecksums}, {@link publisherChecksums}): per table the row count and
 * `md5(string_agg(md5(row(…)::text), '' order by id))` over the columns that must survive, in
 * UTC. The mapping legacy → publisher schema is explicit:
 *
 *   tenants(id, name, slug, created_at)              = publishers(id, name, slug*, created_at)
 *   works(id, tenant_id, title, iswc, created_at)     = works(id, publisher_id, title, iswc*, created_at)
 *   songwriters(id, tenant_id, name, ipi, created_at) = songwriters(id, publisher_id, name*, ipi_name_number*, created_at)
 *   recordings(id, tenant_id, work_id, title, isrc, created_at) = recordings(id, publisher_id, work_id, title, isrc*, created_at)
 *
 * `*`: the value 0002 recorded in `legacy_value_originals` when it changed it (its zero-data-loss
 * ledger), else the column as it is; a songwriter's name without a recorded original is
 * `concat_ws(' ', first_name, last_name)` (0002's reversible split). Equal checksums therefore mean
 * every legacy value is still there, unchanged or recoverable.
 */
import pg from 'pg';
import { idSql } from './catalog-data.ts';

/** Per table: row count and content checksum. */
export type Checksums = Record<'tenants' | 'works' | 'songwriters' | 'recordings', { rows: number; md5: string }>;

/** Row counts of a legacy data set of `rows` catalog rows. */
export function legacySplit(rows: number): { works: number; songwriters: number; recordings: number } {
  const works = Math.floor(rows * 0.4);
  const songwriters = Math.floor(rows * 0.2);
  return { works, songwriters, recordings: rows - works - songwriters };
}

/**
 * Load the legacy catalog into the database at `ownerUrl` (migrated to 0001 only, empty).
 * @returns the time taken (ms)
 * @throws on SQL errors (rolled back)
 */
export async function loadLegacy(ownerUrl: string, size: { tenants: number; rows: number }): Promise<number> {
  const T = size.tenants;
  const n = legacySplit(size.rows);
  const tenant = (x: string) => idSql('tenant', `((${x}) % ${T})`);
  const c = new pg.Client({ connectionString: ownerUrl });
  await c.connect();
  const t0 = performance.now();
  try {
    await c.query('begin');
    await c.query(`insert into tenants (id, name, slug, created_at)
      select ${idSql('tenant', 'p')}, 'Legacy Tenant ' || p, case when p % 5 = 0 then 'Tenant-' || p else 'tenant-' || p end,
             timestamptz '2015-01-01' + p * interval '1 day'
        from generate_series(0, ${T - 1}) p`);
    await c.query(`insert into works (id, tenant_id, title, iswc, created_at)
      select ${idSql('lwork', 'i')}, ${tenant('i')}, 'Legacy work ' || i,
             case when i % 50 = 0 then 'not-an-iswc-' || i
                  when i % 10 = 0 then 'T-' || substr(lpad(i::text, 9, '0'), 1, 3) || '.' || substr(lpad(i::text, 9, '0'), 4, 3) || '.' || substr(lpad(i::text, 9, '0'), 7, 3) || '-' || (i % 10)
                  when i % 7 = 0 then null
                  else 'T' || lpad(i::text, 10, '0') end,
             timestamptz '2016-01-01' + i * interval '1 minute'
        from generate_series(1, ${n.works}) i`);
    await c.query(`insert into songwriters (id, tenant_id, name, ipi, created_at)
      select ${idSql('lsongwriter', 'j')}, ${tenant('j')},
             case when j % 30 = 0 then 'Double  Space' || j when j % 20 = 0 then 'Mononym' || j else 'First' || j || ' Last' || j end,
             case when j % 10 = 0 then lpad(j::text, 9, '0') when j % 9 = 0 then null else lpad(j::text, 11, '0') end,
             timestamptz '2016-01-01' + j * interval '2 minute'
        from generate_series(1, ${n.songwriters}) j`);
    // recording i points at a work of its own tenant: work k with k ≡ i (mod T)
    await c.query(`insert into recordings (id, tenant_id, work_id, title, isrc, created_at)
      select ${idSql('lrecording', 'i')}, ${tenant('i')},
             ${idSql('lwork', `(((i - 1) / ${T}) % greatest(${Math.floor(n.works / T)}, 1)) * ${T} + (i % ${T}) + case when i % ${T} = 0 then ${T} else 0 end`)},
             'Legacy recording ' || i,
             case when i % 10 = 0 then 'US-BNC-' || substr(lpad(i::text, 7, '0'), 1, 2) || '-' || substr(lpad(i::text, 7, '0'), 3, 5)
                  else 'USBNC' || lpad(i::text, 7, '0') end,
             timestamptz '2016-01-01' + i * interval '1 minute' + interval '7 second'
        from generate_series(1, ${n.recordings}) i`);
    await c.query('commit');
    await c.query('vacuum (analyze) tenants, works, songwriters, recordings');
    return performance.now() - t0;
  } catch (err) {
    await c.query('rollback').catch(() => undefined);
    throw err;
  } finally {
    await c.end();
  }
}

/** One checksum query: `select count(*), md5(string_agg(md5(<row>::text), '' order by <alias>.id)) from <from>`. */
async function checksum(c: pg.ClientBase, row: string, from: string, alias: string): Promise<{ rows: number; md5: string }> {
  const r = await c.query<{ n: string; md5: string }>(`select count(*) as n, md5(coalesce(string_agg(md5((${row})::text), '' order by ${alias}.id), '')) as md5 from ${from}`);
  return { rows: Number(r.rows[0]!.n), md5: r.rows[0]!.md5 };
}

/** Run `fn` on a connection to `url` with TimeZone UTC (the rendering of timestamptz in the checksums). */
async function withUtc<T>(url: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    await c.query(`set timezone = 'UTC'; set datestyle = 'ISO, YMD'`);
    return await fn(c);
  } finally {
    await c.end();
  }
}

/**
 * Checksums of the legacy schema (0001 applied, 0002 not, or after the down migration).
 * @param adminUrl a superuser URL of the database (RLS bypassed for reading everything)
 */
export async function legacyChecksums(adminUrl: string): Promise<Checksums> {
  return withUtc(adminUrl, async (c) => ({
    tenants: await checksum(c, 'row(t.id, t.name, t.slug, t.created_at)', 'tenants t', 't'),
    works: await checksum(c, 'row(w.id, w.tenant_id, w.title, w.iswc, w.created_at)', 'works w', 'w'),
    songwriters: await checksum(c, 'row(s.id, s.tenant_id, s.name, s.ipi, s.created_at)', 'songwriters s', 's'),
    recordings: await checksum(c, 'row(r.id, r.tenant_id, r.work_id, r.title, r.isrc, r.created_at)', 'recordings r', 'r'),
  }));
}

/** `x.<column>` or the original 0002 recorded for it (join alias `o_<key>`). */
const orig = (key: string, current: string) => `case when o_${key}.row_id is not null then o_${key}.original_value else ${current} end`;
/** The ledger join for `<table>.<key>` (alias `o_<key>`). */
const ledger = (table: string, alias: string, key: string) =>
  `left join legacy_value_originals o_${key} on o_${key}.table_name = '${table}' and o_${key}.column_name = '${key}' and o_${key}.row_id = ${alias}.id`;

/**
 * Checksums of the publisher schema (after 0002 …), over the legacy columns by the mapping above.
 * @param adminUrl a superuser URL of the database (FORCE RLS applies to the owner)
 */
export async function publisherChecksums(adminUrl: string): Promise<Checksums> {
  return withUtc(adminUrl, async (c) => ({
    tenants: await checksum(c, `row(p.id, p.name, ${orig('slug', 'p.slug')}, p.created_at)`, `publishers p ${ledger('publishers', 'p', 'slug')}`, 'p'),
    works: await checksum(c, `row(w.id, w.publisher_id, w.title, ${orig('iswc', 'w.iswc')}, w.created_at)`, `works w ${ledger('works', 'w', 'iswc')}`, 'w'),
    songwriters: await checksum(
      c,
      `row(s.id, s.publisher_id, ${orig('name', "concat_ws(' ', s.first_name, s.last_name)")}, ${orig('ipi', 's.ipi_name_number')}, s.created_at)`,
      `songwriters s ${ledger('songwriters', 's', 'name')} ${ledger('songwriters', 's', 'ipi')}`,
      's',
    ),
    recordings: await checksum(c, `row(r.id, r.publisher_id, r.work_id, r.title, ${orig('isrc', 'r.isrc')}, r.created_at)`, `recordings r ${ledger('recordings', 'r', 'isrc')}`, 'r'),
  }));
}

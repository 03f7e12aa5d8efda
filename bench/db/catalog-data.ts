/**
 * Bulk generator of a big publisher-schema catalog (issue 8 §3): `publishers` publishers, each with
 * one staff member (role `manager`, scope `publisher`) and `creators` creators (role `creator`,
 * scope `own`), and `works` works spread round-robin over the publishers, with one songwriter per
 * ten works, one to three songwriter splits per work (CWR role `CA`, shares summing to ≤ 100) and
 * one recording per work. About 30 % of the catalog rows are owned by a creator of their publisher.
 *
 * Everything is `INSERT … SELECT generate_series` in one transaction as the schema owner, with
 * deterministic ids ({@link idSql}), identifiers and timestamps (work n is created at
 * 2020-01-01 + n minutes), so two runs with the same size produce the same rows.
 *
 * What the load bypasses, and why: FORCE RLS is lifted on the tables it fills for the length of its
 * transaction (the owner bypasses RLS then; the policies ask for a per-publisher request context
 * that a bulk load across 100 publishers does not have — the demo seed lifts it the same way for its
 * first user), and on the four catalog tables the user triggers (authz outbox, domain events,
 * audit columns, the share-sum check) are disabled for the load, as a restore or an import would:
 * the outbox and event rows of a million works are the relay's backlog, not part of what the
 * catalog reads cost. {@link measureTriggerCost} measures that cost separately (per row, with the
 * triggers on) so the report can say what a load through the triggers would take. Both are restored
 * before the transaction commits; foreign keys and check constraints stay on (they check the data).
 * Publishers, users and memberships go in with their triggers (a few thousand rows).
 */
import pg from 'pg';

/** Sizes of a generated catalog. */
export type CatalogSize = { publishers: number; works: number; creators: number };

/** Row counts of a generated catalog, per table. */
export type CatalogCounts = { publishers: number; users: number; memberships: number; works: number; songwriters: number; workSongwriters: number; recordings: number };

/** One publisher of the generated data set and the two callers the bench plays. */
export type BenchPublisher = { id: string; staffUserId: string; creatorUserId: string };

/** The tables the load fills, in insertion order. */
const LOADED = ['users', 'publishers', 'user_publishers', 'works', 'songwriters', 'work_songwriters', 'recordings'] as const;
/** The tables whose user triggers are disabled during the load. */
const BULK = ['works', 'songwriters', 'work_songwriters', 'recordings'] as const;

/**
 * Deterministic uuid of generated row `n` of `kind` (SQL expression over `n`): `md5('<kind>:<n>')`
 * with the version nibble set to 4 and the variant to 8 (RFC 9562 §4, so the API's uuid schemas
 * accept it).
 */
export const idSql = (kind: string, n: string) => `overlay(overlay(md5('${kind}:' || ${n}) placing '4' from 13 for 1) placing '8' from 17 for 1)::uuid`;

/**
 * The SQL statements of the load for `size` (run in order, in one transaction). Work `i` (1-based)
 * belongs to publisher `i % P`, its publisher-local number is `i / P`; songwriter `j` likewise;
 * a work's splits name songwriters of its own publisher.
 */
export function loadStatements(size: CatalogSize): string[] {
  const P = size.publishers;
  const C = size.creators;
  const S = Math.max(3 * P, Math.floor(size.works / 10)); // songwriters, ≥ 3 per publisher
  const SP = Math.floor(S / P); // songwriters per publisher
  const pub = (n: string) => idSql('publisher', `((${n}) % ${P})`);
  const creator = (n: string, local: string) => idSql('creator', `((${n}) % ${P}) || ':' || ((${local}) % ${C})`);
  const owned = (local: string) => `(${local}) % 10 < 3`;
  // explicit audit columns: their default (app_current_user(), a PL/pgSQL reader) costs a call per row
  const staff = (n: string) => idSql('staff', `((${n}) % ${P})`);
  return [
    // users: one staff member and C creators per publisher
    `insert into users (id, email, display_name, kind, status, created_at)
     select ${idSql('staff', 'p')}, 'staff' || p || '@bench.example', 'Staff ' || p, 'person', 'active', timestamptz '2019-12-01'
       from generate_series(0, ${P - 1}) p`,
    `insert into users (id, email, display_name, kind, status, created_at)
     select ${idSql('creator', `p || ':' || c`)}, 'creator' || p || '-' || c || '@bench.example', 'Creator ' || p || '/' || c, 'person', 'active', timestamptz '2019-12-01'
       from generate_series(0, ${P - 1}) p, generate_series(0, ${C - 1}) c`,
    `insert into publishers (id, name, slug, created_at, created_by, updated_by)
     select ${idSql('publisher', 'p')}, 'Bench Publisher ' || p, 'bench-' || p, timestamptz '2019-12-01', null, null
       from generate_series(0, ${P - 1}) p`,
    `insert into user_publishers (publisher_id, user_id, role, created_by, updated_by)
     select ${idSql('publisher', 'p')}, ${idSql('staff', 'p')}, 'manager', null::uuid, null::uuid from generate_series(0, ${P - 1}) p
     union all
     select ${idSql('publisher', 'p')}, ${idSql('creator', `p || ':' || c`)}, 'creator', null, null
       from generate_series(0, ${P - 1}) p, generate_series(0, ${C - 1}) c`,
    `insert into works (id, publisher_id, owner_user_id, title, iswc, language, created_at, updated_at, created_by, updated_by)
     select ${idSql('work', 'i')}, ${pub('i')},
            case when ${owned(`i / ${P}`)} then ${creator('i', `i / ${P} / 10`)} end,
            'Work ' || i || ' of the bench catalog', 'T' || lpad(i::text, 10, '0'), (array['en','es','fr','de'])[1 + i % 4],
            timestamptz '2020-01-01' + i * interval '1 minute', timestamptz '2020-01-01' + i * interval '1 minute', ${staff('i')}, ${staff('i')}
       from generate_series(1, ${size.works}) i`,
    `insert into songwriters (id, publisher_id, owner_user_id, first_name, last_name, ipi_name_number, pro, created_at, updated_at, created_by, updated_by)
     select ${idSql('songwriter', 'j')}, ${pub('j')},
            case when ${owned(`j / ${P}`)} then ${creator('j', `j / ${P} / 10`)} end,
            'First' || j, 'Last' || j, lpad(j::text, 11, '0'), (array['ASCAP','BMI','PRS','GEMA'])[1 + j % 4],
            timestamptz '2019-12-15' + j * interval '1 second', timestamptz '2019-12-15' + j * interval '1 second', ${staff('j')}, ${staff('j')}
       from generate_series(0, ${SP * P - 1}) j`,
    // split t of work i: songwriter (local(i) + t) mod SP of the same publisher; 1..3 splits per work
    `insert into work_songwriters (work_id, songwriter_id, publisher_id, role, performance_share, mechanical_share, sync_share, created_at, updated_at, created_by, updated_by)
     select ${idSql('work', 'i')}, ${idSql('songwriter', `(((i / ${P}) + t) % ${SP}) * ${P} + i % ${P}`)}, ${pub('i')}, 'CA',
            trunc(100.0 / k, 2), trunc(100.0 / k, 2), trunc(100.0 / k, 2),
            timestamptz '2020-01-01' + i * interval '1 minute', timestamptz '2020-01-01' + i * interval '1 minute', ${staff('i')}, ${staff('i')}
       from generate_series(1, ${size.works}) i, lateral (select 1 + i % 3 as k) kk, generate_series(0, kk.k - 1) t`,
    `insert into recordings (id, publisher_id, owner_user_id, work_id, title, isrc, duration_ms, release_date, created_at, updated_at, created_by, updated_by)
     select ${idSql('recording', 'i')}, ${pub('i')},
            case when ${owned(`i / ${P}`)} then ${creator('i', `i / ${P} / 10`)} end,
            ${idSql('work', 'i')}, 'Recording ' || i, 'USBNC' || lpad(i::text, 7, '0'), 120000 + i % 180000,
            date '2020-01-01' + (i % 1500), timestamptz '2020-01-01' + i * interval '1 minute' + interval '1 second',
            timestamptz '2020-01-01' + i * interval '1 minute' + interval '1 second', ${staff('i')}, ${staff('i')}
       from generate_series(1, ${size.works}) i`,
  ];
}

/**
 * Load the catalog of `size` into the migrated, empty database at `ownerUrl` (the schema owner),
 * then VACUUM ANALYZE the loaded tables (fresh statistics and visibility map, as autovacuum would
 * leave them).
 * @returns the row counts and the time of the load (ms) and of the VACUUM ANALYZE (ms)
 * @throws on any SQL error (the load is rolled back)
 */
export async function loadCatalog(ownerUrl: string, size: CatalogSize): Promise<{ counts: CatalogCounts; loadMs: number; vacuumMs: number }> {
  const c = new pg.Client({ connectionString: ownerUrl });
  await c.connect();
  try {
    const t0 = performance.now();
    await c.query('begin');
    for (const t of LOADED) await c.query(`alter table ${t} no force row level security`);
    for (const t of BULK) await c.query(`alter table ${t} disable trigger user`);
    const deferred = await dropForLoad(c);
    for (const sql of loadStatements(size)) await c.query(sql);
    for (const sql of deferred) await c.query(sql);
    for (const t of BULK) await c.query(`alter table ${t} enable trigger user`);
    for (const t of LOADED) await c.query(`alter table ${t} force row level security`);
    await c.query('commit');
    const loadMs = performance.now() - t0;
    const t1 = performance.now();
    await c.query(`vacuum (analyze) ${LOADED.join(', ')}`);
    const vacuumMs = performance.now() - t1;
    return { counts: await countCatalog(c), loadMs, vacuumMs };
  } catch (err) {
    await c.query('rollback').catch(() => undefined);
    throw err;
  } finally {
    await c.end();
  }
}

/**
 * Drop the foreign keys and the secondary indexes (those backing no constraint) of the bulk tables,
 * as pg_restore orders a load: data first, then indexes, then foreign keys — building an index and
 * validating a foreign key once over the loaded table is several times cheaper than maintaining
 * them row by row. The definitions come from the catalogue (`pg_get_indexdef`,
 * `pg_get_constraintdef`), so the schema afterwards is exactly the migrated one.
 * @returns the statements that recreate them (indexes first), to run after the load
 */
async function dropForLoad(c: pg.Client): Promise<string[]> {
  const tables = BULK.map((t) => `'${t}'`).join(', ');
  const indexes = await c.query<{ name: string; def: string }>(
    `select i.indexrelid::regclass::text as name, pg_get_indexdef(i.indexrelid) as def
       from pg_index i
      where i.indrelid::regclass::text in (${tables})
        and not exists (select 1 from pg_constraint k where k.conindid = i.indexrelid)`,
  );
  const fks = await c.query<{ tbl: string; name: string; def: string }>(
    `select conrelid::regclass::text as tbl, conname as name, pg_get_constraintdef(oid) as def
       from pg_constraint where contype = 'f' and conrelid::regclass::text in (${tables})`,
  );
  for (const f of fks.rows) await c.query(`alter table ${f.tbl} drop constraint ${f.name}`);
  for (const i of indexes.rows) await c.query(`drop index ${i.name}`);
  return [...indexes.rows.map((i) => i.def), ...fks.rows.map((f) => `alter table ${f.tbl} add constraint ${f.name} ${f.def}`)];
}

/**
 * Row counts of the loaded tables (estimates from `pg_class.reltuples` after VACUUM ANALYZE would
 * do for a report, but these are exact: `count(*)` through an owner connection, RLS lifted for the
 * statement's transaction).
 */
async function countCatalog(c: pg.Client): Promise<CatalogCounts> {
  await c.query('begin');
  try {
    for (const t of LOADED) await c.query(`alter table ${t} no force row level security`);
    const n = async (t: string) => Number((await c.query<{ n: string }>(`select count(*) as n from ${t}`)).rows[0]!.n);
    const counts = {
      publishers: await n('publishers'),
      users: await n('users'),
      memberships: await n('user_publishers'),
      works: await n('works'),
      songwriters: await n('songwriters'),
      workSongwriters: await n('work_songwriters'),
      recordings: await n('recordings'),
    };
    return counts;
  } finally {
    await c.query('rollback');
  }
}

/**
 * The publishers of a data set of `size` with their staff member and first creator (the ids the
 * generator gave them), computed in SQL on `c` (any role may run it: it reads no table).
 */
export async function benchPublishers(c: pg.ClientBase, size: CatalogSize): Promise<BenchPublisher[]> {
  const r = await c.query<{ id: string; staff: string; creator: string }>(
    `select ${idSql('publisher', 'p')}::text as id, ${idSql('staff', 'p')}::text as staff, ${idSql('creator', `p || ':0'`)}::text as creator
       from generate_series(0, $1::int - 1) p order by p`,
    [size.publishers],
  );
  return r.rows.map((x) => ({ id: x.id, staffUserId: x.staff, creatorUserId: x.creator }));
}

/**
 * The cost of the catalog triggers (authz outbox, domain events, audit) per inserted work: inserts
 * `n` works of the first publisher as the owner with the triggers on, in a transaction that is
 * rolled back, and the same without triggers.
 * @returns µs per row with and without the triggers, and the outbox/event rows one work produced
 */
export async function measureTriggerCost(ownerUrl: string, n: number): Promise<{ withTriggersUsPerRow: number; withoutTriggersUsPerRow: number; outboxRowsPerWork: number; eventRowsPerWork: number }> {
  const c = new pg.Client({ connectionString: ownerUrl });
  await c.connect();
  const insert = `insert into works (id, publisher_id, title, created_at)
    select gen_random_uuid(), ${idSql('publisher', '0')}, 'Trigger probe ' || i, now() from generate_series(1, ${n}) i`;
  const run = async (triggers: boolean) => {
    await c.query('begin');
    try {
      await c.query('alter table works no force row level security');
      if (!triggers) await c.query('alter table works disable trigger user');
      const before = await c.query<{ o: string; e: string }>(`select (select count(*) from authz_outbox) as o, (select count(*) from domain_events) as e`);
      const t0 = performance.now();
      await c.query(insert);
      const ms = performance.now() - t0;
      const after = await c.query<{ o: string; e: string }>(`select (select count(*) from authz_outbox) as o, (select count(*) from domain_events) as e`);
      return { ms, outbox: Number(after.rows[0]!.o) - Number(before.rows[0]!.o), events: Number(after.rows[0]!.e) - Number(before.rows[0]!.e) };
    } finally {
      await c.query('rollback');
    }
  };
  try {
    const on = await run(true);
    const off = await run(false);
    return { withTriggersUsPerRow: (on.ms * 1000) / n, withoutTriggersUsPerRow: (off.ms * 1000) / n, outboxRowsPerWork: on.outbox / n, eventRowsPerWork: on.events / n };
  } finally {
    await c.end();
  }
}

/**
 * The migration chain on a fresh database: all the way up, status, and the legacy → publisher
 * conversion with zero data loss (same ids, same or normalised values, originals restored by down),
 * down to the legacy schema and up again.
 */
import t from 'tap';
import { migrateDown, migrateUp, migrationStatus, MIGRATIONS } from '../../migrations/migrate.ts';
import { adminQuery, createTestDb, inTx, type TestDb } from './db.ts';

const T1 = 'aaaaaaaa-0000-4000-8000-000000000001';
const T2 = 'aaaaaaaa-0000-4000-8000-000000000002';
const W = (n: number) => `bbbbbbbb-0000-4000-8000-00000000000${n}`;
const S = (n: number) => `cccccccc-0000-4000-8000-00000000000${n}`;
const R = (n: number) => `dddddddd-0000-4000-8000-00000000000${n}`;

let db: TestDb;
t.before(async () => {
  db = await createTestDb('chain');
});
t.teardown(async () => {
  await db?.drop();
});

/** Every legacy row, as text, in a stable order (read as the superuser: RLS cannot hide rows). */
async function legacySnapshot(): Promise<Record<string, string[]>> {
  const q = async (sql: string) => (await adminQuery<{ r: string }>(db.adminUrl, sql)).rows.map((x) => x.r);
  return {
    tenants: await q(`select row(id, name, slug, created_at)::text as r from tenants order by id`),
    works: await q(`select row(id, tenant_id, title, iswc, created_at)::text as r from works order by id`),
    songwriters: await q(`select row(id, tenant_id, name, ipi, created_at)::text as r from songwriters order by id`),
    recordings: await q(`select row(id, tenant_id, work_id, title, isrc, created_at)::text as r from recordings order by id`),
  };
}

t.test('fresh database: the whole chain goes up, status is complete, up again is a no-op', async (t) => {
  const applied = await migrateUp(db.ownerUrl, '0001_legacy_tenants');
  t.same(applied, ['0001_legacy_tenants']);
  const status = await migrationStatus(db.ownerUrl);
  t.same(status.executed, ['0001_legacy_tenants']);
  t.same(status.pending, MIGRATIONS.slice(1).map((m) => m.name));
});

t.test('legacy data survives 0002..0004, down restores it exactly, up again works', async (t) => {
  // legacy rows, including values the new constraints would reject as they are
  await adminQuery(
    db.ownerUrl,
    `insert into tenants (id, name, slug, created_at) values
       ('${T1}', 'Acme Music', 'acme', '2020-01-01T00:00:00Z'),
       ('${T2}', 'Beta Songs', 'Beta_Songs', '2020-02-01T00:00:00Z');
     insert into works (id, tenant_id, title, iswc, created_at) values
       ('${W(1)}', '${T1}', 'Song One', 'T0345246801', '2021-01-01T00:00:00Z'),
       ('${W(2)}', '${T1}', 'Song Two', 'T-034.524.681-2', '2021-01-02T00:00:00Z'),
       ('${W(3)}', '${T1}', 'Song Three', 'garbage', '2021-01-03T00:00:00Z'),
       ('${W(4)}', '${T2}', 'Song Four', null, '2021-01-04T00:00:00Z'),
       ('${W(5)}', '${T1}', 'Song Five', 't-034.524.680-1', '2021-01-05T00:00:00Z');
     insert into songwriters (id, tenant_id, name, ipi, created_at) values
       ('${S(1)}', '${T1}', 'Bob Dylan', '00014107338', '2021-01-01T00:00:00Z'),
       ('${S(2)}', '${T1}', 'Prince', '14107338', '2021-01-02T00:00:00Z'),
       ('${S(3)}', '${T2}', 'Mary Lou  Williams ', 'n/a', '2021-01-03T00:00:00Z'),
       ('${S(4)}', '${T2}', 'Joni Mitchell', null, '2021-01-04T00:00:00Z');
     insert into recordings (id, tenant_id, work_id, title, isrc, created_at) values
       ('${R(1)}', '${T1}', '${W(1)}', 'Song One (Live)', 'USRC17607839', '2021-02-01T00:00:00Z'),
       ('${R(2)}', '${T1}', '${W(2)}', 'Song Two', 'us-rc1-76-07840', '2021-02-02T00:00:00Z'),
       ('${R(3)}', '${T2}', null, 'Loose', 'bad isrc', '2021-02-03T00:00:00Z');`,
  );
  const before = await legacySnapshot();

  // legacy RLS: the app role sees its tenant's rows only
  const legacyVisible = await inTx(db.appUrl, null, async (c) => {
    await c.query(`select set_config('app.tenant_id', '${T2}', true)`);
    return (await c.query('select id from works')).rows.map((r) => r.id);
  });
  t.same(legacyVisible, [W(4)], 'legacy tenant isolation');

  t.same(await migrateUp(db.ownerUrl), MIGRATIONS.slice(1).map((m) => m.name));

  const q = async (sql: string) => (await adminQuery(db.adminUrl, sql)).rows;
  t.same(await q(`select id, name, slug, type, business_model, status, settings from publishers order by id`), [
    { id: T1, name: 'Acme Music', slug: 'acme', type: 'professional', business_model: 'traditional', status: 'active', settings: {} },
    { id: T2, name: 'Beta Songs', slug: 'beta-songs', type: 'professional', business_model: 'traditional', status: 'active', settings: {} },
  ]);
  t.same(await q(`select id, publisher_id, title, iswc, deleted_at from works order by id`), [
    { id: W(1), publisher_id: T1, title: 'Song One', iswc: 'T0345246801', deleted_at: null },
    { id: W(2), publisher_id: T1, title: 'Song Two', iswc: 'T0345246812', deleted_at: null },
    { id: W(3), publisher_id: T1, title: 'Song Three', iswc: null, deleted_at: null },
    { id: W(4), publisher_id: T2, title: 'Song Four', iswc: null, deleted_at: null },
    // same normalised ISWC as W1 in the same publisher: the earlier, unchanged one keeps it
    { id: W(5), publisher_id: T1, title: 'Song Five', iswc: null, deleted_at: null },
  ]);
  t.same(await q(`select id, first_name, last_name, ipi_name_number from songwriters order by id`), [
    { id: S(1), first_name: 'Bob', last_name: 'Dylan', ipi_name_number: '00014107338' },
    { id: S(2), first_name: null, last_name: 'Prince', ipi_name_number: '00014107338' },
    { id: S(3), first_name: 'Mary Lou', last_name: 'Williams', ipi_name_number: null },
    { id: S(4), first_name: 'Joni', last_name: 'Mitchell', ipi_name_number: null },
  ]);
  t.same(await q(`select id, work_id, isrc from recordings order by id`), [
    { id: R(1), work_id: W(1), isrc: 'USRC17607839' },
    { id: R(2), work_id: W(2), isrc: 'USRC17607840' },
    { id: R(3), work_id: null, isrc: null },
  ]);
  t.same(
    (await q(`select table_name, column_name, count(*)::int as n from legacy_value_originals group by 1, 2 order by 1, 2`)),
    [
      { table_name: 'publishers', column_name: 'slug', n: 1 },
      { table_name: 'recordings', column_name: 'isrc', n: 2 },
      { table_name: 'songwriters', column_name: 'ipi', n: 2 },
      { table_name: 'songwriters', column_name: 'name', n: 1 },
      { table_name: 'works', column_name: 'iswc', n: 3 },
    ],
    'every changed legacy value is kept',
  );
  t.same(await q(`select id, slug from tenants order by id`), [{ id: T1, slug: 'acme' }, { id: T2, slug: 'beta-songs' }], 'tenants view');
  const view = await q(`select reloptions from pg_class where relname = 'tenants' and relkind = 'v'`);
  t.match(view[0]?.reloptions, ['security_invoker=true'], 'tenants view is security_invoker');
  const legacyPolicies = await q(`select count(*)::int as n from pg_policies where policyname = 'tenant_isolation'`);
  t.equal(legacyPolicies[0]!.n, 0, 'legacy policies dropped');

  t.same(await migrateDown(db.ownerUrl, '0001_legacy_tenants'), MIGRATIONS.slice(1).map((m) => m.name).reverse());
  t.same(await legacySnapshot(), before, 'down restores every legacy row and value exactly');
  const restoredPolicies = await q(`select count(*)::int as n from pg_policies where policyname = 'tenant_isolation'`);
  t.equal(restoredPolicies[0]!.n, 4, 'legacy policies restored');

  t.same(await migrateUp(db.ownerUrl), MIGRATIONS.slice(1).map((m) => m.name), 'up again');
  t.equal((await q(`select count(*)::int as n from works`))[0]!.n, 5);
  t.same(await migrateUp(db.ownerUrl), [], 'nothing pending');
  t.same((await migrationStatus(db.ownerUrl)).pending, []);

  t.same(await migrateDown(db.ownerUrl, 0), MIGRATIONS.map((m) => m.name).reverse(), 'down to nothing');
  t.equal((await q(`select count(*)::int as n from pg_tables where schemaname = 'public' and tablename <> 'mikro_orm_migrations'`))[0]!.n, 0);
});

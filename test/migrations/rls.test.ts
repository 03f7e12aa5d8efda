/**
 * The migrated + seeded schema against real PostgreSQL: roles and ownership, row-level security as
 * `catalog_app` per context, check constraints, the share-sum trigger, the authz outbox triggers,
 * and the seed (idempotent, ≥ 1,000 works, valid identifiers).
 */
import { DEPARTMENT_ROLE_PERMISSIONS, PERMISSIONS, SYSTEM_ROLE_PERMISSIONS } from '../../policies/src/permissions.ts';
import t from 'tap';
import type pg from 'pg';
import { migrateUp } from '../../migrations/migrate.ts';
import { seed } from '../../migrations/seed/run.ts';
import { MEMBERSHIPS, PUBLISHERS, USERS, publisherId, userId } from '../../migrations/seed/demo.ts';
import { isValidIpiNameNumber, isValidIsrc, isValidIswc, makeIpiNameNumber, makeIsrc, makeIswc } from '../../migrations/seed/identifiers.ts';
import { RLS_TABLES } from '../../migrations/0003_rls.ts';
import { adminQuery, createTestDb, inTx, type Ctx, type TestDb } from './db.ts';

const DMP = publisherId('dmp');
const SONGTRUST = publisherId('songtrust');
const SPIRIT = publisherId('spirit');
const C1 = userId('creator1@songtrust.example');
const C2 = userId('creator2@songtrust.example');
const ADMIN = userId('admin@dmp.example');
const TABLES = [...RLS_TABLES, 'tenants'];

let db: TestDb;
t.before(async () => {
  db = await createTestDb('rls');
  await migrateUp(db.ownerUrl);
});
t.teardown(async () => {
  await db?.drop();
});
const admin = async (sql: string, params: unknown[] = []) => (await adminQuery(db.adminUrl, sql, params)).rows;
const app = <T>(ctx: Ctx | null, fn: (c: pg.Client) => Promise<T>) => inTx(db.appUrl, ctx, fn);
const count = async (c: pg.Client, table: string, where = 'true') =>
  Number((await c.query(`select count(*) as n from ${table} where ${where}`)).rows[0].n);

t.test('seed identifier generators', async (t) => {
  t.equal(makeIswc(34524680), 'T0345246801', 'T-034.524.680-1');
  t.ok(isValidIswc('T0345246801'));
  t.notOk(isValidIswc('T0345246802'));
  t.equal(makeIpiNameNumber(141073), '00014107338');
  t.ok(isValidIpiNameNumber('00014107338'));
  t.notOk(isValidIpiNameNumber('00014107339'));
  t.ok(isValidIsrc('USRC17607839'));
  t.notOk(isValidIsrc('US-RC1-76-07839'));
  t.equal(makeIsrc('US', 'RC1', 76, 7839), 'USRC17607839');
  t.throws(() => makeIswc(1e9));
  t.throws(() => makeIsrc('U1', 'RC1', 76, 1));
});

t.test('seed: ≥ 1000 works, valid identifiers and shares, idempotent', async (t) => {
  const first = await seed(db.ownerUrl);
  t.notOk(first.skipped);
  t.ok(first.works >= 1000, `${first.works} works`);
  const again = await seed(db.ownerUrl);
  t.ok(again.skipped, 'second run skips');
  t.equal(Number((await admin('select count(*) as n from works'))[0].n), first.works, 'no duplicates');
  t.equal(Number((await admin('select count(*) as n from users'))[0].n), USERS.length);
  t.equal(Number((await admin('select count(*) as n from user_publishers'))[0].n), MEMBERSHIPS.length);
  t.same((await admin('select id, slug, name, type from publishers order by id')).map((r) => r.slug), PUBLISHERS.map((p) => p.slug));

  const iswcs = (await admin('select iswc from works where iswc is not null')).map((r) => r.iswc as string);
  t.ok(iswcs.length > 500 && iswcs.every(isValidIswc), 'every ISWC has a valid check digit');
  const ipis = (await admin('select ipi_name_number as v from songwriters where ipi_name_number is not null')).map((r) => r.v as string);
  t.ok(ipis.length > 100 && ipis.every(isValidIpiNameNumber), 'every IPI name number passes mod 101');
  const isrcs = (await admin('select isrc from recordings')).map((r) => r.isrc as string);
  t.ok(isrcs.every(isValidIsrc), 'ISRCs are well-formed');
  t.equal(new Set(isrcs).size, isrcs.length, 'ISRCs are unique');
  const over = await admin(`select work_id from work_songwriters group by work_id
    having sum(performance_share) > 100 or sum(mechanical_share) > 100 or sum(sync_share) > 100`);
  t.equal(over.length, 0, 'share sums ≤ 100');
  const perWork = await admin(`select min(n)::int as lo, max(n)::int as hi from (select count(*) as n from work_songwriters group by work_id) x`);
  t.same(perWork[0], { lo: 1, hi: 3 });
  t.equal(Number((await admin('select count(*) as n from works w where not exists (select 1 from work_songwriters ws where ws.work_id = w.id)'))[0].n), 0, 'every work has songwriters');
  const owners = await admin(`select owner_user_id, count(*)::int as n from works where publisher_id = $1 group by 1 order by 1`, [SONGTRUST]);
  t.same(owners.map((r) => r.owner_user_id), [C1, C2], 'both creators own songtrust works');
  t.ok(Number((await admin(`select count(*) as n from authz_outbox`))[0].n) > first.works, 'outbox filled by triggers');
  t.equal(Number((await admin(`select count(*) as n from authz_outbox where object = 'system:platform'`))[0].n), 1, 'system admin tuple');
});

t.test('roles: catalog_app is NOSUPERUSER NOBYPASSRLS and owns nothing; FORCE RLS everywhere', async (t) => {
  const [role] = await admin(`select rolsuper, rolbypassrls from pg_roles where rolname = 'catalog_app'`);
  t.same(role, { rolsuper: false, rolbypassrls: false });
  const owned = await admin(`select c.relname from pg_class c join pg_roles r on r.oid = c.relowner where r.rolname = 'catalog_app'
    union all select p.proname from pg_proc p join pg_roles r on r.oid = p.proowner where r.rolname = 'catalog_app'
    union all select n.nspname from pg_namespace n join pg_roles r on r.oid = n.nspowner where r.rolname = 'catalog_app'`);
  t.same(owned, [], 'owns nothing');
  const rls = await admin(`select relname, relrowsecurity, relforcerowsecurity from pg_class
    where relname = any($1) and relkind = 'r' order by relname`, [[...RLS_TABLES]]);
  t.equal(rls.length, RLS_TABLES.length);
  for (const r of rls) t.ok(r.relrowsecurity && r.relforcerowsecurity, `${r.relname}: ENABLE + FORCE`);
  const del = await admin(`select table_name from information_schema.role_table_grants
    where grantee = 'catalog_app' and privilege_type = 'DELETE' order by 1`);
  t.same(del.map((r) => r.table_name), ['directory_configs', 'role_permissions', 'roles', 'user_publishers', 'work_songwriters'], 'no DELETE on catalog tables (link tables, roles and directory configurations only)');
  const definers = await admin(`select p.proname, r.rolname, p.proconfig from pg_proc p join pg_roles r on r.oid = p.proowner
    where p.prosecdef and p.pronamespace = 'public'::regnamespace order by 1`);
  t.ok(definers.length >= 4);
  for (const d of definers) {
    t.equal(d.rolname, 'catalog_owner', `${d.proname} owned by catalog_owner`);
    t.match(d.proconfig, [/^search_path=/], `${d.proname} sets search_path`);
  }
});

t.test('RLS: no context → zero rows in every table', async (t) => {
  // without a user there is no context at all (app_begin_request needs one)
  for (const ctx of [null, {}, { publisher: DMP }] as (Ctx | null)[]) {
    await app(ctx, async (c) => {
      for (const table of TABLES) t.equal(await count(c, table), 0, `${JSON.stringify(ctx)} ${table}`);
    });
  }
  // a user with no membership at the context publisher (scope empty) sees only their own user row,
  // memberships and publishers (and the context publisher's row)
  await app({ publisher: SPIRIT, user: ADMIN, scope: '' }, async (c) => {
    for (const table of TABLES) {
      if (table === 'users') t.same((await c.query('select id from users')).rows, [{ id: ADMIN }], 'users: own row only');
      else if (table === 'user_publishers') t.same((await c.query('select publisher_id from user_publishers')).rows, [{ publisher_id: DMP }], 'user_publishers: own membership only');
      else if (table === 'publishers' || table === 'tenants') t.same((await c.query(`select id from ${table} order by id`)).rows.map((r) => r.id), [DMP, SPIRIT].sort(), `${table}: own and the context one`);
      else t.equal(await count(c, table), 0, `scope empty: ${table}`);
    }
  });
  // the owner is subject to FORCE RLS as well
  await inTx(db.ownerUrl, null, async (c) => t.equal(await count(c, 'works'), 0, 'owner without context sees nothing'));
});

t.test('RLS: scope publisher sees exactly its publisher; scope own only owned rows', async (t) => {
  const total = async (pub: string, table: string) => Number((await admin(`select count(*) as n from ${table} where publisher_id = $1`, [pub]))[0].n);
  await app({ publisher: DMP, user: ADMIN, scope: 'publisher' }, async (c) => {
    for (const table of ['works', 'songwriters', 'recordings', 'work_songwriters', 'user_publishers']) {
      t.equal(await count(c, table), await total(DMP, table), `${table}: all of dmp`);
      t.equal(await count(c, table, `publisher_id <> '${DMP}'`), 0, `${table}: nothing else`);
    }
    t.same((await c.query('select id from publishers')).rows.map((r) => r.id), [DMP]);
    const members = (await c.query('select id from users order by id')).rows.map((r) => r.id);
    t.same(members, MEMBERSHIPS.filter((m) => m.publisherId === DMP).map((m) => m.userId).sort(), 'users: members of dmp');
  });
  await app({ publisher: SONGTRUST, user: C1, scope: 'own' }, async (c) => {
    const owned = Number((await admin(`select count(*) as n from works where owner_user_id = $1`, [C1]))[0].n);
    t.ok(owned > 0);
    t.equal(await count(c, 'works'), owned, 'creator sees own works only');
    t.equal(await count(c, 'works', `owner_user_id is distinct from '${C1}'`), 0);
    t.equal(await count(c, 'recordings', `owner_user_id is distinct from '${C1}'`), 0);
    t.equal(await count(c, 'songwriters', `owner_user_id is distinct from '${C1}'`), 0);
    const ws = Number((await admin(`select count(*) as n from work_songwriters ws join works w on w.id = ws.work_id where w.owner_user_id = $1`, [C1]))[0].n);
    t.equal(await count(c, 'work_songwriters'), ws, 'work_songwriters of own works');
    t.same((await c.query('select user_id from user_publishers')).rows, [{ user_id: C1 }], 'own membership only');
  });
  // multi@example.com: publishers they are a member of
  await app({ user: userId('multi@example.com') }, async (c) => {
    t.same((await c.query('select id from publishers order by id')).rows.map((r) => r.id), [DMP, SPIRIT]);
  });
});

t.test('RLS: writes outside the context are rejected', async (t) => {
  const pub = { publisher: DMP, user: ADMIN, scope: 'publisher' as const };
  await t.rejects(app(pub, (c) => c.query(`insert into works (publisher_id, title) values ($1, 'x')`, [SPIRIT])), /row-level security/, 'other publisher_id');
  await t.rejects(app(pub, (c) => c.query(`update works set publisher_id = $1 where publisher_id = $2`, [SPIRIT, DMP])), /row-level security/, 'move to other publisher');
  await app(pub, async (c) => {
    const r = await c.query(`update works set title = 'hijack' where publisher_id = $1`, [SPIRIT]);
    t.equal(r.rowCount, 0, 'cannot update rows of another publisher');
    const ins = await c.query(`insert into works (publisher_id, title, iswc) values ($1, 'New', 'T0345246801') returning id`, [DMP]);
    t.equal(ins.rowCount, 1, 'own publisher insert works');
  });
  await t.rejects(app(pub, (c) => c.query(`delete from works`)), /permission denied/, 'no DELETE privilege');
  const own = { publisher: SONGTRUST, user: C1, scope: 'own' as const };
  await t.rejects(app(own, (c) => c.query(`insert into works (publisher_id, owner_user_id, title) values ($1, $2, 'x')`, [SONGTRUST, C2])), /row-level security/, 'creator cannot create for someone else');
  await t.rejects(app(own, (c) => c.query(`insert into works (publisher_id, title) values ($1, 'x')`, [SONGTRUST])), /row-level security/, 'creator cannot create unowned');
  await t.rejects(app(own, (c) => c.query(`update works set owner_user_id = $1 where owner_user_id = $2`, [C2, C1])), /row-level security/, 'creator cannot give away');
  await t.rejects(app(own, (c) => c.query(`update works set deleted_at = now() where owner_user_id = $1`, [C1])), /row-level security/, 'creator cannot soft-delete');
  await app(own, async (c) => {
    t.equal((await c.query(`insert into works (publisher_id, owner_user_id, title) values ($1, $2, 'mine')`, [SONGTRUST, C1])).rowCount, 1, 'creator creates own');
    t.equal((await c.query(`update works set title = 'x' where owner_user_id = $1`, [C2])).rowCount, 0, 'cannot touch others');
  });
  await t.rejects(app(pub, (c) => c.query(`update users set is_system_admin = true where id = $1`, [ADMIN])), /permission denied/, 'no is_system_admin escalation');
  await t.rejects(app(pub, (c) => c.query(`insert into authz_outbox (operation, object, relation, subject) values ('write','a','b','c')`)), /permission denied/, 'outbox: no INSERT');
});

t.test('RLS: a users row is updatable only by that user, in its profile columns', async (t) => {
  const MULTI = userId('multi@example.com');
  const SYS = userId('sysadmin@example.com');
  const OWNER = userId('owner@spirit.example');
  const spiritAdmin = { publisher: SPIRIT, user: OWNER, scope: 'publisher' as const };
  const snapshot = async () => admin(`select id, email, display_name, status, deleted_at, is_system_admin from users order by id`);
  const before = await snapshot();
  // the reviewer's reproduction: Spirit's admin rewrites a member shared with DMP
  await t.rejects(app(spiritAdmin, (c) => c.query(`update users set email = 'x@evil' where id = $1`, [MULTI])), /permission denied/, 'no email change through the app at all');
  await t.rejects(app(spiritAdmin, (c) => c.query(`update users set email = 'owner2@spirit.example' where id = $1`, [OWNER])), /permission denied/, 'not even of oneself');
  await inTx(db.appUrl, spiritAdmin, async (c) => {
    const r = await c.query(`update users set status = 'disabled' where id = $1`, [MULTI]);
    t.equal(r.rowCount, 0, "Spirit's admin cannot disable multi@example.com (also a DMP member)");
    t.equal((await c.query(`update users set display_name = 'pwned' where id <> $1`, [OWNER])).rowCount, 0, 'nor change any other user');
  }, true);
  for (const ctx of [spiritAdmin, { publisher: DMP, user: ADMIN, scope: 'publisher' as const }, { publisher: DMP, user: userId('viewer@dmp.example'), scope: 'publisher' as const }]) {
    await inTx(db.appUrl, ctx, async (c) => {
      t.equal((await c.query(`update users set status = 'disabled' where id = $1`, [MULTI])).rowCount, 0, `${ctx.user}: not another member's status`);
      t.equal((await c.query(`update users set deleted_at = now() where id = $1`, [MULTI])).rowCount, 0, `${ctx.user}: nor delete them`);
    }, true);
  }
  // the system admin's row cannot be soft-deleted by a publisher admin (its trigger would revoke system:platform#admin) …
  await inTx(db.adminUrl, null, (c) => c.query(`insert into user_publishers (publisher_id, user_id, role) values ($1, $2, 'viewer')`, [SPIRIT, SYS]), true);
  t.teardown(() => admin(`delete from user_publishers where publisher_id = $1 and user_id = $2`, [SPIRIT, SYS]));
  await inTx(db.appUrl, spiritAdmin, async (c) => {
    t.equal((await c.query(`update users set deleted_at = now() where id = $1`, [SYS])).rowCount, 0, 'no soft delete of the system admin by a publisher admin');
    t.equal((await c.query(`update users set status = 'disabled', updated_at = now() where id = $1`, [SYS])).rowCount, 0, 'nor disable the system admin');
  }, true);
  // … nor by itself (status and deletion are a system admin's, never on oneself); the flag is never the app's
  const sysCtx = { publisher: SPIRIT, user: SYS, scope: 'publisher' as const };
  await t.rejects(app(sysCtx, (c) => c.query(`update users set deleted_at = now() where id = $1`, [SYS])), /never on oneself/, 'system admin cannot soft-delete itself');
  await t.rejects(app(sysCtx, (c) => c.query(`update users set status = 'disabled' where id = $1`, [SYS])), /never on oneself/, 'nor disable itself');
  await t.rejects(app(sysCtx, (c) => c.query(`update users set is_system_admin = false where id = $1`, [SYS])), /permission denied/, 'nor drop the flag');
  await app(sysCtx, async (c) => {
    t.equal((await c.query(`update users set status = 'disabled' where id = $1`, [MULTI])).rowCount, 1, 'a system admin disables another user (rolled back)');
  });
  t.same(await snapshot(), before, 'no user changed');
  // a user edits their own profile (with or without a publisher context)
  for (const ctx of [{ user: MULTI }, { publisher: SPIRIT, user: MULTI, scope: 'publisher' as const }]) {
    await app(ctx, async (c) => {
      const r = await c.query(`update users set display_name = 'Multi Renamed', timezone = 'Europe/London', updated_at = now(), updated_by = $1 where id = $1`, [MULTI]);
      t.equal(r.rowCount, 1, 'own row');
      await t.rejects(c.query(`update users set id = gen_random_uuid() where id = $1`, [MULTI]), /permission denied/, 'not the id');
    });
  }
  await t.rejects(app({ user: MULTI }, (c) => c.query(`update users set id = $1 where id = $2`, [OWNER, MULTI])), /permission denied/);
});

t.test('outbox: the app role has no access at all; the relays\' role claims and marks through the functions', async (t) => {
  const pub = { publisher: DMP, user: ADMIN, scope: 'publisher' as const };
  await t.rejects(app(pub, (c) => c.query(`select * from authz_outbox limit 1`)), /permission denied/, 'no SELECT (every publisher\'s tuples)');
  await t.rejects(app(pub, (c) => c.query(`select count(*) from authz_outbox`)), /permission denied/, 'not even a count');
  await t.rejects(app(pub, (c) => c.query(`update authz_outbox set delivered_at = now() where delivered_at is null`)), /permission denied/, 'no UPDATE (mark revocations delivered)');
  await t.rejects(app(pub, (c) => c.query(`update authz_outbox set attempts = 0`)), /permission denied/, 'no UPDATE of attempts');
  await t.rejects(app(pub, (c) => c.query(`delete from authz_outbox`)), /permission denied/, 'no DELETE');
  await t.rejects(app(pub, (c) => c.query(`select authz_outbox_emit('write', 'system:platform', 'admin', 'user:x')`)), /permission denied/, 'no direct emit');
  const executable = async (role: string) => (await admin(`select p.proname from pg_proc p where p.pronamespace = 'public'::regnamespace and p.proname like 'authz_outbox%'
    and has_function_privilege($1, p.oid, 'execute') order by 1`, [role])).map((r) => r.proname);
  t.same(await executable('catalog_app'), [], 'catalog_app executes none of them (0011: the relay runs as catalog_jobs)');
  t.same(await executable('catalog_jobs'), ['authz_outbox_claim', 'authz_outbox_mark'], 'catalog_jobs executes only the relay functions');
  await t.rejects(app(pub, (c) => c.query(`select * from authz_outbox_claim(1)`)), /permission denied/, 'catalog_app cannot claim');
  await t.rejects(app(pub, (c) => c.query(`select authz_outbox_mark(array[1]::bigint[], null)`)), /permission denied/, 'nor mark');
  const publicAcl = await admin(`select p.proname from pg_proc p, aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
    where p.pronamespace = 'public'::regnamespace and p.proname like 'authz_outbox%' and a.grantee = 0`);
  t.same(publicAcl, [], 'no function executable by PUBLIC');

  const pendingIds = async () => (await admin(`select id::text as id from authz_outbox where delivered_at is null order by authz_outbox.id`)).map((r) => r.id as string);
  const first = (await pendingIds()).slice(0, 3);
  t.equal(first.length, 3);
  await inTx(db.jobsUrl, null, async (c) => {
    const claimed = (await c.query(`select id::text, operation, object, relation, subject, delivered_at from authz_outbox_claim(3)`)).rows;
    t.same(claimed.map((r) => r.id), first, 'claims the oldest pending rows in id order');
    // locks hold until the end of the caller's transaction: another claimer skips them
    const other = await inTx(db.jobsUrl, null, async (c2) => (await c2.query(`select id::text from authz_outbox_claim(3)`)).rows.map((r) => r.id));
    t.equal(other.filter((id) => first.includes(id)).length, 0, 'a concurrent claim skips locked rows');
    t.equal((await c.query(`select authz_outbox_mark($1::bigint[], $2) as n`, [[first[0]], 'boom'])).rows[0].n, 1, 'mark failed');
    t.equal((await c.query(`select authz_outbox_mark($1::bigint[], null) as n`, [first.slice(1)])).rows[0].n, 2, 'mark delivered');
    t.equal((await c.query(`select authz_outbox_mark($1::bigint[], null) as n`, [first.slice(1)])).rows[0].n, 0, 'delivered rows are not marked again');
  }, true);
  const rows = await admin(`select id::text, delivered_at is not null as delivered, attempts, last_error from authz_outbox where id = any($1::bigint[]) order by id`, [first]);
  t.same(rows, [
    { id: first[0], delivered: false, attempts: 1, last_error: 'boom' },
    { id: first[1], delivered: true, attempts: 0, last_error: null },
    { id: first[2], delivered: true, attempts: 0, last_error: null },
  ]);
  await inTx(db.jobsUrl, null, async (c) => {
    t.equal((await c.query(`select count(*)::int as n from authz_outbox_claim(0)`)).rows[0].n, 1, 'batch size is at least 1');
    t.equal((await c.query(`select count(*)::int as n from authz_outbox_claim(100000)`)).rows[0].n, 100, 'and at most 100');
  });
});

t.test('check constraints and the share-sum trigger', async (t) => {
  // as the system admin: slug and type are its to change (0006), so the constraints are what refuses
  const pub = { publisher: DMP, user: userId('sysadmin@example.com'), scope: 'publisher' as const };
  const bad = async (sql: string, params: unknown[], re: RegExp, msg: string) => t.rejects(app(pub, (c) => c.query(sql, params)), re, msg);
  await bad(`insert into works (publisher_id, title, iswc) values ($1, 'x', 'T-034.524.680-1')`, [DMP], /works_iswc_check/, 'ISWC must be normalised');
  await bad(`insert into works (publisher_id, title, iswc) values ($1, 'x', 'T03452468')`, [DMP], /works_iswc_check/, 'ISWC length');
  await bad(`insert into recordings (publisher_id, title, isrc) values ($1, 'x', 'us-rc1-76-07839')`, [DMP], /recordings_isrc_check/, 'ISRC');
  await bad(`insert into songwriters (publisher_id, last_name, ipi_name_number) values ($1, 'x', '123')`, [DMP], /songwriters_ipi_name_number_check/, 'IPI');
  await bad(`update publishers set slug = 'Bad Slug' where id = $1`, [DMP], /publishers_slug_check/, 'slug');
  await bad(`update publishers set type = 'huge' where id = $1`, [DMP], /publishers_type_check/, 'publisher type enum');
  await bad(`update user_publishers set role = 'owner' where publisher_id = $1 and role <> 'admin'`, [DMP], /user_publishers_role_check/, 'role enum');
  const [work] = await admin(`select work_id, count(*)::int as n from work_songwriters where publisher_id = $1 group by 1 having count(*) = 1 limit 1`, [DMP]);
  const [sw] = await admin(`select id from songwriters where publisher_id = $1 and id not in (select songwriter_id from work_songwriters where work_id = $2) limit 1`, [DMP, work.work_id]);
  await bad(
    `insert into work_songwriters (work_id, songwriter_id, publisher_id, role, performance_share) values ($1, $2, $3, 'C', 100.5)`,
    [work.work_id, sw.id, DMP],
    /work_songwriters_performance_share_check/,
    'share ≤ 100',
  );
  await bad(
    `insert into work_songwriters (work_id, songwriter_id, publisher_id, role, performance_share) values ($1, $2, $3, 'XX', 1)`,
    [work.work_id, sw.id, DMP],
    /work_songwriters_role_check/,
    'CWR role',
  );
  const [cur] = await admin(`select performance_share::float as p from work_songwriters where work_id = $1`, [work.work_id]);
  const room = 100 - cur.p;
  await bad(
    `insert into work_songwriters (work_id, songwriter_id, publisher_id, role, performance_share) values ($1, $2, $3, 'C', $4)`,
    [work.work_id, sw.id, DMP, room + 0.01],
    /exceed 100/,
    'share sum > 100 rejected',
  );
  await app(pub, async (c) => {
    await c.query(`insert into work_songwriters (work_id, songwriter_id, publisher_id, role, performance_share) values ($1, $2, $3, 'C', $4)`, [work.work_id, sw.id, DMP, room]);
    t.pass('share sum = 100 accepted');
  });
  const [foreign] = await admin(`select id from songwriters where publisher_id = $1 limit 1`, [SPIRIT]);
  await bad(
    `insert into work_songwriters (work_id, songwriter_id, publisher_id, role) values ($1, $2, $3, 'C')`,
    [work.work_id, foreign.id, DMP],
    /work_songwriters_songwriter_fkey/,
    'songwriter of another publisher (composite foreign key)',
  );
  await bad(
    `insert into work_songwriters (work_id, songwriter_id, publisher_id, role) values ($1, $2, $3, 'C')`,
    [work.work_id, foreign.id, SPIRIT],
    /row-level security/,
    'link row of another publisher (RLS)',
  );
});

t.test('outbox: membership insert/update/delete, work insert/owner change/soft delete', async (t) => {
  const since = Number((await admin('select coalesce(max(id), 0) as m from authz_outbox'))[0].m);
  const rows = async () =>
    (await admin('select operation, object, relation, subject from authz_outbox where id > $1 order by id', [since])).map(
      (r) => `${r.operation} ${r.object}#${r.relation}@${r.subject}`,
    );
  const pub = { publisher: SPIRIT, user: userId('owner@spirit.example'), scope: 'publisher' as const };
  const u = userId('viewer@dmp.example');
  let workId = '';
  // enrolling a non-member needs a system admin; Spirit's admin then changes and removes it (one context per transaction)
  await inTx(db.appUrl, { publisher: SPIRIT, user: userId('sysadmin@example.com'), scope: 'publisher' }, async (c) => {
    await c.query(`insert into user_publishers (publisher_id, user_id, role) values ($1, $2, 'viewer')`, [SPIRIT, u]);
  }, true);
  await inTx(db.appUrl, pub, async (c) => {
    await c.query(`update user_publishers set role = 'editor' where publisher_id = $1 and user_id = $2`, [SPIRIT, u]);
    await c.query(`delete from user_publishers where publisher_id = $1 and user_id = $2`, [SPIRIT, u]);
    workId = (await c.query(`insert into works (publisher_id, title) values ($1, 'Outbox') returning id`, [SPIRIT])).rows[0].id;
    await c.query(`update works set owner_user_id = $1 where id = $2`, [pub.user, workId]);
    await c.query(`update works set owner_user_id = $1 where id = $2`, [userId('multi@example.com'), workId]);
    await c.query(`update works set title = 'no relationship change' where id = $1`, [workId]);
    await c.query(`update works set deleted_at = now() where id = $1`, [workId]);
  }, true);
  const p = `publisher:${SPIRIT}`;
  const w = `work:${workId}`;
  t.same(await rows(), [
    `write ${p}#viewer@user:${u}`,
    `delete ${p}#viewer@user:${u}`,
    `write ${p}#editor@user:${u}`,
    `delete ${p}#editor@user:${u}`,
    `write ${w}#publisher@${p}`,
    `write ${w}#owner@user:${pub.user}`,
    `delete ${w}#owner@user:${pub.user}`,
    `write ${w}#owner@user:${userId('multi@example.com')}`,
    `delete ${w}#publisher@${p}`,
    `delete ${w}#owner@user:${userId('multi@example.com')}`,
  ]);
});

t.test('RLS: only publisher admins change or remove memberships; only system admins enrol', async (t) => {
  const SYS = userId('sysadmin@example.com');
  const VIEWER = userId('viewer@dmp.example');
  const EDITOR = userId('editor@dmp.example');
  const MANAGER = userId('manager@dmp.example');
  const MULTI = userId('multi@example.com');
  const OUTSIDER = userId('creator1@songtrust.example');
  const ctxOf = (publisher: string, user: string, scope: 'publisher' | 'own' | '' = 'publisher') => ({ publisher, user, scope });
  const snapshot = async () => admin(`select publisher_id, user_id, role from user_publishers order by 1, 2`);
  const outboxMax = async () => Number((await admin(`select coalesce(max(id), 0) as m from authz_outbox`))[0].m);
  const before = await snapshot();
  const outboxBefore = await outboxMax();

  // viewer, editor, manager of DMP (scope publisher), a creator (scope own), and an admin of DMP
  // under Spirit's context (scope empty): every write is refused (a forged scope: context.test.ts)
  const refused = [
    ['viewer', ctxOf(DMP, VIEWER)],
    ['editor', ctxOf(DMP, EDITOR)],
    ['manager', ctxOf(DMP, MANAGER)],
    ['multi (viewer of DMP)', ctxOf(DMP, MULTI)],
    ['creator', ctxOf(SONGTRUST, C1, 'own')],
    ['DMP admin in Spirit', ctxOf(SPIRIT, ADMIN, '')],
  ] as const;
  for (const [who, ctx] of refused) {
    const pub = ctx.publisher;
    await t.rejects(
      app(ctx, (c) => c.query(`insert into user_publishers (publisher_id, user_id, role) values ($1, $2, 'admin')`, [pub, OUTSIDER])),
      /row-level security/,
      `${who}: cannot enrol a non-member`,
    );
    await app(ctx, async (c) => {
      t.equal((await c.query(`update user_publishers set role = 'admin' where user_id = $1`, [ctx.user])).rowCount, 0, `${who}: cannot make itself admin`);
      t.equal((await c.query(`update user_publishers set role = 'viewer' where publisher_id = $1`, [pub])).rowCount, 0, `${who}: cannot change roles`);
      t.equal((await c.query(`delete from user_publishers where publisher_id = $1 and user_id <> $2`, [pub, ctx.user])).rowCount, 0, `${who}: cannot remove members`);
      t.equal((await c.query(`delete from user_publishers where user_id = $1`, [ctx.user])).rowCount, 0, `${who}: cannot remove itself either`);
      t.equal((await c.query(`select app_caller_is_publisher_admin() as a`)).rows[0].a, false, `${who}: not a publisher admin`);
      t.equal((await c.query(`select app_caller_is_system_admin() as a`)).rows[0].a, false, `${who}: not a system admin`);
    });
  }
  // an upsert is an insert first
  await t.rejects(
    app(ctxOf(DMP, VIEWER), (c) => c.query(`insert into user_publishers (publisher_id, user_id, role) values ($1, $2, 'admin') on conflict (publisher_id, user_id) do update set role = 'admin'`, [DMP, VIEWER])),
    /row-level security/,
    'viewer: no upsert to admin',
  );
  t.same(await snapshot(), before, 'no membership changed');
  t.equal(await outboxMax(), outboxBefore, 'no relationship written');

  // the publisher admin: changes roles of and removes existing members, cannot enrol anyone
  const dmpAdmin = ctxOf(DMP, ADMIN);
  await app(dmpAdmin, async (c) => {
    t.same((await c.query(`select app_caller_is_publisher_admin() as a, app_caller_is_system_admin() as s`)).rows[0], { a: true, s: false }, 'helpers: admin of DMP, not a system admin');
    t.equal((await c.query(`update user_publishers set role = 'editor' where publisher_id = $1 and user_id = $2`, [DMP, VIEWER])).rowCount, 1, 'admin changes a role');
    t.equal((await c.query(`delete from user_publishers where publisher_id = $1 and user_id = $2`, [DMP, EDITOR])).rowCount, 1, 'admin removes a member');
    t.equal((await c.query(`update user_publishers set role = 'admin' where publisher_id = $1 and user_id = $2`, [SPIRIT, MULTI])).rowCount, 0, 'not in another publisher');
    t.equal((await c.query(`delete from user_publishers where publisher_id = $1`, [SPIRIT])).rowCount, 0, 'nor remove there');
  });
  await t.rejects(
    app(dmpAdmin, (c) => c.query(`insert into user_publishers (publisher_id, user_id, role) values ($1, $2, 'viewer')`, [DMP, OUTSIDER])),
    /row-level security/,
    'admin cannot enrol a non-member',
  );
  await t.rejects(
    app(dmpAdmin, (c) => c.query(`update user_publishers set user_id = $1 where publisher_id = $2 and user_id = $3`, [OUTSIDER, DMP, VIEWER])),
    /permission denied/,
    'admin cannot turn a membership into one of a non-member (only the role is updatable)',
  );
  await t.rejects(
    app(dmpAdmin, (c) => c.query(`update user_publishers set publisher_id = $1 where publisher_id = $2 and user_id = $3`, [SPIRIT, DMP, VIEWER])),
    /permission denied/,
    'nor move it to another publisher',
  );
  await t.rejects(app(dmpAdmin, (c) => c.query(`update user_publishers set created_by = $1`, [ADMIN])), /permission denied/, 'nor rewrite created_by');
  // demoting itself ends its admin rights for the following statements of the transaction
  await app(dmpAdmin, async (c) => {
    await t.rejects(
      c.query(`update user_publishers set role = 'viewer' where publisher_id = $1 and user_id = $2`, [DMP, ADMIN]),
      /keep at least one admin/,
      'the only admin cannot demote itself',
    );
  });
  await app(dmpAdmin, async (c) => {
    t.equal((await c.query(`update user_publishers set role = 'admin' where publisher_id = $1 and user_id = $2`, [DMP, VIEWER])).rowCount, 1, 'admin promotes another member');
    t.equal((await c.query(`update user_publishers set role = 'viewer' where publisher_id = $1 and user_id = $2`, [DMP, ADMIN])).rowCount, 1, 'then demotes itself');
    t.equal((await c.query(`update user_publishers set role = 'admin' where publisher_id = $1 and user_id = $2`, [DMP, ADMIN])).rowCount, 0, 'and cannot undo it');
  });
  // a deleted or disabled admin is no admin
  await admin(`update users set status = 'disabled' where id = $1`, [ADMIN]);
  try {
    await app({ ...dmpAdmin, scope: '' }, async (c) => {
      t.equal((await c.query(`update user_publishers set role = 'editor' where publisher_id = $1 and user_id = $2`, [DMP, VIEWER])).rowCount, 0, 'disabled admin: refused');
    });
  } finally {
    await admin(`update users set status = 'active' where id = $1`, [ADMIN]);
  }

  // the system admin enrols (in any publisher), changes and removes
  const sys = ctxOf(DMP, SYS);
  await app(sys, async (c) => {
    t.same((await c.query(`select app_caller_is_publisher_admin() as a, app_caller_is_system_admin() as s`)).rows[0], { a: true, s: true }, 'helpers: system admin');
    t.equal((await c.query(`insert into user_publishers (publisher_id, user_id, role) values ($1, $2, 'viewer')`, [DMP, OUTSIDER])).rowCount, 1, 'system admin enrols');
    t.equal((await c.query(`update user_publishers set role = 'admin' where publisher_id = $1 and user_id = $2`, [DMP, OUTSIDER])).rowCount, 1, 'and changes the role');
    t.equal((await c.query(`delete from user_publishers where publisher_id = $1 and user_id = $2`, [DMP, OUTSIDER])).rowCount, 1, 'and removes');
  });
  await t.rejects(
    app(sys, (c) => c.query(`insert into user_publishers (publisher_id, user_id, role) values ($1, $2, 'viewer')`, [SPIRIT, OUTSIDER])),
    /row-level security/,
    'system admin: only into the context publisher',
  );
  await admin(`update users set status = 'disabled' where id = $1`, [SYS]);
  try {
    await t.rejects(
      app({ ...sys, scope: '' }, (c) => c.query(`insert into user_publishers (publisher_id, user_id, role) values ($1, $2, 'viewer')`, [DMP, OUTSIDER])),
      /row-level security/,
      'a disabled system admin cannot enrol',
    );
  } finally {
    await admin(`update users set status = 'active' where id = $1`, [SYS]);
  }
  t.same(await snapshot(), before, 'everything above was rolled back');
});

t.test('RLS: only a system admin context creates people', async (t) => {
  const SYS = userId('sysadmin@example.com');
  const insertUser = (c: pg.Client, email: string) => c.query(`insert into users (id, email, display_name) values (gen_random_uuid(), $1, 'Squatter')`, [email]);
  for (const [who, ctx] of [
    ['viewer', { publisher: DMP, user: userId('viewer@dmp.example'), scope: 'publisher' as const }],
    ['publisher admin', { publisher: DMP, user: ADMIN, scope: 'publisher' as const }],
    ['creator', { publisher: SONGTRUST, user: C1, scope: 'own' as const }],
    ['no user', { publisher: DMP, scope: 'publisher' as const }],
  ] as const) {
    await t.rejects(app(ctx, (c) => insertUser(c, 'ceo@dmp.example')), /row-level security/, `${who}: cannot create a user`);
  }
  await app({ publisher: DMP, user: SYS, scope: 'publisher' }, async (c) => {
    t.equal((await insertUser(c, 'new.hire@dmp.example')).rowCount, 1, 'system admin creates a user');
  });
  await app({ user: SYS }, async (c) => {
    t.equal((await insertUser(c, 'new.hire@dmp.example')).rowCount, 1, 'also without a publisher context (user administration)');
  });
  const bot = (c: pg.Client) => c.query(`insert into users (id, kind, display_name) values (gen_random_uuid(), 'api_client', 'Bot')`);
  await app({ publisher: DMP, user: ADMIN, scope: 'publisher' }, async (c) => t.equal((await bot(c)).rowCount, 1, 'an admin (api_clients:manage) creates an API client subject'));
  await t.rejects(app({ publisher: DMP, user: userId('viewer@dmp.example'), scope: 'publisher' }, bot), /row-level security/, 'a viewer does not');
  t.equal(Number((await admin(`select count(*) as n from users where email in ('ceo@dmp.example', 'new.hire@dmp.example') or display_name = 'Bot'`))[0].n), 0, 'rolled back');
});

t.test('RLS helpers: STABLE SECURITY DEFINER, executable by catalog_app only', async (t) => {
  const fns = await admin(`select p.proname, p.provolatile, p.prosecdef, r.rolname, p.proconfig,
      has_function_privilege('catalog_app', p.oid, 'execute') as app
    from pg_proc p join pg_roles r on r.oid = p.proowner
    where p.pronamespace = 'public'::regnamespace and p.proname like 'app_caller_%' order by 1`);
  t.same(fns, [
    { proname: 'app_caller_can', provolatile: 's', prosecdef: true, rolname: 'catalog_owner', proconfig: ['search_path=public, pg_temp'], app: true },
    { proname: 'app_caller_is_publisher_admin', provolatile: 's', prosecdef: true, rolname: 'catalog_owner', proconfig: ['search_path=public, pg_temp'], app: true },
    { proname: 'app_caller_is_system_admin', provolatile: 's', prosecdef: true, rolname: 'catalog_owner', proconfig: ['search_path=public, pg_temp'], app: true },
  ]);
  const publicAcl = await admin(`select p.proname from pg_proc p, aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
    where p.pronamespace = 'public'::regnamespace and p.proname like 'app_caller_%' and a.grantee = 0`);
  t.same(publicAcl, [], 'not executable by PUBLIC');
});

t.test('the permission catalogue in the database is policies/src/permissions.ts', async (t) => {
  const perms = await admin(`select name, description from permissions order by name`);
  t.same(perms, [...PERMISSIONS].map((p) => ({ name: p.name, description: p.description })).sort((a, b) => a.name.localeCompare(b.name)), 'every permission, with its description');
  const roles = await admin(`select r.name, coalesce(array_agg(rp.permission order by rp.permission) filter (where rp.permission is not null), '{}') as permissions
    from roles r left join role_permissions rp on rp.role_id = r.id where r.publisher_id is null group by r.name order by r.name`);
  const expected = [
    ...Object.entries(SYSTEM_ROLE_PERMISSIONS).map(([name, ps]) => ({ name, permissions: [...ps].sort() })),
    ...Object.entries(DEPARTMENT_ROLE_PERMISSIONS).map(([name, ps]) => ({ name: `department-${name}`, permissions: [...ps].sort() })),
  ].sort((a, b) => a.name.localeCompare(b.name));
  t.same(roles, expected, 'the system and department roles hold exactly the catalogue’s sets');
});

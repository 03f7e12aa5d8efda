/**
 * Migration 0011 against real PostgreSQL: the RLS context cannot be forged by SQL running as
 * `catalog_app` — only `app_begin_request` sets it, once per transaction, and the policies read
 * what it recorded, never `set_config` settings — and the relays' functions belong to
 * `catalog_jobs`, which reads no catalog row. Also: the readers run once per statement, not per
 * row; no policy, function or default reads the old settings; 0011 goes down and up again.
 */
import t from 'tap';
import pg from 'pg';
import { MIGRATIONS, migrateDown, migrateUp } from '../../migrations/migrate.ts';
import { seed } from '../../migrations/seed/run.ts';
import { JOB_FUNCTIONS } from '../../migrations/0011_request_context.ts';
import { publisherId, userId } from '../../migrations/seed/demo.ts';
import { adminQuery, beginRequest, createTestDb, inTx, type TestDb } from './db.ts';

const DMP = publisherId('dmp');
const SPIRIT = publisherId('spirit');
const SONGTRUST = publisherId('songtrust');
const ADMIN = userId('admin@dmp.example'); // admin at DMP only
const OWNER = userId('owner@spirit.example'); // admin at Spirit only
const C1 = userId('creator1@songtrust.example');
const SYS = userId('sysadmin@example.com');
const D1 = 'eeeeeeee-0000-4000-8000-000000000001';
const D2 = 'eeeeeeee-0000-4000-8000-000000000002';
const DEPT_EDITOR = 'eeeeeeee-0000-4000-8000-0000000000e1';

/** Every way of setting the four settings the policies used to trust, to the values of `to`. */
const FORGERIES = (to: { publisher: string; user: string; scope: string; department: string }) => [
  ['app.publisher_id', to.publisher],
  ['app.user_id', to.user],
  ['app.access_scope', to.scope],
  ['app.department_id', to.department],
] as const;

let db: TestDb;
t.before(async () => {
  db = await createTestDb('context');
  await migrateUp(db.ownerUrl);
  await seed(db.ownerUrl);
  // a department-scoped editor at DMP (department D1) and a work in each of two departments
  await adminQuery(db.adminUrl, `insert into departments (id, publisher_id, name) values ($1, $3, 'One'), ($2, $3, 'Two')`, [D1, D2, DMP]);
  await adminQuery(db.adminUrl, `insert into users (id, email, display_name) values ($1, 'dept.editor@dmp.example', 'Department editor')`, [DEPT_EDITOR]);
  await adminQuery(db.adminUrl, `insert into user_publishers (publisher_id, user_id, role, department_id) values ($1, $2, 'editor', $3)`, [DMP, DEPT_EDITOR, D1]);
  await adminQuery(db.adminUrl, `insert into works (publisher_id, title, department_id) values ($1, 'In D1', $2), ($1, 'In D2', $3)`, [DMP, D1, D2]);
});
t.teardown(async () => {
  await db?.drop();
});

const admin = async (sql: string, params: unknown[] = []) => (await adminQuery(db.adminUrl, sql, params)).rows;
const countOf = async (c: pg.ClientBase, sql: string, params: unknown[] = []) => Number((await c.query(sql, params)).rows[0].n);
/** What a context sees of the catalog: works per publisher. */
const worksSeen = async (c: pg.ClientBase) =>
  Object.fromEntries((await c.query(`select publisher_id, count(*)::int as n from works group by 1 order by 1`)).rows.map((r) => [r.publisher_id, r.n]));
const worksOf = async (publisher: string) => Number((await admin(`select count(*) as n from works where publisher_id = $1`, [publisher]))[0].n);

t.test('after app_begin_request for DMP, set_config of every setting reveals and allows nothing of Spirit', async (t) => {
  const dmpWorks = await worksOf(DMP);
  const spiritWorks = await worksOf(SPIRIT);
  t.ok(dmpWorks > 0 && spiritWorks > 0, 'both publishers have works');
  const spiritWork = (await admin(`select id from works where publisher_id = $1 limit 1`, [SPIRIT]))[0].id as string;
  for (const local of [true, false]) {
    await inTx(db.appUrl, { publisher: DMP, user: ADMIN, scope: 'publisher' }, async (c) => {
      t.same(await worksSeen(c), { [DMP]: dmpWorks }, 'the genuine context: DMP only');
      // one setting at a time, then all four together
      const forged = FORGERIES({ publisher: SPIRIT, user: OWNER, scope: 'publisher', department: D2 });
      for (const set of [...forged.map((f) => [f] as const), forged]) {
        for (const [name, value] of set) await c.query(`select set_config($1, $2, $3)`, [name, value, local]);
        const names = set.map(([n]) => n).join(' + ');
        t.same(await worksSeen(c), { [DMP]: dmpWorks }, `${names} (${local ? 'local' : 'session'}): still DMP's works only`);
        t.equal(await countOf(c, `select count(*) as n from works where publisher_id = $1`, [SPIRIT]), 0, `${names}: no Spirit work`);
        t.equal(await countOf(c, `select count(*) as n from user_publishers where publisher_id = $1`, [SPIRIT]), 0, `${names}: no Spirit membership`);
        t.equal((await c.query(`update works set title = 'hijacked' where id = $1`, [spiritWork])).rowCount, 0, `${names}: cannot update a Spirit work`);
        t.same((await c.query(`select app_current_publisher() as p, app_current_user() as u, app_current_scope() as s, app_current_department() as d`)).rows[0], { p: DMP, u: ADMIN, s: 'publisher', d: null }, `${names}: the readers return the recorded context`);
      }
      // writing into Spirit needs the insert policy: refused (in a savepoint, so the transaction goes on)
      await c.query('savepoint w');
      await t.rejects(c.query(`insert into works (publisher_id, title) values ($1, 'Planted')`, [SPIRIT]), /row-level security/, 'no insert into Spirit');
      await c.query('rollback to savepoint w');
      t.equal((await c.query(`select app_caller_is_system_admin() as s`)).rows[0].s, false, 'a forged app.user_id (a system admin) grants nothing');
    });
  }
  // a forged system admin: still DMP's admin
  await inTx(db.appUrl, { publisher: DMP, user: ADMIN }, async (c) => {
    await c.query(`select set_config('app.user_id', $1, true), set_config('app.access_scope', 'platform', true), set_config('app.publisher_id', '', true)`, [SYS]);
    t.equal(await countOf(c, `select count(*) as n from users where id = $1`, [OWNER]), 0, 'scope platform forged: no other publisher’s user');
    t.equal((await c.query(`select app_caller_can('members:remove') as ok`)).rows[0].ok, true, 'DMP admin keeps its own permissions …');
    await c.query('savepoint w');
    await t.rejects(c.query(`insert into users (id, email, display_name) values (gen_random_uuid(), 'planted@example.com', 'Planted')`), /row-level security/, '… and cannot create people (a system admin’s)');
    await c.query('rollback to savepoint w');
  });
  t.equal(await worksOf(SPIRIT), spiritWorks, "Spirit's works unchanged");
  t.equal((await admin(`select title from works where id = $1`, [spiritWork]))[0].title !== 'hijacked', true, 'nothing hijacked');
});

t.test('a creator and a department member cannot widen their scope with set_config', async (t) => {
  const owned = Number((await admin(`select count(*) as n from works where owner_user_id = $1`, [C1]))[0].n);
  t.ok(owned > 0 && owned < (await worksOf(SONGTRUST)));
  await inTx(db.appUrl, { publisher: SONGTRUST, user: C1, scope: 'own' }, async (c) => {
    await c.query(`select set_config('app.access_scope', 'publisher', true)`);
    t.equal(await countOf(c, `select count(*) as n from works`), owned, 'scope publisher forged: own works only');
    t.equal((await c.query(`update works set title = 'taken' where owner_user_id is distinct from $1`, [C1])).rowCount, 0, 'and none of the others is writable');
  });
  await inTx(db.appUrl, { publisher: DMP, user: DEPT_EDITOR, scope: 'department' }, async (c) => {
    t.same((await c.query(`select title from works order by title`)).rows, [{ title: 'In D1' }], 'the genuine context: its department');
    await c.query(`select set_config('app.department_id', $1, true)`, [D2]);
    t.same((await c.query(`select title from works order by title`)).rows, [{ title: 'In D1' }], 'another department forged: still D1 only');
    await c.query(`select set_config('app.access_scope', 'publisher', true)`);
    t.same((await c.query(`select title from works order by title`)).rows, [{ title: 'In D1' }], 'scope publisher forged: still D1 only');
    t.equal((await c.query(`update works set title = 'moved' where department_id = $1`, [D2])).rowCount, 0, 'no write in D2');
  });
});

t.test('app_begin_request: once per transaction; a fresh transaction starts without a context and may set a new one', async (t) => {
  const c = new pg.Client({ connectionString: db.appUrl });
  await c.connect();
  t.teardown(() => c.end());
  await c.query('begin');
  await beginRequest(c, { publisher: DMP, user: ADMIN, scope: 'publisher' });
  const second = c.query(`select * from app_begin_request($1, $2)`, [OWNER, SPIRIT]);
  await t.rejects(second, { code: '42501', message: /already has its request context/ }, 'a second call raises (42501)');
  await c.query('rollback');

  // the same, hidden in a subtransaction that swallows the error: the context stays DMP's
  await c.query('begin');
  await beginRequest(c, { publisher: DMP, user: ADMIN });
  await c.query(`do $$ begin perform app_begin_request('${OWNER}', '${SPIRIT}'); exception when others then null; end $$`);
  await c.query('savepoint s');
  await t.rejects(c.query(`select * from app_begin_request($1, $2)`, [ADMIN, DMP]), /already/, 'also with the same arguments, also in a savepoint');
  await c.query('rollback to savepoint s');
  t.same(await worksSeen(c), { [DMP]: await worksOf(DMP) }, 'the context is still the first one');
  await c.query('commit');

  // the next transaction on the same connection (same backend, its old row still there): nothing
  await c.query('begin');
  t.equal(await countOf(c, `select count(*) as n from works`), 0, 'a new transaction has no context');
  t.same((await c.query(`select app_current_publisher() as p, app_current_user() as u, app_current_scope() as s`)).rows[0], { p: null, u: null, s: null });
  await c.query(`select set_config('app.publisher_id', $1, true), set_config('app.user_id', $2, true), set_config('app.access_scope', 'publisher', true)`, [SPIRIT, OWNER]);
  t.equal(await countOf(c, `select count(*) as n from works`), 0, 'set_config alone (no app_begin_request): zero rows');
  await beginRequest(c, { publisher: SPIRIT, user: OWNER, scope: 'publisher' });
  t.same(await worksSeen(c), { [SPIRIT]: await worksOf(SPIRIT) }, 'app_begin_request opens a new context: Spirit now');
  await c.query('rollback');

  // autocommit: each statement is its own transaction
  await c.query(`select * from app_begin_request($1, $2)`, [ADMIN, DMP]);
  t.equal(await countOf(c, `select count(*) as n from works`), 0, 'an autocommitted call sets nothing for the next statement');
  await t.rejects(c.query(`select * from app_begin_request(null, $1)`, [DMP]), { code: '22004' }, 'a user is required');
});

t.test('the context table and the readers: no way in for catalog_app', async (t) => {
  await inTx(db.appUrl, { publisher: DMP, user: ADMIN }, async (c) => {
    for (const sql of [
      `select * from app_request_contexts`,
      `update app_request_contexts set publisher_id = '${SPIRIT}'`,
      `insert into public.app_request_contexts (backend_pid, xid, user_id, publisher_id, access_scope) values (0, '1', null, null, '')`,
      `delete from app_request_contexts`,
    ]) {
      await c.query('savepoint s');
      await t.rejects(c.query(sql), /permission denied/, sql.split(' ').slice(0, 2).join(' '));
      await c.query('rollback to savepoint s');
    }
  });
  // a temporary table of the same name cannot stand in for it (the readers name public.…, search_path pinned)
  await inTx(db.appUrl, null, async (c) => {
    await c.query(`create temp table app_request_contexts (backend_pid int, xid xid8, user_id uuid, publisher_id uuid, access_scope text, department_id uuid) on commit drop`);
    await c.query(`insert into app_request_contexts values (pg_backend_pid(), pg_current_xact_id(), $1, $2, 'publisher', null)`, [OWNER, SPIRIT]);
    t.equal(await countOf(c, `select count(*) as n from pg_temp.app_request_contexts`), 1, 'the temporary row exists');
    t.equal(await countOf(c, `select count(*) as n from works`), 0, 'and is ignored');
  });
  const fns = await admin(`select p.proname, p.provolatile, p.prosecdef, r.rolname, p.proconfig,
      has_function_privilege('catalog_app', p.oid, 'execute') as app, has_function_privilege('catalog_jobs', p.oid, 'execute') as jobs
    from pg_proc p join pg_roles r on r.oid = p.proowner
    where p.pronamespace = 'public'::regnamespace and (p.proname like 'app_current_%' or p.proname = 'app_begin_request') order by 1`);
  t.same(fns.map((f) => [f.proname, f.provolatile, f.prosecdef, f.rolname, f.proconfig, f.app, f.jobs]), [
    ['app_begin_request', 'v', true, 'catalog_owner', ['search_path=public, pg_temp'], true, false],
    ['app_current_department', 's', true, 'catalog_owner', ['search_path=public, pg_temp'], true, true],
    ['app_current_publisher', 's', true, 'catalog_owner', ['search_path=public, pg_temp'], true, true],
    ['app_current_scope', 's', true, 'catalog_owner', ['search_path=public, pg_temp'], true, true],
    ['app_current_user', 's', true, 'catalog_owner', ['search_path=public, pg_temp'], true, true],
  ], 'readers STABLE, the definer VOLATILE; SECURITY DEFINER, owned by catalog_owner, search_path pinned; only catalog_app begins a request');
  const publicAcl = await admin(`select p.proname from pg_proc p, aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
    where p.pronamespace = 'public'::regnamespace and (p.proname like 'app_current_%' or p.proname = 'app_begin_request') and a.grantee = 0`);
  t.same(publicAcl, [], 'nothing executable by PUBLIC');
});

t.test('no policy, function or default reads the settings any more (except the owner fallback of the readers)', async (t) => {
  const needle = String.raw`current_setting\('app\.(publisher_id|user_id|access_scope|department_id)'`;
  const left = await admin(
    `select 'policy ' || tablename || '.' || policyname as what from pg_policies
      where schemaname = 'public' and (coalesce(qual, '') ~* $1 or coalesce(with_check, '') ~* $1)
     union all select 'function ' || proname from pg_proc
      where pronamespace = 'public'::regnamespace and prosrc ~* $1 and proname not like 'app_current_%'
     union all select 'default ' || c.relname || '.' || a.attname from pg_attrdef d join pg_class c on c.oid = d.adrelid
       join pg_attribute a on a.attrelid = d.adrelid and a.attnum = d.adnum
      where c.relnamespace = 'public'::regnamespace and pg_get_expr(d.adbin, d.adrelid) ~* $1
     union all select 'function (set_config) ' || proname from pg_proc
      where pronamespace = 'public'::regnamespace and prosrc ~* 'set_config\\(''app\\.'`,
    [needle],
  );
  t.same(left, [], 'nothing left');
  const readers = Number((await admin(`select count(*) as n from pg_policies where schemaname = 'public' and coalesce(qual, '') || coalesce(with_check, '') ~ 'app_current_'`))[0].n);
  t.ok(readers >= 40, `${readers} policies read the recorded context`);
  const unwrapped = await admin(`select tablename || '.' || policyname as p from pg_policies
    where schemaname = 'public' and regexp_replace(coalesce(qual, '') || coalesce(with_check, ''), '\\( SELECT (app_current_\\w+\\(\\) AS [^)]+|\\(app_current_scope\\(\\) = ''\\w+''::text\\))\\)', '', 'g') ~ 'app_current_'`);
  // (0013 tests the scope as a boolean InitPlan, `(select app_current_scope() = 'own')`: still once per statement)
  t.same(unwrapped, [], 'every policy reads them wrapped in (select …): once per statement');
});

t.test('the readers run once per statement, not once per row', async (t) => {
  // the superuser counts function calls of its transaction (pg_stat_xact_user_functions) while acting as catalog_app
  const calls = async (sql: string) => {
    const c = new pg.Client({ connectionString: db.adminUrl });
    await c.connect();
    try {
      await c.query(`begin; set local track_functions = 'all'; set local role catalog_app`);
      await beginRequest(c, { publisher: DMP, user: ADMIN, scope: 'publisher' });
      const before = Number((await c.query(`select coalesce(sum(calls), 0) as n from pg_stat_xact_user_functions where funcname like 'app_current_%'`)).rows[0].n);
      const rows = (await c.query(sql)).rowCount ?? 0;
      const after = Number((await c.query(`select coalesce(sum(calls), 0) as n from pg_stat_xact_user_functions where funcname like 'app_current_%'`)).rows[0].n);
      return { rows, calls: after - before };
    } finally {
      await c.query('rollback').catch(() => undefined);
      await c.end();
    }
  };
  const id = (await admin(`select id from works where publisher_id = $1 limit 1`, [DMP]))[0].id as string;
  const one = await calls(`select id from works where id = '${id}'`);
  const all = await calls(`select id from works`);
  t.equal(one.rows, 1);
  t.ok(all.rows > 100, `${all.rows} rows`);
  t.ok(all.calls > 0 && all.calls <= 10, `${all.calls} reader calls for ${all.rows} rows (initplans: once per statement)`);
  t.ok(all.calls <= one.calls + 2, `about as many as for one row (${one.calls})`);
});

t.test('the relays’ functions: catalog_jobs only; catalog_jobs reads no catalog row and sets no context', async (t) => {
  const rows = await admin(`select f as fn, has_function_privilege('catalog_app', f::regprocedure, 'execute') as app,
      has_function_privilege('catalog_jobs', f::regprocedure, 'execute') as jobs, has_function_privilege('catalog_auth', f::regprocedure, 'execute') as auth
    from unnest($1::text[]) f`, [[...JOB_FUNCTIONS]]);
  for (const r of rows) t.same({ app: r.app, jobs: r.jobs, auth: r.auth }, { app: false, jobs: true, auth: false }, `${r.fn}: catalog_jobs only`);
  await inTx(db.appUrl, { publisher: DMP, user: ADMIN }, async (c) => {
    for (const sql of ['select * from authz_outbox_claim(1)', 'select * from domain_events_claim(1)', 'select * from domain_events_stats()', 'select * from metering_publishers()', `select metering_record_measurements('${SPIRIT}', '2020-01-01', 1)`]) {
      await c.query('savepoint s');
      await t.rejects(c.query(sql), /permission denied/, `catalog_app: ${sql}`);
      await c.query('rollback to savepoint s');
    }
  });
  await inTx(db.jobsUrl, null, async (c) => {
    t.ok((await c.query(`select * from authz_outbox_claim(2)`)).rowCount! > 0, 'catalog_jobs claims outbox rows');
    t.match((await c.query(`select pending::int from domain_events_stats()`)).rows[0], { pending: Number }, 'reads the event stats');
    t.ok((await c.query(`select * from metering_publishers()`)).rowCount! >= 3, 'lists the publishers with their limits');
    const bytes = Number((await c.query(`select metering_record_measurements($1, '2020-01-01', 1) as b`, [SPIRIT])).rows[0].b);
    t.ok(bytes > 0, `measures Spirit's catalog (${bytes} bytes) under a context recorded for it alone`);
    t.equal(await countOf(c, `select count(*) as n from (select app_current_publisher() as p) x where p is not null`), 0, 'and leaves no context behind');
  });
  const granted = await admin(`select table_name, privilege_type from information_schema.role_table_grants where grantee = 'catalog_jobs'
    union all select table_name, privilege_type from information_schema.column_privileges where grantee = 'catalog_jobs'`);
  t.same(granted, [], 'catalog_jobs has no privilege on any table or column');
  await inTx(db.jobsUrl, null, async (c) => {
    for (const table of ['works', 'songwriters', 'recordings', 'users', 'user_publishers', 'publishers', 'accounts', 'authz_outbox', 'domain_events', 'user_credentials', 'app_request_contexts']) {
      await c.query('savepoint s');
      await t.rejects(c.query(`select 1 from ${table} limit 1`), /permission denied/, `catalog_jobs cannot read ${table}`);
      await c.query('rollback to savepoint s');
    }
    await t.rejects(c.query(`select * from app_begin_request($1, $2)`, [ADMIN, DMP]), /permission denied/, 'nor begin a request context');
  });
  const [role] = await admin(`select rolcanlogin, rolsuper, rolbypassrls, rolcreaterole, rolcreatedb from pg_roles where rolname = 'catalog_jobs'`);
  t.same(role, { rolcanlogin: true, rolsuper: false, rolbypassrls: false, rolcreaterole: false, rolcreatedb: false }, 'catalog_jobs: LOGIN NOSUPERUSER NOBYPASSRLS');
});

t.test('the schema owner may still set the context with set_config (the seed does), only without a recorded one', async (t) => {
  await inTx(db.ownerUrl, null, async (c) => {
    t.equal(await countOf(c, `select count(*) as n from works`), 0, 'the owner without context sees nothing');
    await c.query(`select set_config('app.publisher_id', $1, true), set_config('app.access_scope', 'publisher', true)`, [SPIRIT]);
    t.equal(await countOf(c, `select count(*) as n from works`), await worksOf(SPIRIT), "the owner's setting: Spirit's works");
    await beginRequest(c, { publisher: DMP, user: ADMIN, scope: 'publisher' });
    t.same(await worksSeen(c), { [DMP]: await worksOf(DMP) }, 'a recorded context wins over the settings');
  });
});

t.test('0011 goes down (the settings are read again, the relays are catalog_app’s) and up again', async (t) => {
  // 0011 and every migration after it
  const since0011 = MIGRATIONS.map((m) => m.name).slice(MIGRATIONS.findIndex((m) => m.name === '0011_request_context'));
  t.same(await migrateDown(db.ownerUrl, '0010_metering'), [...since0011].reverse());
  const reads = Number((await admin(`select count(*) as n from pg_policies where coalesce(qual, '') || coalesce(with_check, '') ~ 'current_setting'`))[0].n);
  t.ok(reads >= 40, 'policies read the settings again');
  t.same(await admin(`select proname from pg_proc where pronamespace = 'public'::regnamespace and (proname like 'app_current_%' or proname = 'app_begin_request' or prosrc ~ 'app_current_')`), [], 'no reader, no definer, no reference');
  t.same(await admin(`select to_regclass('public.app_request_contexts') as t`), [{ t: null }], 'no table');
  t.equal((await admin(`select has_function_privilege('catalog_app', 'authz_outbox_claim(integer)', 'execute') as ok`))[0].ok, true, 'catalog_app executes the relay functions again');
  const legacy = async () =>
    inTx(db.appUrl, null, async (c) => {
      await c.query(`select set_config('app.publisher_id', $1, true), set_config('app.access_scope', 'publisher', true), set_config('app.user_id', $2, true)`, [SPIRIT, OWNER]);
      return countOf(c, `select count(*) as n from works`);
    });
  t.equal(await legacy(), await worksOf(SPIRIT), 'after down, the settings work as before 0011');
  t.same(await migrateUp(db.ownerUrl), since0011);
  t.equal(await legacy(), 0, 'after up again, they do nothing');
  await inTx(db.appUrl, { publisher: SPIRIT, user: OWNER, scope: 'publisher' }, async (c) => t.same(await worksSeen(c), { [SPIRIT]: await worksOf(SPIRIT) }));
});

t.test('rows of backends that are gone are dropped by the next new connection', async (t) => {
  const DEAD = 2_147_483_000; // no backend has this pid
  await admin(`insert into app_request_contexts (backend_pid, xid, user_id, publisher_id, access_scope) values ($1, '1', $2, $3, 'publisher')`, [DEAD, ADMIN, DMP]);
  const live = new pg.Client({ connectionString: db.appUrl });
  await live.connect();
  t.teardown(() => live.end());
  await inTx(db.appUrl, { publisher: DMP, user: ADMIN }, async () => undefined, true); // a new connection's first request (committed)
  t.same(await admin(`select backend_pid from app_request_contexts where backend_pid = $1`, [DEAD]), [], 'the stale row is gone');
  await live.query('begin');
  await beginRequest(live, { publisher: SPIRIT, user: OWNER, scope: 'publisher' });
  await inTx(db.appUrl, { publisher: DMP, user: ADMIN }, async () => undefined, true); // another new connection while `live` is in its request
  t.same(await worksSeen(live), { [SPIRIT]: await worksOf(SPIRIT) }, "a live backend's context is never touched");
  await live.query('rollback');
});

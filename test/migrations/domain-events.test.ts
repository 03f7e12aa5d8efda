/**
 * Migration 0009 against real PostgreSQL: the triggers write one `domain_events` row per domain
 * event in the transaction of the change (the whole matrix of tables × changes, the public fields
 * and nothing else), the app role reaches the outbox only through the relay's SECURITY DEFINER
 * functions, and those functions keep the order rules: claim order, backoff and dead letters hold
 * only their own group back, retry/discard, stats, prune.
 */
import t, { type Test } from 'tap';
import pg from 'pg';
import { migrateUp } from '../../migrations/migrate.ts';
import { seed } from '../../migrations/seed/run.ts';
import { publisherId, userId } from '../../migrations/seed/demo.ts';
import { EVENT_FIELDS } from '../../migrations/0009_domain_events.ts';
import { adminQuery, createTestDb, inTx, type TestDb } from './db.ts';

const DMP = publisherId('dmp');
const SONGTRUST = publisherId('songtrust');
const EDITOR = userId('editor@dmp.example');
const SYSADMIN = userId('sysadmin@example.com');

let db: TestDb;
let su: pg.Client;
t.before(async () => {
  db = await createTestDb('domevents');
  await migrateUp(db.ownerUrl);
  await seed(db.ownerUrl);
  su = new pg.Client({ connectionString: db.adminUrl });
  await su.connect();
  // fixtures written as the superuser still name an actor, like a request would
  await su.query(`select set_config('app.user_id', $1, false)`, [SYSADMIN]);
});
t.teardown(async () => {
  await su?.end();
  await db?.drop();
});

type Ev = { id: string; event_id: string; type: string; group_key: string; publisher_id: string | null; object_id: string; payload: any };
const maxId = async () => (await su.query<{ m: string }>(`select coalesce(max(id), 0)::text as m from domain_events`)).rows[0]!.m;
const eventsAfter = async (since: string) =>
  (await su.query<Ev>(`select id::text, event_id::text, type, group_key, publisher_id::text, object_id::text, payload from domain_events where id > $1 order by id`, [since])).rows;
/** The events `fn` caused. */
const during = async (fn: () => Promise<unknown>): Promise<Ev[]> => {
  const since = await maxId();
  await fn();
  return eventsAfter(since);
};
const q = async (sql: string, params: unknown[] = []) => (await su.query(sql, params)).rows;
const one = async (sql: string, params: unknown[] = []) => (await q(sql, params))[0] as Record<string, any>;
const sorted = (a: readonly string[]) => [...a].sort();

/** Common checks of one event: body fields, group, data = exactly the public fields. */
function checkEvent(t: Test, e: Ev, want: { type: string; group: string; publisher: string | null; object: string; table: keyof typeof EVENT_FIELDS; previous?: Record<string, unknown> }) {
  t.equal(e.type, want.type, 'type');
  t.equal(e.group_key, want.group, 'group key (MessageGroupId)');
  t.equal(e.publisher_id, want.publisher, 'publisher_id column');
  t.equal(e.object_id, want.object, 'object_id column');
  const p = e.payload;
  t.same(sorted(Object.keys(p)), sorted(['id', 'type', 'version', 'publisher_id', 'object_id', 'occurred_at', 'actor_user_id', 'data', ...(want.previous ? ['previous'] : [])]), 'body fields');
  t.equal(p.id, e.event_id, 'body id = event id');
  t.equal(p.type, want.type);
  t.equal(p.version, 1);
  t.equal(p.publisher_id, want.publisher);
  t.equal(p.object_id, want.object);
  t.match(p.occurred_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00$/, 'occurred_at in UTC');
  t.same(sorted(Object.keys(p.data)), sorted(EVENT_FIELDS[want.table]), 'data holds exactly the public fields');
  if (want.previous) t.same(p.previous, want.previous, 'previous holds the old values of what changed');
}

t.test('catalog rows: created, updated, deleted, restored, moved, hard-deleted — and nothing for no-op changes', async (t) => {
  const specs = [
    { table: 'works' as const, typ: 'work', insert: `insert into works (publisher_id, title) values ($1, 'Evt work') returning id::text`, field: 'title' },
    { table: 'songwriters' as const, typ: 'songwriter', insert: `insert into songwriters (publisher_id, last_name) values ($1, 'Evt') returning id::text`, field: 'last_name' },
    { table: 'recordings' as const, typ: 'recording', insert: `insert into recordings (publisher_id, title) values ($1, 'Evt rec') returning id::text`, field: 'title' },
  ];
  for (const s of specs) {
    await t.test(s.table, async (t) => {
      let id = '';
      const base = { table: s.table, group: DMP, publisher: DMP };
      let ev = await during(async () => (id = (await one(s.insert, [DMP])).id));
      t.equal(ev.length, 1, 'insert: one event');
      checkEvent(t, ev[0]!, { ...base, type: `${s.typ}.created`, object: id });
      t.equal(ev[0]!.payload.actor_user_id, SYSADMIN, 'actor = app.user_id');
      t.equal(ev[0]!.payload.data.id, id);

      ev = await during(() => q(`update ${s.table} set ${s.field} = 'Renamed' where id = $1`, [id]));
      t.equal(ev.length, 1, 'update: one event');
      const old = s.table === 'songwriters' ? 'Evt' : s.table === 'works' ? 'Evt work' : 'Evt rec';
      checkEvent(t, ev[0]!, { ...base, type: `${s.typ}.updated`, object: id, previous: { [s.field]: old } });
      t.equal(ev[0]!.payload.data[s.field], 'Renamed', 'data has the new value');

      t.same(await during(() => q(`update ${s.table} set updated_at = now() + interval '1 second' where id = $1`, [id])), [], 'only audit columns changed: no event');
      t.same(await during(() => q(`update ${s.table} set ${s.field} = 'Renamed' where id = $1`, [id])), [], 'same value: no event');

      ev = await during(() => q(`update ${s.table} set deleted_at = now() where id = $1`, [id]));
      t.equal(ev.length, 1, 'soft delete: one event');
      checkEvent(t, ev[0]!, { ...base, type: `${s.typ}.deleted`, object: id });
      t.not(ev[0]!.payload.data.deleted_at, null, 'data shows deleted_at');

      t.same(await during(() => q(`update ${s.table} set ${s.field} = 'Ghost' where id = $1`, [id])), [], 'changing a deleted row: no event');

      ev = await during(() => q(`update ${s.table} set deleted_at = null where id = $1`, [id]));
      t.same(ev.map((e) => e.type), [`${s.typ}.created`], 'restore: created again');

      ev = await during(() => q(`update ${s.table} set publisher_id = $2 where id = $1`, [id, SONGTRUST]));
      t.same(ev.map((e) => [e.type, e.group_key]), [[`${s.typ}.deleted`, DMP], [`${s.typ}.created`, SONGTRUST]], 'moved: deleted at the old publisher, created at the new one');

      if (s.table === 'works') await q(`delete from work_songwriters where work_id = $1`, [id]);
      ev = await during(() => q(`delete from ${s.table} where id = $1`, [id]));
      t.same(ev.map((e) => [e.type, e.group_key]), [[`${s.typ}.deleted`, SONGTRUST]], 'hard delete of a live row: deleted');
      const dead = (await one(s.insert, [DMP])).id;
      await q(`update ${s.table} set deleted_at = now() where id = $1`, [dead]);
      t.same(await during(() => q(`delete from ${s.table} where id = $1`, [dead])), [], 'hard delete of a soft-deleted row: no second deleted');
    });
  }
});

t.test('publishers: created, suspended, archived (status or deleted_at); nothing else', async (t) => {
  let id = '';
  let ev = await during(async () => (id = (await one(`insert into publishers (name, slug) values ('Evt Pub', 'evt-pub') returning id::text`)).id));
  t.same(ev.map((e) => e.type), ['publisher.created'], 'insert (its trial account is no plan change)');
  checkEvent(t, ev[0]!, { type: 'publisher.created', group: id, publisher: id, object: id, table: 'publishers' });
  t.notOk('settings' in ev[0]!.payload.data || 'branding' in ev[0]!.payload.data, 'no settings or branding');

  t.same(await during(() => q(`update publishers set name = 'Evt Pub 2', settings = '{"x":1}' where id = $1`, [id])), [], 'profile/settings: no event');
  ev = await during(() => q(`update publishers set status = 'suspended' where id = $1`, [id]));
  t.equal(ev.length, 1);
  checkEvent(t, ev[0]!, { type: 'publisher.suspended', group: id, publisher: id, object: id, table: 'publishers', previous: { status: 'active' } });
  t.same(await during(() => q(`update publishers set status = 'suspended' where id = $1`, [id])), [], 'still suspended: no event');
  t.same(await during(() => q(`update publishers set status = 'active' where id = $1`, [id])), [], 'reactivated: no event');
  ev = await during(() => q(`update publishers set status = 'archived' where id = $1`, [id]));
  t.same(ev.map((e) => e.type), ['publisher.archived'], 'status archived');
  t.same(await during(() => q(`update publishers set deleted_at = now() where id = $1`, [id])), [], 'already archived: no second event');

  const other = (await one(`insert into publishers (name, slug) values ('Evt Pub B', 'evt-pub-b') returning id::text`)).id;
  ev = await during(() => q(`update publishers set deleted_at = now() where id = $1`, [other]));
  t.same(ev.map((e) => [e.type, e.object_id]), [['publisher.archived', other]], 'deleted_at set on an active publisher: archived');
  const third = (await one(`insert into publishers (name, slug) values ('Evt Pub C', 'evt-pub-c') returning id::text`)).id;
  ev = await during(() => q(`update publishers set status = 'suspended', deleted_at = now() where id = $1`, [third]));
  t.same(ev.map((e) => e.type), ['publisher.suspended', 'publisher.archived'], 'both at once: both events, suspended first');
});

t.test('memberships: added, role_changed (role, department, custom role), removed', async (t) => {
  const user = (await one(`insert into users (email, display_name) values ('evt.member@example.com', 'Evt Member') returning id::text`)).id;
  const dept = (await one(`insert into departments (publisher_id, name) values ($1, 'Evt Dept') returning id::text`, [DMP])).id;
  const role = (await one(`insert into roles (publisher_id, name) values ($1, 'evt-role') returning id::text`, [DMP])).id;
  const base = { group: DMP, publisher: DMP, object: user, table: 'user_publishers' as const };
  let ev = await during(() => q(`insert into user_publishers (publisher_id, user_id, role) values ($1, $2, 'viewer')`, [DMP, user]));
  t.equal(ev.length, 1);
  checkEvent(t, ev[0]!, { ...base, type: 'member.added' });
  t.equal(ev[0]!.payload.data.role, 'viewer');
  const upd = (set: string, params: unknown[] = []) => during(() => q(`update user_publishers set ${set} where publisher_id = $1 and user_id = $2`, [DMP, user, ...params]));
  ev = await upd(`role = 'editor'`);
  checkEvent(t, ev[0]!, { ...base, type: 'member.role_changed', previous: { role: 'viewer' } });
  ev = await upd(`department_id = $3`, [dept]);
  checkEvent(t, ev[0]!, { ...base, type: 'member.role_changed', previous: { department_id: null } });
  ev = await upd(`role = 'custom', custom_role_id = $3, department_id = null`, [role]);
  checkEvent(t, ev[0]!, { ...base, type: 'member.role_changed', previous: { role: 'editor', custom_role_id: null, department_id: dept } });
  t.same(await upd(`updated_at = now() + interval '1 second'`), [], 'no role change: no event');
  ev = await during(() => q(`delete from user_publishers where publisher_id = $1 and user_id = $2`, [DMP, user]));
  t.equal(ev.length, 1);
  checkEvent(t, ev[0]!, { ...base, type: 'member.removed' });
  t.equal(ev[0]!.payload.data.custom_role_id, role, 'data: the membership as it was');
});

t.test('users: disabled (group user:<id>, no publisher); nothing else; no contact details', async (t) => {
  const user = (await one(`insert into users (email, display_name, phone) values ('evt.user@example.com', 'Evt User', '+4915112345678') returning id::text`)).id;
  let ev = await during(() => q(`update users set status = 'disabled' where id = $1`, [user]));
  t.equal(ev.length, 1);
  checkEvent(t, ev[0]!, { type: 'user.disabled', group: `user:${user}`, publisher: null, object: user, table: 'users', previous: { status: 'active' } });
  for (const secret of ['email', 'phone', 'display_name', 'external_id', 'is_system_admin']) t.notOk(secret in ev[0]!.payload.data, `no ${secret}`);
  t.same(await during(() => q(`update users set display_name = 'Still Disabled' where id = $1`, [user])), [], 'profile change: no event');
  t.same(await during(() => q(`update users set status = 'active' where id = $1`, [user])), [], 'enabled again: no event');
  ev = await during(() => q(`update users set status = 'disabled' where id = $1`, [user]));
  t.same(ev.map((e) => e.type), ['user.disabled'], 'disabled again: a new event');
});

t.test('accounts: plan_changed on a plan change only; no billing details', async (t) => {
  const pub = (await one(`insert into publishers (name, slug) values ('Evt Plan', 'evt-plan') returning id::text`)).id;
  const before = (await one(`select plan_type from accounts where publisher_id = $1`, [pub])).plan_type;
  let ev = await during(() => q(`update accounts set plan_type = 'enterprise', billing_email = 'billing@example.com', payment_method_ref = 'pm_evt123' where publisher_id = $1`, [pub]));
  t.equal(ev.length, 1);
  checkEvent(t, ev[0]!, { type: 'account.plan_changed', group: pub, publisher: pub, object: pub, table: 'accounts', previous: { plan_type: before } });
  for (const secret of ['billing_email', 'billing_address', 'payment_method_ref']) t.notOk(secret in ev[0]!.payload.data, `no ${secret}`);
  t.same(await during(() => q(`update accounts set seats = 7 where publisher_id = $1`, [pub])), [], 'seats only: no event');
  t.same(await during(() => q(`update accounts set plan_type = 'enterprise' where publisher_id = $1`, [pub])), [], 'same plan: no event');
});

t.test('the same transaction: a rolled-back change leaves no event, a committed one leaves exactly its own', async (t) => {
  const ctx = { publisher: DMP, user: EDITOR, scope: 'publisher' as const };
  const insert = (c: pg.Client) => c.query(`insert into works (publisher_id, title) values ($1, 'In a transaction') returning id::text`, [DMP]);
  const rolledBack = await during(() => inTx(db.appUrl, ctx, insert));
  t.same(rolledBack, [], 'rollback: no event');
  let id = '';
  const committed = await during(() => inTx(db.appUrl, ctx, async (c) => (id = (await insert(c)).rows[0].id), true));
  t.same(committed.map((e) => [e.type, e.object_id, e.payload.actor_user_id]), [['work.created', id, EDITOR]], 'commit: its event, by the context user');
  await t.rejects(inTx(db.appUrl, ctx, async (c) => {
    await insert(c);
    await c.query(`insert into works (publisher_id, title) values ($1, null)`, [DMP]);
  }), /null value/, 'a failing statement …');
  t.same(await eventsAfter(await maxId()), [], '… takes the events of its transaction with it');
});

t.test('privileges: catalog_app cannot reach the outbox; the relays\' role catalog_jobs only through the relay functions', async (t) => {
  const ctx = { publisher: DMP, user: EDITOR, scope: 'publisher' as const };
  const app = (sql: string) => inTx(db.appUrl, ctx, (c) => c.query(sql));
  const jobs = (sql: string) => inTx(db.jobsUrl, null, (c) => c.query(sql));
  for (const table of ['domain_events', 'domain_event_dead_letters']) {
    await t.rejects(jobs(`select * from ${table} limit 1`), /permission denied/, `${table}: no SELECT for catalog_jobs either (functions only)`);
    await t.rejects(app(`select * from ${table} limit 1`), /permission denied/, `${table}: no SELECT`);
    await t.rejects(app(`update ${table} set attempts = 0`), /permission denied/, `${table}: no UPDATE`);
    await t.rejects(app(`delete from ${table}`), /permission denied/, `${table}: no DELETE`);
  }
  await t.rejects(app(`insert into domain_events (event_id, type, group_key, object_id, payload, occurred_at) values (gen_random_uuid(), 'work.created', 'x', gen_random_uuid(), '{}', now())`), /permission denied/, 'no INSERT (no forged events)');
  await t.rejects(app(`select domain_events_emit('work.created', 'x', null, gen_random_uuid(), '{}')`), /permission denied/, 'no direct emit');
  const fns = await q(`select p.proname, p.prosecdef, r.rolname, p.proconfig, has_function_privilege('catalog_app', p.oid, 'execute') as app,
      has_function_privilege('catalog_auth', p.oid, 'execute') as auth, has_function_privilege('catalog_jobs', p.oid, 'execute') as jobs
    from pg_proc p join pg_roles r on r.oid = p.proowner
    where p.pronamespace = 'public'::regnamespace and (p.proname like 'domain_event%') order by 1`);
  t.same(fns.filter((f) => f.jobs).map((f) => f.proname), [
    'domain_event_dead_letter_resolve', 'domain_event_dead_letters_open', 'domain_events_claim', 'domain_events_mark_failed',
    'domain_events_mark_published', 'domain_events_prune', 'domain_events_stats',
  ], 'catalog_jobs executes exactly the relay and operator functions');
  t.same(fns.filter((f) => f.app).map((f) => f.proname), [], 'catalog_app executes none (migration 0011)');
  t.same(fns.filter((f) => f.auth).map((f) => f.proname), [], 'catalog_auth executes none');
  for (const f of fns) {
    t.equal(f.rolname, 'catalog_owner', `${f.proname} owned by catalog_owner`);
    t.match(f.proconfig, [/^search_path=public, pg_temp$/], `${f.proname} pins search_path`);
  }
  t.ok(fns.filter((f) => f.prosecdef).length >= 12, 'the triggers and relay functions are SECURITY DEFINER');
  const publicAcl = await q(`select p.proname from pg_proc p, aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
    where p.pronamespace = 'public'::regnamespace and p.proname like 'domain_event%' and a.grantee = 0`);
  t.same(publicAcl, [], 'nothing executable by PUBLIC');
});

t.test('relay functions: claim order, backoff and dead letters hold back only their group, retry and discard', async (t) => {
  await q(`update domain_events set published_at = now() where published_at is null`);
  // the relay's role (migration 0011): no request context
  const app = <T>(fn: (c: pg.Client) => Promise<T>, commit = true) => inTx(db.jobsUrl, null, fn, commit);
  const work = async (pub: string, title: string) => {
    await q(`insert into works (publisher_id, title) values ($1, $2)`, [pub, title]);
    return maxId();
  };
  const a1 = await work(DMP, 'A1');
  const a2 = await work(DMP, 'A2');
  const b1 = await work(SONGTRUST, 'B1');
  const a3 = await work(DMP, 'A3');
  const claim = (n = 100) => app(async (c) => (await c.query(`select id::text from domain_events_claim($1)`, [n])).rows.map((r) => r.id), false);
  t.same(await claim(), [a1, a2, b1, a3], 'in outbox order');
  t.same(await claim(2), [a1, a2], 'batch size');

  await q(`update domain_events set next_attempt_at = now() + interval '1 hour' where id = $1`, [a1]);
  t.same(await claim(), [b1], 'a backing-off row holds back the later rows of its group only');
  await q(`update domain_events set next_attempt_at = now() where id = $1`, [a1]);

  const eventIdA1 = (await one(`select event_id::text from domain_events where id = $1`, [a1])).event_id;
  const failed = await app(async (c) => (await c.query(`select id::text, attempts, dead from domain_events_mark_failed($1::bigint[], 'refused', true, 1, 10, 10)`, [[a1]])).rows);
  t.same(failed, [{ id: a1, attempts: 1, dead: true }], 'an event fault at max_attempts: dead-lettered');
  const dl = await one(`select id::text, event_seq::text, event_id::text, type, group_key, attempts, last_error, resolved_at from domain_event_dead_letters where event_seq = $1`, [a1]);
  t.match(dl, { event_seq: a1, event_id: eventIdA1, type: 'work.created', group_key: DMP, attempts: 1, last_error: 'refused', resolved_at: null });
  t.equal((await q(`select 1 from domain_events where id = $1`, [a1])).length, 0, 'moved out of the outbox');
  t.same(await claim(), [b1], 'an open dead letter holds back the rest of its group; other groups go on');
  const open = await app(async (c) => (await c.query(`select id::text, event_seq::text from domain_event_dead_letters_open()`)).rows);
  t.same(open, [{ id: dl.id, event_seq: a1 }], 'operators see it');

  t.equal(await app(async (c) => (await c.query(`select domain_event_dead_letter_resolve($1, 'retry') as ok`, [dl.id])).rows[0].ok), true, 'retry');
  const back = await one(`select id::text, event_id::text, attempts, last_error, published_at from domain_events where id = $1`, [a1]);
  t.match(back, { id: a1, event_id: eventIdA1, attempts: 0, last_error: 'retried after dead letter: refused', published_at: null }, 'back at its old place, same event id');
  t.same(await claim(), [a1, a2, b1, a3], 'its group goes on from it');
  t.equal(await app(async (c) => (await c.query(`select domain_event_dead_letter_resolve($1, 'retry') as ok`, [dl.id])).rows[0].ok), false, 'a resolved dead letter cannot be resolved again');

  await app((c) => c.query(`select * from domain_events_mark_failed($1::bigint[], 'refused again', true, 1, 10, 10)`, [[a1]]));
  const dl2 = (await one(`select id::text from domain_event_dead_letters where event_seq = $1 and resolved_at is null`, [a1])).id;
  t.equal(await app(async (c) => (await c.query(`select domain_event_dead_letter_resolve($1, 'discard') as ok`, [dl2])).rows[0].ok), true, 'discard');
  t.same(await claim(), [a2, b1, a3], 'discarded: its group goes on without it');
  t.same((await q(`select resolution from domain_event_dead_letters where event_seq = $1 order by id`, [a1])).map((r) => r.resolution), ['retried', 'discarded'], 'the history stays');
  await t.rejects(app((c) => c.query(`select domain_event_dead_letter_resolve($1, 'drop')`, [dl2])), /retry or discard/, 'unknown action refused');

  // backoff: min(cap, base · 2^(attempts − 1)); a queue fault never dead-letters. As the owner, who
  // may read the row in the same transaction (now() is the same for the call and the check).
  await inTx(db.ownerUrl, null, async (c) => {
    for (const [n, ms] of [[1, 1000], [2, 2000], [3, 4000], [4, 5000], [5, 5000]] as const) {
      const [r] = (await c.query(`select attempts, dead from domain_events_mark_failed($1::bigint[], 'down', false, 2, 1000, 5000)`, [[b1]])).rows;
      const [d] = (await c.query(`select (extract(epoch from next_attempt_at - now()) * 1000)::int as delay from domain_events where id = $1`, [b1])).rows;
      t.same({ ...r, ...d }, { attempts: n, dead: false, delay: ms }, `attempt ${n}: next in ${ms} ms, not dead-lettered`);
    }
    // the outage's failures do not count toward the dead letter: two faults of the event itself do (max 2)
    const fault = async () => (await c.query(`select dead from domain_events_mark_failed($1::bigint[], 'refused', true, 2, 1000, 5000)`, [[b1]])).rows[0].dead as boolean;
    t.equal(await fault(), false, 'after the outage, the first fault of the event itself is not yet the dead letter');
    t.equal(await fault(), true, 'the second is');
    await c.query(`select domain_event_dead_letter_resolve(id, 'retry') from domain_event_dead_letters where event_seq = $1 and resolved_at is null`, [b1]);
  }, false);

  t.equal(await app(async (c) => (await c.query(`select domain_events_mark_published($1::bigint[]) as n`, [[a2, b1]])).rows[0].n), 2, 'mark published');
  t.equal(await app(async (c) => (await c.query(`select domain_events_mark_published($1::bigint[]) as n`, [[a2, b1]])).rows[0].n), 0, 'published rows are not marked again');
  t.same(await claim(), [a3]);
});

t.test('claim: one batch at a time (the advisory lock), 1..100 rows', async (t) => {
  await q(`insert into songwriters (publisher_id, last_name) select $1, 'Bulk ' || g from generate_series(1, 120) g`, [DMP]);
  await inTx(db.jobsUrl, null, async (c) => {
    t.equal((await c.query(`select count(*)::int as n from domain_events_claim(0)`)).rows[0].n, 1, 'batch size is at least 1');
  });
  await inTx(db.jobsUrl, null, async (c) => {
    t.equal((await c.query(`select count(*)::int as n from domain_events_claim(100000)`)).rows[0].n, 100, 'and at most 100');
    await t.rejects(
      inTx(db.jobsUrl, null, async (c2) => {
        await c2.query(`set local lock_timeout = '200ms'`);
        await c2.query(`select count(*) from domain_events_claim(10)`);
      }),
      /lock timeout/,
      'a second claim waits for the first batch',
    );
  });
});

t.test('stats and prune', async (t) => {
  const stats = () => inTx(db.jobsUrl, null, async (c) => (await c.query(`select pending::int, lag_seconds, dead_letters::int from domain_events_stats()`)).rows[0]);
  const pending = (await one(`select count(*)::int as n from domain_events where published_at is null`)).n;
  const dead = (await one(`select count(*)::int as n from domain_event_dead_letters where resolved_at is null`)).n;
  await q(`update domain_events set occurred_at = now() - interval '1 hour' where id = (select min(id) from domain_events where published_at is null)`);
  const s = await stats();
  t.equal(s.pending, pending);
  t.equal(s.dead_letters, dead);
  t.ok(s.lag_seconds >= 3600 && s.lag_seconds < 3700, `lag ${s.lag_seconds} s: the oldest pending event's age`);
  await q(`update domain_events set published_at = now() where published_at is null`);
  t.match(await stats(), { pending: 0, lag_seconds: 0 }, 'nothing pending: lag 0');

  const old = (await one(`select count(*)::int as n from domain_events where id % 2 = 0`)).n;
  await q(`update domain_events set published_at = now() - interval '2 days' where id % 2 = 0`);
  const total = (await one(`select count(*)::int as n from domain_events`)).n;
  const pruned = await inTx(db.jobsUrl, null, async (c) => (await c.query(`select domain_events_prune(86400) as n`)).rows[0].n, true);
  t.equal(pruned, old, 'published more than keep_seconds ago: pruned');
  t.equal((await one(`select count(*)::int as n from domain_events`)).n, total - old, 'the rest stays');
});

/**
 * The security admin's endpoints (/api/v1/authz, catalog-api/src/modules/authz) against real
 * PostgreSQL, Redis and OpenFGA: a seeded database whose outbox the real relay delivers into a
 * fresh OpenFGA store (named after OPENFGA_STORE_NAME, deleted at the end).
 *
 * - the access matrix of every endpoint: system admins, a publisher's admin in their own publisher
 *   and in another, managers, editors and viewers (403);
 * - scoping: a publisher's admin asking about another publisher's work or user (403/404), and
 *   results narrowed to their publisher (who-can, what-can, users, access, decisions);
 * - explain (an editor may update a DMP work: the path), who-can on a work, what-can for a creator,
 *   a user's access (multi@example.com: viewer at DMP, editor at Spirit), bad input (400), OpenFGA
 *   unreachable (503);
 * - the model: list, get, diff, shadow, deploy (409 `shadow-changes` when recorded decisions
 *   change, then accepted), rollback; both audited on the platform chain and published as the
 *   active model (contract B).
 */
import t from 'tap';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Redis } from 'ioredis';
import { adminClient, buildTestApp, createTestDb, type TestApp, type TestDb } from './helpers.ts';
import { CREATOR1, DMP, DMP_ADMIN, DMP_EDITOR, DMP_MANAGER, DMP_VIEWER, MULTI, SPIRIT, SPIRIT_OWNER, SYSADMIN, TYPE } from '../support/demo-ids.ts';
import { DEFAULT_MODEL_FILE, fgaClient, findStore } from '../../policies/src/model.ts';
import { appendDecisions, decisionId, decisionStreamKey, type DecisionRecord } from '../../policies/src/decision-log.ts';
import { activeModelKey, readActiveModel } from '../../policies/src/active-model.ts';
import { checkContext } from '../../policies/src/conditions.ts';
import type pg from 'pg';

const OPENFGA_API_URL = process.env.OPENFGA_API_URL || 'http://127.0.0.1:8080';
const REDIS_URL = process.env.REDIS_URL || 'redis://127.0.0.1:6379/0';
const STORE_NAME = `${process.env.OPENFGA_STORE_NAME || 'test'}-authz-${randomUUID().slice(0, 8)}`;

let db: TestDb;
let ta: TestApp;
let su: pg.Client;
let redis: Redis;
let storeId: string;
let dmpWork: string;
let spiritWork: string;

t.before(async () => {
  db = await createTestDb('authz');
  su = await adminClient(db);
  redis = new Redis(REDIS_URL);
  // the real relay into a fresh store: the seeded tuples (memberships, rows, departments …)
  ta = await buildTestApp(db, { relationshipSink: undefined }, { OPENFGA_API_URL, OPENFGA_STORE_NAME: STORE_NAME, OUTBOX_RELAY: 'true', OUTBOX_INTERVAL_MS: '200' });
  const deadline = Date.now() + 90_000;
  const pending = async () => (await su.query<{ n: number }>(`select count(*)::int as n from authz_outbox where delivered_at is null`)).rows[0]!.n;
  while ((await pending()) > 0) {
    if (Date.now() > deadline) throw new Error(`the outbox did not drain: ${await pending()} rows pending`);
    await ta.app.outbox.flush();
  }
  storeId = (await findStore(OPENFGA_API_URL, STORE_NAME))!;
  dmpWork = (await su.query(`select id from works where publisher_id = $1 and owner_user_id is null and deleted_at is null order by id limit 1`, [DMP])).rows[0].id;
  spiritWork = (await su.query(`select id from works where publisher_id = $1 and deleted_at is null order by id limit 1`, [SPIRIT])).rows[0].id;
});
t.teardown(async () => {
  if (storeId) {
    await redis.del(decisionStreamKey(storeId), activeModelKey(storeId)).catch(() => undefined);
    await fgaClient(OPENFGA_API_URL, storeId).deleteStore().catch(() => undefined);
  }
  redis?.disconnect();
  await su?.end();
  await ta?.close();
  await db?.drop();
});

const get = (sub: string, url: string, publisher: string | null = DMP) => ta.as(sub, publisher, { method: 'GET', url });
const post = (sub: string, url: string, payload: object, publisher: string | null = null) => ta.as(sub, publisher, { method: 'POST', url, payload });
const q = (params: Record<string, string>) => new URLSearchParams(params).toString();

/** A decision record as a sidecar logs it (contract A). */
function decision(over: Partial<DecisionRecord> & Pick<DecisionRecord, 'subject' | 'relation' | 'object' | 'allowed' | 'rule'>): DecisionRecord {
  return { id: decisionId(), time: new Date().toISOString(), request_id: randomUUID(), source: 'pdp', model_id: 'x', latency_ms: 1, context: checkContext(Date.now(), '127.0.0.1'), ...over };
}

t.test('the access matrix: who may call which endpoint', async (t) => {
  const inspect = [
    `/api/v1/authz/explain?${q({ user: DMP_EDITOR, permission: 'can_update', object: `work:${dmpWork}` })}`,
    `/api/v1/authz/who-can?${q({ permission: 'can_read', object: `work:${dmpWork}` })}`,
    `/api/v1/authz/what-can?${q({ user: DMP_VIEWER, permission: 'can_read', type: 'work' })}`,
    `/api/v1/authz/users?${q({ q: 'editor@' })}`,
    `/api/v1/authz/users/${DMP_VIEWER}/access`,
    `/api/v1/authz/decisions?limit=5`,
  ];
  const models = ['/api/v1/authz/models'];
  for (const url of inspect) {
    const path = url.split('?')[0];
    t.equal((await get(SYSADMIN, url)).statusCode, 200, `${path}: a system admin`);
    t.equal((await get(DMP_ADMIN, url)).statusCode, 200, `${path}: DMP's admin in DMP`);
    t.equal((await get(DMP_ADMIN, url, SPIRIT)).statusCode, 403, `${path}: DMP's admin in Spirit's context (not a member)`);
    for (const [who, sub] of [['manager', DMP_MANAGER], ['editor', DMP_EDITOR], ['viewer', DMP_VIEWER]] as const) {
      const r = await get(sub, url);
      t.equal(r.statusCode, 403, `${path}: DMP's ${who}`);
      t.equal(r.json().type, TYPE('forbidden'));
    }
    t.equal((await get(DMP_ADMIN, url, null)).statusCode, 400, `${path}: a publisher admin without X-Publisher-Id`);
  }
  for (const url of models) {
    t.equal((await get(SYSADMIN, url, null)).statusCode, 200, `${url}: a system admin`);
    t.equal((await get(SYSADMIN, url)).statusCode, 200, `${url}: a system admin in a publisher's context`);
    for (const sub of [DMP_ADMIN, SPIRIT_OWNER, DMP_MANAGER, DMP_VIEWER]) t.equal((await get(sub, url)).statusCode, 403, `${url}: a publisher member`);
  }
  for (const [url, body] of [['/api/v1/authz/models/shadow', { dsl: 'model\n  schema 1.1\ntype user\n' }], ['/api/v1/authz/models/deploy', { dsl: 'model\n  schema 1.1\ntype user\n' }]] as const) {
    t.equal((await post(DMP_ADMIN, url, body, DMP)).statusCode, 403, `${url}: a publisher admin`);
  }
});

t.test('explain: an editor may update a DMP work, and the path says why', async (t) => {
  const r = await get(DMP_ADMIN, `/api/v1/authz/explain?${q({ user: DMP_EDITOR, permission: 'can_update', object: `work:${dmpWork}` })}`);
  t.equal(r.statusCode, 200, r.body);
  const e = r.json();
  t.equal(e.allowed, true);
  t.equal(e.user, `user:${DMP_EDITOR}`);
  t.equal(e.object, `work:${dmpWork}`);
  t.match(e.model_id, /^[0-9A-Z]{26}$/);
  t.ok(e.path.length >= 2, `${e.path.length} steps`);
  t.match(e.path[0], { object: `publisher:${DMP}`, relation: 'editor' }, 'it starts at the editor tuple');
  t.match(e.path.at(-1), { object: `work:${dmpWork}`, relation: 'can_update' }, 'it ends at the decision');
  t.match(e.text, /^ALLOWED: /);

  const denied = (await get(SYSADMIN, `/api/v1/authz/explain?${q({ user: DMP_VIEWER, permission: 'can_update', object: `work:${dmpWork}` })}`)).json();
  t.equal(denied.allowed, false, 'a viewer may not');
  t.ok(denied.denied_because.length > 0, 'with reasons');
  t.same(denied.path, []);
});

t.test('scoping: a publisher admin asks about their own publisher only', async (t) => {
  const spiritAsDmp = await get(DMP_ADMIN, `/api/v1/authz/explain?${q({ user: DMP_EDITOR, permission: 'can_read', object: `work:${spiritWork}` })}`);
  t.equal(spiritAsDmp.statusCode, 404, "another publisher's work is not found");
  const otherUser = await get(DMP_ADMIN, `/api/v1/authz/explain?${q({ user: SPIRIT_OWNER, permission: 'can_read', object: `work:${dmpWork}` })}`);
  t.equal(otherUser.statusCode, 404, "another publisher's member is not found");
  const otherPublisher = await get(DMP_ADMIN, `/api/v1/authz/who-can?${q({ permission: 'works_read', object: `publisher:${SPIRIT}` })}`);
  t.equal(otherPublisher.statusCode, 403, 'another publisher object is forbidden');
  t.equal((await get(DMP_ADMIN, `/api/v1/authz/who-can?${q({ permission: 'can_administer', object: 'system:platform' })}`)).statusCode, 403, 'the platform is for system admins');
  t.equal((await get(SYSADMIN, `/api/v1/authz/who-can?${q({ permission: 'can_administer', object: 'system:platform' })}`)).statusCode, 200, 'which a system admin may ask about');
  t.equal((await get(DMP_ADMIN, `/api/v1/authz/users/${SPIRIT_OWNER}/access`)).statusCode, 404, "another publisher's user's access");
  t.equal((await get(SPIRIT_OWNER, `/api/v1/authz/what-can?${q({ user: DMP_EDITOR, permission: 'can_read', type: 'work' })}`, SPIRIT)).statusCode, 404, "Spirit's admin about a DMP member");
  t.equal((await get(SYSADMIN, `/api/v1/authz/explain?${q({ user: SPIRIT_OWNER, permission: 'can_read', object: `work:${dmpWork}` })}`)).statusCode, 200, 'a system admin asks about anyone and anything');
});

t.test('who-can on a work: the users, narrowed to the publisher for its admin', async (t) => {
  const url = `/api/v1/authz/who-can?${q({ permission: 'can_read', object: `work:${dmpWork}` })}`;
  const all = (await get(SYSADMIN, url)).json();
  const ids = all.users.map((u: { id: string }) => u.id);
  for (const id of [DMP_ADMIN, DMP_MANAGER, DMP_EDITOR, DMP_VIEWER, MULTI, SYSADMIN]) t.ok(ids.includes(id), `${id} can read it`);
  t.notOk(ids.includes(SPIRIT_OWNER), "Spirit's admin cannot");
  t.match(all.users.find((u: { id: string }) => u.id === DMP_EDITOR), { email: 'editor@dmp.example', display_name: /\S/ });
  t.equal(all.truncated, false);
  const narrowed = (await get(DMP_ADMIN, url)).json();
  const mine = narrowed.users.map((u: { id: string }) => u.id);
  t.ok(mine.includes(DMP_EDITOR));
  t.notOk(mine.includes(SYSADMIN), 'the system admin is not a member of DMP: left out for its admin');
  const members = (await su.query(`select user_id from user_publishers where publisher_id = $1`, [DMP])).rows.map((r) => r.user_id);
  t.ok(mine.every((id: string) => members.includes(id)), 'only DMP members');
});

t.test('what-can: the works a creator may update; a publisher admin sees their own objects only', async (t) => {
  const own = (await su.query(`select id from works where owner_user_id = $1 and deleted_at is null`, [CREATOR1])).rows.map((r) => `work:${r.id}`).sort();
  t.ok(own.length > 0, `creator1 owns ${own.length} works`);
  const r = await get(SYSADMIN, `/api/v1/authz/what-can?${q({ user: CREATOR1, permission: 'can_update', type: 'work' })}`);
  t.equal(r.statusCode, 200, r.body);
  t.same(r.json(), { objects: own, truncated: false }, 'exactly the works they own');

  const multiAll = (await get(SYSADMIN, `/api/v1/authz/what-can?${q({ user: MULTI, permission: 'can_read', type: 'work' })}`)).json().objects as string[];
  const multiDmp = (await get(DMP_ADMIN, `/api/v1/authz/what-can?${q({ user: MULTI, permission: 'can_read', type: 'work' })}`)).json().objects as string[];
  const dmpWorks = new Set((await su.query(`select id from works where publisher_id = $1`, [DMP])).rows.map((r) => `work:${r.id}`));
  t.ok(multiAll.includes(`work:${spiritWork}`), 'multi reads Spirit works');
  t.ok(multiDmp.length > 0 && multiDmp.every((o) => dmpWorks.has(o)), "DMP's admin sees only DMP works");
  t.ok(multiDmp.length < multiAll.length);
  const pubs = (await get(DMP_ADMIN, `/api/v1/authz/what-can?${q({ user: MULTI, permission: 'works_read', type: 'publisher' })}`)).json().objects;
  t.same(pubs, [`publisher:${DMP}`], 'of the publishers, only their own');
});

t.test('users: search by email prefix, narrowed to members', async (t) => {
  const r = (await get(SYSADMIN, `/api/v1/authz/users?q=MULTI`)).json();
  t.same(r.users.map((u: { email: string }) => u.email), ['multi@example.com'], 'case-insensitive prefix');
  t.same((await get(DMP_ADMIN, `/api/v1/authz/users?q=owner%40spirit`)).json().users, [], 'not a DMP member');
  t.same((await get(DMP_ADMIN, `/api/v1/authz/users?q=editor%40dmp`)).json().users.map((u: { id: string }) => u.id), [DMP_EDITOR]);
  t.same((await get(SYSADMIN, `/api/v1/authz/users?q=%25`)).json().users, [], '% is taken literally');
});

t.test("a user's access: multi@example.com is a viewer at DMP and an editor at Spirit", async (t) => {
  const r = await get(SYSADMIN, `/api/v1/authz/users/${MULTI}/access`);
  t.equal(r.statusCode, 200, r.body);
  const a = r.json();
  t.match(a.user, { id: MULTI, email: 'multi@example.com' });
  t.same(a.memberships.map((m: { publisher: { id: string }; role: string }) => [m.publisher.id, m.role]).sort(), [[DMP, 'viewer'], [SPIRIT, 'editor']].sort());
  t.match(a.memberships.find((m: { publisher: { id: string } }) => m.publisher.id === DMP), { publisher: { slug: 'dmp', name: /\S/ }, status: /^(active|trial)$/ });
  t.ok(a.permissions[DMP].includes('works_read'), 'reads works at DMP');
  t.notOk(a.permissions[DMP].includes('works_update'), 'does not update them there');
  t.ok(a.permissions[SPIRIT].includes('works_update'), 'updates works at Spirit');
  t.notOk(a.permissions[SPIRIT].includes('members_invite'), 'an editor invites nobody');

  const narrowed = (await get(DMP_ADMIN, `/api/v1/authz/users/${MULTI}/access`)).json();
  t.same(narrowed.memberships.map((m: { publisher: { id: string } }) => m.publisher.id), [DMP], "DMP's admin sees the DMP membership only");
  t.same(Object.keys(narrowed.permissions), [DMP]);
});

t.test('decisions: the log, newest first, filtered to the publisher for its admin', async (t) => {
  const records = [
    decision({ subject: `user:${DMP_VIEWER}`, relation: 'works_read', object: `publisher:${DMP}`, publisher: DMP, allowed: true, rule: 'GET /api/v1/works' }),
    decision({ subject: `user:${DMP_VIEWER}`, relation: 'works_create', object: `publisher:${DMP}`, publisher: DMP, allowed: false, rule: 'POST /api/v1/works' }),
    decision({ subject: `user:${SPIRIT_OWNER}`, relation: 'works_read', object: `publisher:${SPIRIT}`, publisher: SPIRIT, allowed: true, rule: 'GET /api/v1/works' }),
  ];
  await appendDecisions(redis, storeId, records, 10_000);
  const all = (await get(SYSADMIN, '/api/v1/authz/decisions')).json().decisions.map((d: DecisionRecord) => d.id);
  t.same(all.slice(0, 3), records.map((r) => r.id).reverse(), 'newest first');
  const dmp = (await get(DMP_ADMIN, '/api/v1/authz/decisions')).json().decisions as DecisionRecord[];
  t.ok(dmp.length >= 2 && dmp.every((d) => d.publisher === DMP), "DMP's admin: DMP's decisions only");
  const denies = (await get(DMP_ADMIN, '/api/v1/authz/decisions?allowed=false')).json().decisions as DecisionRecord[];
  t.same(denies.map((d) => d.id), [records[1]!.id], 'the denies');
  t.same((await get(SYSADMIN, `/api/v1/authz/decisions?since=${records[0]!.id}`)).json().decisions.map((d: DecisionRecord) => d.id), [records[2]!.id, records[1]!.id], 'since: a live tail');
  t.equal((await get(DMP_ADMIN, `/api/v1/authz/decisions?publisher=${SPIRIT}`)).statusCode, 403, "another publisher's decisions");
  t.same((await get(SYSADMIN, `/api/v1/authz/decisions?publisher=${SPIRIT}`)).json().decisions.map((d: DecisionRecord) => d.id), [records[2]!.id]);
});

t.test('bad input is a 400 problem that says what is wrong', async (t) => {
  const cases: [string, RegExp][] = [
    [`/api/v1/authz/explain?${q({ user: DMP_EDITOR, permission: 'can_update', object: 'nonsense' })}`, /not an object/],
    [`/api/v1/authz/explain?${q({ user: DMP_EDITOR, permission: 'can_update', object: `widget:${dmpWork}` })}`, /Unknown type "widget"/],
    [`/api/v1/authz/explain?${q({ user: DMP_EDITOR, permission: 'can_fly', object: `work:${dmpWork}` })}`, /no relation "can_fly" on work/],
    [`/api/v1/authz/explain?${q({ user: DMP_EDITOR, permission: 'can_read', object: 'work:not-a-uuid' })}`, /not a work object/],
    [`/api/v1/authz/what-can?${q({ user: DMP_EDITOR, permission: 'can_read', type: 'widget' })}`, /Unknown type "widget"/],
    [`/api/v1/authz/who-can?${q({ permission: 'works_read', object: 'publisher:x' })}`, /not a publisher object/],
  ];
  for (const [url, detail] of cases) {
    const r = await get(SYSADMIN, url);
    t.equal(r.statusCode, 400, url);
    t.match(r.json(), { type: TYPE('bad-request'), detail }, url);
  }
  t.equal((await get(SYSADMIN, `/api/v1/authz/explain?${q({ user: 'nobody', permission: 'can_read', object: `work:${dmpWork}` })}`)).statusCode, 400, 'user must be a uuid');
});

t.test('the model: history, DSL, diff; deploy behind a shadow run (409 when decisions change), rollback; audited', async (t) => {
  const list0 = (await get(SYSADMIN, '/api/v1/authz/models', null)).json();
  const first = list0.models[0].id as string;
  t.equal(list0.active, first, 'without a published id the newest model is the active one');
  t.match(list0.models[0].created_at, /^\d{4}-\d\d-\d\dT/);
  const got = (await get(SYSADMIN, `/api/v1/authz/models/${first}`, null)).json();
  t.match(got, { id: first, dsl: /type work\n/ });
  t.equal((await get(SYSADMIN, '/api/v1/authz/models/01ARZ3NDEKTSV4RRFFQ69G5FAV', null)).statusCode, 404, 'an unknown id');
  t.equal((await get(SYSADMIN, '/api/v1/authz/models/not-a-model', null)).statusCode, 400, 'not a ULID');

  // a recorded decision the candidate changes: a manager may delete a DMP work today
  await appendDecisions(redis, storeId, [decision({ subject: `user:${DMP_MANAGER}`, relation: 'can_delete', object: `work:${dmpWork}`, publisher: DMP, allowed: true, rule: 'DELETE /api/v1/works/{id}' })], 10_000);
  const current = readFileSync(DEFAULT_MODEL_FILE, 'utf8');
  const managerLine = '    define works_delete: (grant_works_delete or manager) but not frozen';
  t.ok(current.includes(managerLine), 'the model file has the line the candidate changes');
  const candidate = current.replace(managerLine, '    define works_delete: (grant_works_delete or admin) but not frozen');

  const shadow = await post(SYSADMIN, '/api/v1/authz/models/shadow', { dsl: candidate });
  t.equal(shadow.statusCode, 200, shadow.body);
  t.match(shadow.json(), { base_model_id: first, groups: [{ rule: 'DELETE /api/v1/works/{id}', allowed_to_denied: 1 }] });
  t.equal((await get(SYSADMIN, '/api/v1/authz/models', null)).json().models.length, list0.models.length, 'a shadow run writes nothing');

  const refused = await post(SYSADMIN, '/api/v1/authz/models/deploy', { dsl: candidate });
  t.equal(refused.statusCode, 409, refused.body);
  const problem = refused.json();
  t.equal(problem.type, TYPE('shadow-changes'));
  t.equal(problem.shadow.changed.length, 1, 'the report comes with the refusal');
  t.match(problem.shadow.changed[0], { before: true, after: false, decision: { subject: `user:${DMP_MANAGER}`, relation: 'can_delete' } });
  t.equal((await get(SYSADMIN, '/api/v1/authz/models', null)).json().models.length, list0.models.length, 'nothing deployed');

  t.equal((await post(SYSADMIN, '/api/v1/authz/models/deploy', { dsl: 'model\n  schema 1.1\ntype user\n  relations\n    define x: [nope]\n' })).statusCode, 400, 'an invalid model');

  const mark = (await su.query(`select clock_timestamp()::text as t`)).rows[0].t;
  const deployed = await post(SYSADMIN, '/api/v1/authz/models/deploy', { dsl: candidate, accept_changes: true });
  t.equal(deployed.statusCode, 200, deployed.body);
  const d = deployed.json();
  t.equal(d.written, true);
  t.not(d.model_id, first);
  t.equal(d.shadow.changed.length, 1);
  t.equal(await readActiveModel(redis, storeId), d.model_id, 'published as the active model (contract B)');
  const list1 = (await get(SYSADMIN, '/api/v1/authz/models', null)).json();
  t.equal(list1.active, d.model_id);
  t.same(list1.models.map((m: { id: string }) => m.id), [d.model_id, ...list0.models.map((m: { id: string }) => m.id)], 'newest first');
  const explained = (await get(SYSADMIN, `/api/v1/authz/explain?${q({ user: DMP_MANAGER, permission: 'can_delete', object: `work:${dmpWork}` })}`)).json();
  t.match(explained, { allowed: false, model_id: d.model_id }, 'the endpoints decide with the new active model');

  const diff = (await get(SYSADMIN, `/api/v1/authz/models/diff?${q({ from: first, to: d.model_id })}`, null)).json();
  t.match(diff, { from: first, to: d.model_id });
  t.match(diff.diff, /^-\s+define works_delete: \(grant_works_delete or manager\) but not frozen$/m);
  t.match(diff.diff, /^\+\s+define works_delete: \(grant_works_delete or admin\) but not frozen$/m);

  const rolled = await post(SYSADMIN, `/api/v1/authz/models/${first}/rollback`, {});
  t.equal(rolled.statusCode, 200, rolled.body);
  const back = rolled.json().model_id;
  t.not(back, d.model_id);
  t.equal(await readActiveModel(redis, storeId), back, 'the rollback is the active model');
  t.equal((await get(SYSADMIN, `/api/v1/authz/models/diff?${q({ from: first, to: back })}`, null)).json().diff.split('\n').every((l: string) => l.startsWith(' ')), true, 'with the old content');
  t.equal((await post(DMP_ADMIN, `/api/v1/authz/models/${first}/rollback`, {}, DMP)).statusCode, 403, 'system admins only');

  const rows = (await su.query(`select action, actor_id, publisher_id, object_type, before, after from audit_events where occurred_at > $1::timestamptz order by occurred_at, id`, [mark])).rows;
  t.match(rows, [
    { action: 'authz.model_deployed', actor_id: SYSADMIN, publisher_id: null, object_type: 'authz_model', before: null, after: { model_id: d.model_id, previous_model_id: first, written: true, changed_decisions: 1, accepted_changes: true } },
    { action: 'authz.model_rolled_back', actor_id: SYSADMIN, publisher_id: null, object_type: 'authz_model', before: null, after: { model_id: back, previous_model_id: d.model_id, written: true, restored_from: first } },
  ]);
  t.equal(rows.length, 2, 'one row each');
});

t.test('OpenFGA unreachable → 503', async (t) => {
  const down = await buildTestApp(db, {}, { OPENFGA_API_URL: 'http://127.0.0.1:1', OPENFGA_STORE_NAME: STORE_NAME });
  t.teardown(() => down.close());
  for (const url of [`/api/v1/authz/explain?${q({ user: DMP_EDITOR, permission: 'can_update', object: `work:${dmpWork}` })}`, '/api/v1/authz/models']) {
    const r = await down.as(SYSADMIN, DMP, { method: 'GET', url });
    t.equal(r.statusCode, 503, url);
    t.equal(r.json().type, TYPE('pdp-unavailable'));
  }
});

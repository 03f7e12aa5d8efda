/**
 * explain / who-can / what-can (policies/src/explain.ts, contract C) against the real OpenFGA: a
 * scratch store with the real model (policies/model.fga) and a handful of tuples — an editor, a
 * creator owning a work, a department editor, a custom role's assignee, a suspended publisher, a
 * disabled user, an expired grant, a system admin — and the CLI commands, with an email resolved
 * in a throw-away catalog database.
 */
import t from 'tap';
import { randomUUID } from 'node:crypto';
import { spawn } from 'node:child_process';
import { resolve } from 'node:path';
import { fgaClient, loadModel } from '../../policies/src/model.ts';
import { ExplainInputError, explain, whatCan, whoCan } from '../../policies/src/explain.ts';
import { parseGoDuration, queryContext } from '../../policies/src/inspect.ts';
import { resolveUser } from '../../policies/src/resolve-user.ts';
import { createTestDb, adminQuery, type TestDb } from '../migrations/db.ts';
import { migrateUp } from '../../migrations/migrate.ts';
import { OPENFGA_API_URL, deleteStore, uniqueStoreName } from './helpers.ts';

const ROOT = resolve(import.meta.dirname, '../..');
const storeName = uniqueStoreName('explain');
const id = () => randomUUID();
const P1 = `publisher:${id()}`;
const P2 = `publisher:${id()}`; // suspended
const D1 = `department:${id()}`;
const ROLE = `role:${P1.slice('publisher:'.length)}/auditor`;
const W1 = `work:${id()}`;
const W2 = `work:${id()}`; // owned by CREATOR
const W3 = `work:${id()}`; // in department D1
const W4 = `work:${id()}`; // of the suspended P2
const uid = { editor: id(), creator: id(), dept: id(), assignee: id(), suspended: id(), disabled: id(), sys: id(), expired: id() };
const U = Object.fromEntries(Object.entries(uid).map(([k, v]) => [k, `user:${v}`])) as Record<keyof typeof uid, string>;
const EXPIRES = '2026-01-01T00:00:00Z';
const EDITOR_EMAIL = `Explain.Editor.${process.pid}@example.test`;

let storeId = '';
let db: TestDb | undefined;

t.before(async () => {
  const fga = fgaClient(OPENFGA_API_URL);
  storeId = (await fga.createStore({ name: storeName })).id;
  const store = fgaClient(OPENFGA_API_URL, storeId);
  const { authorization_model_id } = await store.writeAuthorizationModel(loadModel());
  const tuple = (user: string, relation: string, object: string) => ({ user, relation, object });
  await store.writeTuples([
    tuple('system:platform', 'system', P1), tuple('system:platform', 'system', P2),
    tuple(P1, 'publisher', W1), tuple(P1, 'publisher', W2), tuple(P1, 'publisher', W3), tuple(P2, 'publisher', W4),
    tuple(P1, 'publisher', D1), tuple(D1, 'department', W3), tuple(`${D1}#editor`, 'department_editor', P1),
    tuple(P1, 'publisher', ROLE), tuple(`${ROLE}#assignee`, 'grant_works_read', P1),
    tuple(U.editor, 'editor', P1),
    tuple(U.creator, 'creator', P1), tuple(U.creator, 'owner', W2),
    tuple(U.dept, 'editor', D1),
    tuple(U.assignee, 'assignee', ROLE),
    tuple('user:*', 'suspended', P2), tuple(U.suspended, 'editor', P2),
    tuple(U.disabled, 'editor', P1), tuple(U.disabled, 'disabled', 'system:platform'),
    tuple(U.sys, 'admin', 'system:platform'),
    { ...tuple(U.expired, 'editor', P1), condition: { name: 'non_expired_grant', context: { grant_expires_at: EXPIRES } } },
  ], { authorizationModelId: authorization_model_id });
});
t.teardown(async () => {
  await deleteStore(storeId);
  await db?.drop();
});

const ask = (user: string, relation: string, object: string, extra: Partial<Parameters<typeof explain>[0]> = {}) =>
  explain({ apiUrl: OPENFGA_API_URL, storeId, user, relation, object, ...extra });
const chain = (e: { path: { relation: string; object: string }[] }) => e.path.map((s) => `${s.relation} of ${s.object}`);

t.test('explain: allowed paths name the tuples and relations in order', async (t) => {
  const ed = await ask(U.editor, 'can_update', W1);
  t.equal(ed.allowed, true);
  t.match(ed.model_id, /^[0-9A-Z]{26}$/);
  t.same(chain(ed), [`editor of ${P1}`, `works_update_all of ${P1}`, `can_update of ${W1}`]);
  t.same(ed.path.map((s) => s.via), [`tuple ${P1}#editor@${U.editor}`, 'editor, not frozen', `works_update_all from publisher (${P1})`]);
  t.equal(ed.denied_because, undefined);
  t.equal(ed.truncated, undefined);
  t.match(ed.text, new RegExp(`^ALLOWED: ${U.editor} can_update ${W1} \\(model ${ed.model_id}\\)\\n  ${U.editor}\\n  → editor of ${P1} \\(tuple ${P1}#editor@${U.editor}\\)\\n`));

  const cr = await ask(U.creator, 'can_update', W2);
  t.equal(cr.allowed, true);
  t.same(chain(cr), [`owner of ${W2}`, `creator of ${P1}`, `writing_creator of ${P1}`, `can_update of ${W2}`]);
  t.equal(cr.path[0]!.via, `tuple ${W2}#owner@${U.creator}`);
  t.equal(cr.path[3]!.via, `owner and writing_creator from publisher (${P1})`);

  const dp = await ask(U.dept, 'can_update', W3);
  t.same(chain(dp), [`editor of ${D1}`, `active_editor of ${D1}`, `can_update of ${W3}`]);
  t.equal(dp.path[1]!.via, 'editor, not frozen from publisher');
  t.equal(dp.path[2]!.via, `active_editor from department (${D1})`);

  const as = await ask(U.assignee, 'can_read', W1);
  t.same(chain(as), [`assignee of ${ROLE}`, `grant_works_read of ${P1}`, `works_read_all of ${P1}`, `can_read of ${W1}`]);
  t.equal(as.path[1]!.via, `tuple ${P1}#grant_works_read@${ROLE}#assignee`, 'the userset tuple, then the userset explained');

  const sys = await ask(U.sys, 'can_update', W4);
  t.equal(sys.allowed, true, 'a system admin is not shut out of a suspended publisher');
  t.same(chain(sys).slice(0, 2), ['admin of system:platform', `admin of ${P2}`]);
  t.equal(sys.path[1]!.via, 'admin from system (system:platform)');
});

t.test('explain: denials give the reasons', async (t) => {
  const as = await ask(U.assignee, 'can_update', W1);
  t.equal(as.allowed, false);
  t.same(as.path, []);
  t.same(as.denied_because, [
    `no role at ${P1} gives works_update_all (${U.assignee} has none of: grant_works_update, editor, api_user)`,
    `${U.assignee} is not owner of ${W1}`,
    `${W1} has no department (no department tuple), so nothing comes from active_editor from department`,
  ]);
  t.match(as.text, /^DENIED: .*\nbecause:\n {2}- no role at /);

  const cr = await ask(U.creator, 'can_update', W1);
  t.ok(cr.denied_because?.includes(`${U.creator} is not owner of ${W1}`), 'a creator updates only the rows it owns');

  const su = await ask(U.suspended, 'can_update', W4);
  t.equal(su.allowed, false);
  t.match(su.denied_because?.[0], new RegExp(`^shut out: ${P2} is suspended \\(wildcard tuple ${P2}#suspended@user:\\*\\) → shut_out of ${P2} → frozen of ${P2}, which takes away works_update_all of ${P2}`));

  const di = await ask(U.disabled, 'can_read', W1);
  t.equal(di.allowed, false);
  t.match(di.denied_because?.[0], new RegExp(`^shut out: ${U.disabled} is disabled of system:platform \\(tuple system:platform#disabled@${U.disabled}\\)`));
});

t.test('explain: conditions are evaluated with the context', async (t) => {
  const now = await ask(U.expired, 'can_update', W1);
  t.equal(now.allowed, false, 'current_time defaults to now: the grant has ended');
  t.ok(now.denied_because?.includes(`tuple ${P1}#editor@${U.expired} has condition non_expired_grant, which does not hold for the context`), String(now.denied_because));
  const before = await ask(U.expired, 'can_update', W1, { context: { current_time: '2025-12-31T00:00:00Z' } });
  t.equal(before.allowed, true);
  t.equal(before.path[0]!.via, `tuple ${P1}#editor@${U.expired}, condition non_expired_grant holds for the context`);
  t.same(queryContext({ client_ip: '10.0.0.1' }, new Date(0)), { current_time: '1970-01-01T00:00:00.000Z', client_ip: '10.0.0.1' });
});

t.test('explain: bounds and bad questions', async (t) => {
  const cut = await ask(U.editor, 'can_update', W1, { maxCalls: 3 });
  t.equal(cut.allowed, true, 'the decision itself is still given');
  t.match(cut.truncated, /bound of 3 OpenFGA calls/);
  t.ok(cut.path.some((s) => /not explained further/.test(s.text)), 'the step where the walk stopped says so');
  t.equal(cut.path.at(-1)?.relation, 'can_update', 'the steps explained so far are kept');
  t.match(cut.text, /\(explanation cut: the bound of 3 OpenFGA calls was reached\)$/);
  const shallow = await ask(U.editor, 'can_update', W1, { maxDepth: 1 });
  t.match(shallow.truncated, /depth bound of 1/);
  await t.rejects(ask(U.editor, 'can_fly', W1), ExplainInputError);
  await t.rejects(ask(U.editor, 'can_read', 'work'), ExplainInputError);
  await t.rejects(ask('editor', 'can_read', W1), ExplainInputError);
});

t.test('who-can lists exactly the users holding the relation', async (t) => {
  const sorted = (...u: string[]) => [...u].sort();
  t.same(await whoCan({ apiUrl: OPENFGA_API_URL, storeId, relation: 'can_update', object: W1 }), { users: sorted(U.editor, U.sys), usersets: [], truncated: false });
  t.same((await whoCan({ apiUrl: OPENFGA_API_URL, storeId, relation: 'can_read', object: W1 })).users, sorted(U.editor, U.assignee, U.sys));
  t.same((await whoCan({ apiUrl: OPENFGA_API_URL, storeId, relation: 'can_update', object: W2 })).users, sorted(U.editor, U.creator, U.sys));
  t.same((await whoCan({ apiUrl: OPENFGA_API_URL, storeId, relation: 'can_update', object: W1, context: { current_time: '2025-12-31T00:00:00Z' } })).users, sorted(U.editor, U.expired, U.sys));
  t.same(await whoCan({ apiUrl: OPENFGA_API_URL, storeId, relation: 'suspended', object: P2 }), { users: [], usersets: ['user:*'], truncated: false });
  const capped = await whoCan({ apiUrl: OPENFGA_API_URL, storeId, relation: 'can_read', object: W1, limits: { maxResults: 3, deadlineMs: 0 } });
  t.equal(capped.truncated, true, 'an answer as long as the server limit is reported as cut');
  t.equal(parseGoDuration('1m30s'), 90_000);
  t.equal(parseGoDuration('500ms'), 500);
  t.throws(() => parseGoDuration('soon'));
});

t.test('what-can lists exactly the objects and reports truncation', async (t) => {
  const q = (user: string, maxResults?: number) => whatCan({ apiUrl: OPENFGA_API_URL, storeId, user, relation: 'can_update', type: 'work', ...(maxResults ? { maxResults } : {}) });
  t.same(await q(U.editor), { objects: [W1, W2, W3].sort(), truncated: false });
  t.same(await q(U.sys), { objects: [W1, W2, W3, W4].sort(), truncated: false });
  t.same(await q(U.suspended), { objects: [], truncated: false });
  t.same(await q(U.creator), { objects: [W2], truncated: false });
  const two = await q(U.editor, 2);
  t.equal(two.truncated, true);
  t.equal(two.objects.length, 2);
  t.ok(two.objects.every((o) => [W1, W2, W3].includes(o)));
  t.same(await q(U.editor, 3), { objects: [W1, W2, W3].sort(), truncated: false }, 'exactly maxResults is not truncated');
});

t.test('CLI: explain, who-can, what-can', async (t) => {
  db = await createTestDb('explaincli');
  await migrateUp(db.ownerUrl);
  await adminQuery(db.adminUrl, 'insert into users (id, email, display_name) values ($1, $2, $3)', [uid.editor, EDITOR_EMAIL, 'Explain Editor']);
  const env = { ...process.env, OPENFGA_API_URL, OPENFGA_STORE_NAME: storeName, DATABASE_OWNER_URL: db.ownerUrl };
  const cli = (...args: string[]) =>
    new Promise<{ code: number | null; out: string; err: string }>((done) => {
      const p = spawn(process.execPath, ['policies/src/cli.ts', ...args], { cwd: ROOT, env });
      let out = '';
      let err = '';
      p.stdout.on('data', (d) => (out += d));
      p.stderr.on('data', (d) => (err += d));
      p.on('close', (code) => done({ code, out, err }));
    });
  const [byEmail, denied, who, what, noUser, badContext] = await Promise.all([
    cli('explain', EDITOR_EMAIL.toLowerCase(), 'can_update', W1),
    cli('explain', uid.assignee, 'can_update', W1, '--context', '{"client_ip":"10.0.0.1"}'),
    cli('who-can', 'can_update', W1),
    cli('what-can', U.editor, 'can_update', 'work', '--max-results', '2'),
    cli('explain', 'nobody@example.test', 'can_update', W1),
    cli('explain', U.editor, 'can_update', W1, '--context', '[1]'),
  ]);
  t.equal(byEmail.code, 0, byEmail.err);
  t.match(byEmail.out, new RegExp(`^ALLOWED: ${U.editor} can_update ${W1} `), 'the email resolved to the user id');
  t.match(byEmail.out, `→ editor of ${P1} (tuple ${P1}#editor@${U.editor})`);
  t.match(byEmail.out, `→ can_update of ${W1} (works_update_all from publisher (${P1}))`);
  t.equal(denied.code, 0, 'a denial is an answer, not an error');
  t.match(denied.out, /^DENIED: .*\nbecause:\n {2}- no role at /);
  t.equal(who.code, 0, who.err);
  t.same(who.out.trim().split('\n').slice(1).map((l) => l.trim()), [U.editor, U.sys].sort());
  t.equal(what.code, 0, what.err);
  t.match(what.out, /^2 work object\(s\)/);
  t.match(what.out, /TRUNCATED: more than 2/);
  t.equal(noUser.code, 1);
  t.match(noUser.err, /no user with email nobody@example\.test/);
  t.equal(badContext.code, 1);
  t.match(badContext.err, /--context must be a JSON object/);
  t.equal(await resolveUser(uid.sys.toUpperCase(), db.ownerUrl), U.sys);
  t.equal(await resolveUser('user:someone', db.ownerUrl), 'user:someone');
  await t.rejects(resolveUser('not a user', db.ownerUrl), /user must be/);
});

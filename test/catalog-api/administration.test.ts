/**
 * The administration half of the catalog API against real PostgreSQL, Redis and an SMTP server
 * process: users (me, profile, system-admin administration, who may see whom), publishers (create,
 * list, profile, status, settings, branding, archive), invitations (mail, accept, single use,
 * expiry, re-invite, revoke), seats, role changes and the last admin (also under concurrency),
 * custom roles (cannot exceed their author), API clients (client credentials) and departments.
 * Every handler runs through RLS as `catalog_app`; the deny cases check that nothing was written.
 */
import t from 'tap';
import { randomUUID } from 'node:crypto';
import { decodeJwt } from 'jose';
import type pg from 'pg';
import type { InjectOptions } from 'fastify';
import { DEMO_PASSWORD } from '../../migrations/seed/demo.ts';
import { adminClient, buildTestApp, createTestDb, postLogin, type TestApp, type TestDb } from './helpers.ts';
import { invitationTokenInMail, startMailCatcher, type MailCatcher } from '../support/mail.ts';
import { DMP, SONGTRUST, SPIRIT, SYSADMIN, DMP_ADMIN, DMP_MANAGER, DMP_EDITOR, DMP_VIEWER, SPIRIT_OWNER, MULTI, TYPE } from '../support/demo-ids.ts';


let db: TestDb;
let ta: TestApp;
let su: pg.Client;
let mail: MailCatcher;
t.before(async () => {
  mail = await startMailCatcher();
  db = await createTestDb('admin');
  ta = await buildTestApp(db, {}, { SMTP_URL: mail.url, SIGN_IN_RATE_LIMIT_PER_MINUTE: '100000' });
  su = await adminClient(db);
});
t.teardown(async () => {
  await su?.end();
  await ta?.close();
  await db?.drop();
  await mail?.stop();
});

/** Call the API as `sub` (no publisher context unless given), with a JSON body. */
const api = (sub: string, method: InjectOptions['method'], url: string, payload?: unknown, publisher: string | null = null) =>
  ta.as(sub, publisher, { method, url, ...(payload !== undefined ? { payload: payload as object } : {}) });
const snapshot = async (table: string) => (await su.query(`select * from ${table} order by 1, 2`)).rows;
/** The invitation token in the newest mail to `to`. */
const invitationToken = async (to: string, after = 0) => {
  const m = await mail.waitFor(to, { subject: /invited/, after });
  return invitationTokenInMail(m);
};

t.test('users/me: profile and memberships; the profile is changeable, email/status/roles are not', async (t) => {
  const me = (await api(MULTI, 'GET', '/api/v1/users/me')).json();
  t.match(me, { id: MULTI, email: 'multi@example.com', kind: 'person', status: 'active', is_system_admin: false });
  t.same(me.memberships.map((m: { slug: string; role: string }) => `${m.slug}:${m.role}`).sort(), ['dmp:viewer', 'spirit:editor']);
  const put = await api(MULTI, 'PUT', '/api/v1/users/me', { display_name: 'Multi P.', phone: '+442071234567', timezone: 'Europe/London', language: 'en-GB', avatar_url: 'https://cdn.example/a.png' });
  t.equal(put.statusCode, 200);
  t.match(put.json(), { display_name: 'Multi P.', phone: '+442071234567', timezone: 'Europe/London', language: 'en-GB', avatar_url: 'https://cdn.example/a.png' });
  for (const bad of [{ email: 'x@y.example' }, { status: 'disabled' }, { role: 'admin' }]) {
    t.equal((await api(MULTI, 'PUT', '/api/v1/users/me', bad)).statusCode, 400, `${Object.keys(bad)[0]} is not part of the profile`);
  }
  for (const [field, value] of [['timezone', 'Mars/Olympus'], ['phone', '0207'], ['avatar_url', 'http://cdn.example/a.png'], ['language', 'english']] as const) {
    const r = await api(MULTI, 'PUT', '/api/v1/users/me', { [field]: value });
    t.equal(r.statusCode, 400, `${field}=${value} refused`);
  }
  t.equal((await su.query(`select email from users where id = $1`, [MULTI])).rows[0].email, 'multi@example.com');
});

t.test('publishers: a system admin creates and lists them all; members see theirs; the profile needs publishers:update', async (t) => {
  const body = { name: 'Nordic Notes', slug: 'nordic-notes', type: 'professional', business_model: 'traditional' };
  t.equal((await api(DMP_ADMIN, 'POST', '/api/v1/publishers', body)).statusCode, 403, 'a publisher admin cannot create publishers');
  const created = await api(SYSADMIN, 'POST', '/api/v1/publishers', body);
  t.equal(created.statusCode, 201, created.body);
  const nordic = created.json();
  t.match(nordic, { ...body, status: 'active' });
  t.equal(created.headers.location, `/api/v1/publishers/${nordic.id}`);
  t.equal((await api(SYSADMIN, 'POST', '/api/v1/publishers', body)).statusCode, 409, 'the slug is unique');
  t.equal((await api(SYSADMIN, 'POST', '/api/v1/publishers', { ...body, slug: 'x-y', settings: { colour: 'red' } })).statusCode, 422, 'unknown setting');

  const all = (await api(SYSADMIN, 'GET', '/api/v1/publishers?limit=100')).json();
  t.ok(all.items.length >= 5, 'system admin: every publisher');
  const platforms = (await api(SYSADMIN, 'GET', '/api/v1/publishers?type=platform')).json();
  t.same(platforms.items.map((p: { slug: string }) => p.slug), ['songtrust'], 'filter by type');
  const pages = [];
  let cursor: string | null = null;
  do {
    const page: { items: { id: string }[]; next_cursor: string | null } = (await api(SYSADMIN, 'GET', `/api/v1/publishers?limit=2${cursor ? `&cursor=${cursor}` : ''}`)).json();
    pages.push(...page.items.map((p) => p.id));
    cursor = page.next_cursor;
  } while (cursor);
  t.same(pages, all.items.map((p: { id: string }) => p.id), 'keyset pages add up to the whole list');
  const mine = (await api(MULTI, 'GET', '/api/v1/publishers')).json();
  t.same(mine.items.map((p: { slug: string }) => p.slug).sort(), ['dmp', 'spirit'], 'a member: only their publishers');

  t.equal((await api(DMP_VIEWER, 'GET', `/api/v1/publishers/${DMP}`)).statusCode, 200, 'members read it');
  t.equal((await api(DMP_VIEWER, 'GET', `/api/v1/publishers/${SPIRIT}`)).statusCode, 403, 'not another publisher');
  t.equal((await api(DMP_VIEWER, 'PUT', `/api/v1/publishers/${DMP}`, { name: 'Viewer Was Here' })).statusCode, 403, 'a viewer cannot change it');
  const renamed = await api(DMP_ADMIN, 'PUT', `/api/v1/publishers/${DMP}`, { name: 'Downtown Music Publishing Ltd' });
  t.equal(renamed.statusCode, 200);
  t.equal(renamed.json().name, 'Downtown Music Publishing Ltd');
  t.equal((await api(DMP_ADMIN, 'PUT', `/api/v1/publishers/${DMP}`, { name: 'x', slug: 'downtown' })).statusCode, 403, "the slug is a system admin's");
  t.equal((await api(SYSADMIN, 'PUT', `/api/v1/publishers/${nordic.id}`, { name: 'Nordic Notes AB', type: 'boutique' })).json().type, 'boutique');
});

t.test('settings and branding: documented keys, defaults, unknown keys and bad values → 422', async (t) => {
  const url = `/api/v1/publishers/${DMP}/settings`;
  const current = await api(DMP_MANAGER, 'GET', url);
  t.equal(current.statusCode, 200, 'managers read the settings');
  t.match(current.json(), { auth_policy: 'both', require_mfa: false, timezone: 'UTC', default_territory: 'US', language: 'en' });
  t.equal((await api(DMP_MANAGER, 'PUT', url, { auth_policy: 'both' })).statusCode, 403, 'but only admins change them');
  const unknown = await api(DMP_ADMIN, 'PUT', url, { auth_policy: 'both', colour: 'red' });
  t.equal(unknown.statusCode, 422);
  t.same(unknown.json().errors, [{ field: 'colour', reason: 'unknown key' }]);
  const bad = await api(DMP_ADMIN, 'PUT', url, { auth_policy: 'both', timezone: 'Mars/Olympus', default_territory: 'usa', session_max_age_s: 10 });
  t.equal(bad.statusCode, 422);
  t.same(bad.json().errors.map((e: { field: string }) => e.field).sort(), ['default_territory', 'session_max_age_s', 'timezone']);
  const ok = await api(DMP_ADMIN, 'PUT', url, { auth_policy: 'both', timezone: 'Europe/London', default_territory: 'GB', session_max_age_s: 86_400 });
  t.equal(ok.statusCode, 200);
  t.match(ok.json(), { timezone: 'Europe/London', default_territory: 'GB', session_max_age_s: 86_400 });

  const b = `/api/v1/publishers/${DMP}/branding`;
  t.equal((await api(DMP_VIEWER, 'GET', b)).statusCode, 200, 'every member reads the branding');
  t.equal((await api(DMP_EDITOR, 'PUT', b, { display_name: 'DMP' })).statusCode, 403, 'editors do not change it');
  const http = await api(DMP_MANAGER, 'PUT', b, { logo_url: 'http://cdn.example/logo.png', primary_color: 'red' });
  t.equal(http.statusCode, 422);
  t.same(http.json().errors.map((e: { field: string }) => e.field).sort(), ['logo_url', 'primary_color']);
  const branded = await api(DMP_MANAGER, 'PUT', b, { display_name: 'DMP', logo_url: 'https://cdn.example/logo.png', primary_color: '#112233' });
  t.equal(branded.statusCode, 200);
  t.same((await api(DMP_VIEWER, 'GET', b)).json(), { display_name: 'DMP', logo_url: 'https://cdn.example/logo.png', primary_color: '#112233' });
});

t.test('status: suspended shuts the members out (system admins excepted), active lets them back; archive and restore', async (t) => {
  const status = (s: string, who = SYSADMIN) => api(who, 'PUT', `/api/v1/publishers/${SPIRIT}/status`, { status: s });
  t.equal((await status('suspended', SPIRIT_OWNER)).statusCode, 403, "a publisher admin cannot change the status");
  t.equal((await status('suspended')).statusCode, 200);
  const denied = await api(SPIRIT_OWNER, 'GET', '/api/v1/works?limit=1', undefined, SPIRIT);
  t.equal(denied.statusCode, 403);
  t.equal(denied.json().type, TYPE('publisher-suspended'));
  t.equal((await api(SPIRIT_OWNER, 'GET', `/api/v1/publishers/${SPIRIT}/settings`)).statusCode, 403, 'administration too');
  t.equal((await api(SYSADMIN, 'GET', '/api/v1/works?limit=1', undefined, SPIRIT)).statusCode, 200, 'system admins are exempt');
  const outbox = await su.query(`select operation from authz_outbox where object = $1 and relation = 'suspended' and subject = 'user:*' order by id desc limit 1`, [`publisher:${SPIRIT}`]);
  t.same(outbox.rows, [{ operation: 'write' }], 'the wildcard tuple that OpenFGA applies everywhere');
  t.equal((await status('trial')).statusCode, 200);
  t.equal((await api(SPIRIT_OWNER, 'GET', '/api/v1/works?limit=1', undefined, SPIRIT)).statusCode, 200, 'trial works like active');

  t.equal((await api(MULTI, 'DELETE', `/api/v1/publishers/${SPIRIT}`)).statusCode, 403, 'an editor cannot archive');
  t.equal((await api(SPIRIT_OWNER, 'DELETE', `/api/v1/publishers/${SPIRIT}`)).statusCode, 204, 'the admin archives');
  t.equal((await api(SPIRIT_OWNER, 'GET', '/api/v1/works?limit=1', undefined, SPIRIT)).json().type, TYPE('publisher-archived'));
  t.notOk((await api(SPIRIT_OWNER, 'GET', '/api/v1/publishers')).json().items.some((p: { id: string }) => p.id === SPIRIT), 'gone from their list');
  const archived = (await api(SYSADMIN, 'GET', '/api/v1/publishers?status=archived')).json();
  t.ok(archived.items.some((p: { id: string; status: string }) => p.id === SPIRIT && p.status === 'archived'), 'a system admin lists archived ones');
  t.equal((await status('active')).json().status, 'active', 'and restores it');
  t.equal((await api(SPIRIT_OWNER, 'GET', '/api/v1/works?limit=1', undefined, SPIRIT)).statusCode, 200, 'back in business');
});

t.test('invitations: mail, accept as a new person, sign in; single use; re-invite replaces; revoke; expiry', async (t) => {
  const invite = (email: string, body: object = { role: 'editor' }, who = SPIRIT_OWNER) => api(who, 'POST', `/api/v1/publishers/${SPIRIT}/users/invite`, { email, ...body });
  const before = (await mail.all()).length;
  const inv = await invite('new.editor@spirit.example');
  t.equal(inv.statusCode, 201, inv.body);
  t.notOk(JSON.stringify(inv.json()).match(/[0-9a-f-]{36}.*token/i) && inv.json().token, 'the token is not in the answer');
  const token = await invitationToken('new.editor@spirit.example', before);
  t.match((await su.query(`select token_hash from invitations where email = 'new.editor@spirit.example'`)).rows[0].token_hash, /^[A-Za-z0-9_-]{43}$/, 'stored as a digest');
  t.not((await su.query(`select token_hash from invitations where email = 'new.editor@spirit.example'`)).rows[0].token_hash, token);
  const weak = await ta.app.inject({ method: 'POST', url: `/api/v1/invitations/${token}/accept`, payload: { password: 'short', display_name: 'New Editor' } });
  t.equal(weak.statusCode, 422, 'a new account needs a 12+ character password');
  const accepted = await ta.app.inject({ method: 'POST', url: `/api/v1/invitations/${token}/accept`, payload: { password: 'a-long-new-password', display_name: 'New Editor' } });
  t.equal(accepted.statusCode, 200, accepted.body);
  t.match(accepted.json(), { publisher_id: SPIRIT, role: 'editor' });
  const again = await ta.app.inject({ method: 'POST', url: `/api/v1/invitations/${token}/accept`, payload: { password: 'a-long-new-password', display_name: 'New Editor' } });
  t.equal(again.statusCode, 400, 'single use');
  t.equal(again.json().type, TYPE('invalid-grant'));
  const signIn = await postLogin(ta, 'new.editor@spirit.example', 'a-long-new-password');
  t.equal(signIn.status, 200, 'the new member signs in');
  const members = (await api(SPIRIT_OWNER, 'GET', `/api/v1/publishers/${SPIRIT}/users`)).json();
  t.ok(members.items.some((m: { email: string; role: string }) => m.email === 'new.editor@spirit.example' && m.role === 'editor'));
  t.equal((await invite('new.editor@spirit.example')).statusCode, 409, 'a member is not invited again');

  // an existing internal user joins with their password
  const at = (await mail.all()).length;
  t.equal((await invite('viewer@dmp.example', { role: 'viewer' })).statusCode, 201);
  const t2 = await invitationToken('viewer@dmp.example', at);
  const wrong = await ta.app.inject({ method: 'POST', url: `/api/v1/invitations/${t2}/accept`, payload: { password: 'not-the-password' } });
  t.equal(wrong.statusCode, 401, 'an existing account proves it with its password');
  t.equal((await ta.app.inject({ method: 'POST', url: `/api/v1/invitations/${t2}/accept`, payload: { password: DEMO_PASSWORD } })).statusCode, 200);
  t.ok((await api(DMP_VIEWER, 'GET', '/api/v1/users/me')).json().memberships.some((m: { slug: string }) => m.slug === 'spirit'));

  // re-inviting replaces the open invitation; revoking ends it; an expired one is refused
  const at3 = (await mail.all()).length;
  await invite('twice@spirit.example');
  const first = await invitationToken('twice@spirit.example', at3);
  await invite('twice@spirit.example', { role: 'viewer' });
  const second = await invitationToken('twice@spirit.example', at3 + 1);
  t.not(first, second);
  t.equal((await ta.app.inject({ method: 'POST', url: `/api/v1/invitations/${first}/accept`, payload: { password: 'twice-password-1', display_name: 'Twice' } })).statusCode, 400, 'the replaced token is void');
  const open = (await api(SPIRIT_OWNER, 'GET', `/api/v1/publishers/${SPIRIT}/invitations`)).json().items;
  t.same(open.filter((i: { email: string }) => i.email === 'twice@spirit.example').map((i: { role: string }) => i.role), ['viewer'], 'one open invitation');
  const id = open.find((i: { email: string }) => i.email === 'twice@spirit.example').id;
  t.equal((await api(SPIRIT_OWNER, 'DELETE', `/api/v1/publishers/${SPIRIT}/invitations/${id}`)).statusCode, 204);
  t.equal((await ta.app.inject({ method: 'POST', url: `/api/v1/invitations/${second}/accept`, payload: { password: 'twice-password-1', display_name: 'Twice' } })).statusCode, 400, 'revoked');
  const at4 = (await mail.all()).length;
  await invite('late@spirit.example');
  const late = await invitationToken('late@spirit.example', at4);
  await su.query(`update invitations set expires_at = now() - interval '1 second' where email = 'late@spirit.example'`);
  t.equal((await ta.app.inject({ method: 'POST', url: `/api/v1/invitations/${late}/accept`, payload: { password: 'late-password-12', display_name: 'Late' } })).statusCode, 400, 'expired after 7 days');
  t.equal((await ta.app.inject({ method: 'POST', url: `/api/v1/invitations/${randomUUID()}/accept`, payload: { password: 'whatever-12345' } })).statusCode, 400, 'unknown token: same answer');
  t.equal((await ta.app.inject({ method: 'POST', url: '/api/v1/invitations/not-a-token/accept', payload: { password: 'whatever-12345' } })).statusCode, 400);
});

t.test('nobody grants what they do not hold; a department admin grants in their department only', async (t) => {
  // a custom role that may invite but holds no catalog permission
  const role = await api(SPIRIT_OWNER, 'POST', `/api/v1/publishers/${SPIRIT}/roles`, { name: 'recruiter', permissions: ['members:invite', 'members:read'] });
  t.equal(role.statusCode, 201, role.body);
  t.equal((await api(SPIRIT_OWNER, 'PUT', `/api/v1/publishers/${SPIRIT}/users/${MULTI}/role`, { role: 'custom', custom_role_id: role.json().id })).statusCode, 200);
  t.teardown(() => api(SPIRIT_OWNER, 'PUT', `/api/v1/publishers/${SPIRIT}/users/${MULTI}/role`, { role: 'editor' }));
  const before = await snapshot('invitations');
  const admin = await api(MULTI, 'POST', `/api/v1/publishers/${SPIRIT}/users/invite`, { email: 'boss@spirit.example', role: 'admin' });
  t.equal(admin.statusCode, 403, 'inviting an admin would hand out permissions the recruiter lacks');
  t.match(admin.json().detail, /works:read/);
  t.same(await snapshot('invitations'), before, 'nothing written');
  t.equal((await api(MULTI, 'POST', `/api/v1/publishers/${SPIRIT}/users/invite`, { email: 'peer@spirit.example', role: 'custom', custom_role_id: role.json().id })).statusCode, 201, 'their own role they may hand out');
  t.equal((await api(MULTI, 'POST', `/api/v1/publishers/${SPIRIT}/roles`, { name: 'sneaky', permissions: ['audit:read'] })).statusCode, 403, 'nor create roles (no roles:manage)');
});

t.test("seats: members and open invitations never exceed the account's seats (409 seats-exhausted)", async (t) => {
  const { rows } = await su.query(
    `select (select count(*) from user_publishers where publisher_id = $1 and role <> 'api_user')::int
          + (select count(*) from invitations where publisher_id = $1 and accepted_at is null and revoked_at is null and expires_at > now())::int as used`,
    [SPIRIT],
  );
  const used = rows[0].used as number;
  const seats = (n: number) => api(SPIRIT_OWNER, 'PUT', `/api/v1/publishers/${SPIRIT}/account/plan`, { plan_type: 'professional', seats: n });
  t.equal((await seats(used + 1)).statusCode, 200);
  t.equal((await api(SPIRIT_OWNER, 'POST', `/api/v1/publishers/${SPIRIT}/users/invite`, { email: 'seat.one@spirit.example', role: 'viewer' })).statusCode, 201, 'the last seat');
  const full = await api(SPIRIT_OWNER, 'POST', `/api/v1/publishers/${SPIRIT}/users/invite`, { email: 'seat.two@spirit.example', role: 'viewer' });
  t.equal(full.statusCode, 409);
  t.equal(full.json().type, TYPE('seats-exhausted'));
  const direct = await api(SYSADMIN, 'POST', `/api/v1/users/${DMP_EDITOR}/publishers`, { publisher_id: SPIRIT, role: 'viewer' });
  t.equal(direct.statusCode, 409, "a system admin's direct addition counts too");
  // two concurrent invitations for one seat: one wins
  t.equal((await seats(used + 2)).statusCode, 200);
  const race = await Promise.all(['race.a@spirit.example', 'race.b@spirit.example'].map((email) => api(SPIRIT_OWNER, 'POST', `/api/v1/publishers/${SPIRIT}/users/invite`, { email, role: 'viewer' })));
  t.same(race.map((r) => r.statusCode).sort(), [201, 409], 'exactly one takes the last seat');
  t.equal((await seats(50)).statusCode, 200);
});

t.test('roles of members: change, remove, the last admin stays — also under concurrent demotions', async (t) => {
  const url = (u: string) => `/api/v1/publishers/${DMP}/users/${u}`;
  t.equal((await api(DMP_MANAGER, 'PUT', `${url(DMP_VIEWER)}/role`, { role: 'editor' })).statusCode, 403, 'managers do not change roles');
  const changed = await api(DMP_ADMIN, 'PUT', `${url(DMP_VIEWER)}/role`, { role: 'editor' });
  t.equal(changed.statusCode, 200);
  t.equal(changed.json().role, 'editor');
  t.equal((await api(DMP_ADMIN, 'PUT', `${url(DMP_VIEWER)}/role`, { role: 'viewer' })).statusCode, 200);
  const unknown = await api(DMP_ADMIN, 'PUT', `${url(randomUUID())}/role`, { role: 'viewer' });
  const foreign = await api(DMP_ADMIN, 'PUT', `${url(SPIRIT_OWNER)}/role`, { role: 'viewer' });
  t.same([unknown.statusCode, unknown.json().detail], [foreign.statusCode, foreign.json().detail], 'an unknown user and a non-member look the same');
  const last = await api(DMP_ADMIN, 'PUT', `${url(DMP_ADMIN)}/role`, { role: 'editor' });
  t.equal(last.statusCode, 409);
  t.equal(last.json().type, TYPE('last-admin'));
  t.equal((await api(DMP_ADMIN, 'DELETE', url(DMP_ADMIN))).statusCode, 409, 'nor removed');

  // two admins demote each other at the same time: at least one admin remains
  await api(DMP_ADMIN, 'PUT', `${url(DMP_MANAGER)}/role`, { role: 'admin' });
  for (let round = 0; round < 5; round++) {
    const results = await Promise.all([
      api(DMP_ADMIN, 'PUT', `${url(DMP_MANAGER)}/role`, { role: 'manager' }),
      api(DMP_MANAGER, 'PUT', `${url(DMP_ADMIN)}/role`, { role: 'editor' }),
    ]);
    const admins = (await su.query(`select count(*)::int as n from user_publishers where publisher_id = $1 and role = 'admin'`, [DMP])).rows[0].n;
    t.ok(admins >= 1, `round ${round}: ${admins} admin(s) left (${results.map((r) => r.statusCode).join(', ')})`);
    // restore two admins for the next round
    await su.query(`update user_publishers set role = 'admin' where publisher_id = $1 and user_id = any($2)`, [DMP, [DMP_ADMIN, DMP_MANAGER]]);
  }
  await su.query(`update user_publishers set role = 'manager' where publisher_id = $1 and user_id = $2`, [DMP, DMP_MANAGER]);
  t.equal((await api(DMP_ADMIN, 'DELETE', url(DMP_VIEWER))).statusCode, 204, 'an admin removes a member');
  t.equal((await api(DMP_ADMIN, 'DELETE', url(DMP_VIEWER))).statusCode, 404);
  await su.query(`insert into user_publishers (publisher_id, user_id, role) values ($1, $2, 'viewer')`, [DMP, DMP_VIEWER]);
});

t.test('custom roles: create, assign, the permissions apply; not beyond the author; in use → 409', async (t) => {
  const roles = `/api/v1/publishers/${DMP}/roles`;
  t.equal((await api(DMP_MANAGER, 'POST', roles, { name: 'catalog-clerk', permissions: ['works:read'] })).statusCode, 403, 'roles:manage is an admin permission');
  for (const [body, why] of [
    [{ name: 'admin', permissions: [] }, 'a system role name'],
    [{ name: 'Bad Name', permissions: [] }, 'a bad name'],
    [{ name: 'x-role', permissions: ['works:fly'] }, 'an unknown permission'],
  ] as const) {
    const r = await api(DMP_ADMIN, 'POST', roles, body);
    t.ok(r.statusCode === 400 || r.statusCode === 422, `${why} → ${r.statusCode}`);
  }
  const created = await api(DMP_ADMIN, 'POST', roles, { name: 'catalog-clerk', display_name: 'Catalog clerk', permissions: ['works:read', 'works:create'] });
  t.equal(created.statusCode, 201, created.body);
  const clerkRole = created.json();
  t.same(clerkRole.permissions, ['works:create', 'works:read']);
  t.equal((await api(DMP_ADMIN, 'POST', roles, { name: 'catalog-clerk', permissions: [] })).statusCode, 409, 'names are unique');
  const grants = await su.query(`select relation, subject from authz_outbox where object = $1 and relation like 'grant_%' order by id`, [`publisher:${DMP}`]);
  t.same(grants.rows.slice(-2), [
    { relation: 'grant_works_create', subject: `role:${DMP}/catalog-clerk#assignee` },
    { relation: 'grant_works_read', subject: `role:${DMP}/catalog-clerk#assignee` },
  ], 'its grants are tuples on the publisher');

  await api(DMP_ADMIN, 'PUT', `/api/v1/publishers/${DMP}/users/${DMP_EDITOR}/role`, { role: 'custom', custom_role_id: clerkRole.id });
  const work = await api(DMP_EDITOR, 'POST', '/api/v1/works', { title: 'Clerk work' }, DMP);
  t.equal(work.statusCode, 201, 'works:create');
  t.equal((await api(DMP_EDITOR, 'PATCH', `/api/v1/works/${work.json().id}`, { title: 'x' }, DMP)).statusCode, 403, 'no works:update');
  t.equal((await api(DMP_EDITOR, 'DELETE', `/api/v1/works/${work.json().id}`, undefined, DMP)).statusCode, 403, 'no works:delete');
  t.equal((await api(DMP_EDITOR, 'POST', '/api/v1/songwriters', { last_name: 'Nope' }, DMP)).statusCode, 403, 'no songwriters:create');
  const updated = await api(DMP_ADMIN, 'PUT', `${roles}/${clerkRole.id}`, { permissions: ['works:read', 'works:create', 'works:update'] });
  t.equal(updated.statusCode, 200);
  t.equal((await api(DMP_EDITOR, 'PATCH', `/api/v1/works/${work.json().id}`, { title: 'Clerk work, edited' }, DMP)).statusCode, 200, 'the next request has the new permission');
  t.equal((await api(DMP_ADMIN, 'DELETE', `${roles}/${clerkRole.id}`)).statusCode, 409, 'a role in use stays');
  const listed = (await api(DMP_MANAGER, 'GET', roles)).json().items.map((r: { name: string; system: boolean }) => `${r.name}:${r.system}`);
  t.ok(listed.includes('catalog-clerk:false') && listed.includes('admin:true') && !listed.some((n: string) => n.startsWith('department-')), 'system and custom roles');
  await api(DMP_ADMIN, 'PUT', `/api/v1/publishers/${DMP}/users/${DMP_EDITOR}/role`, { role: 'editor' });
  t.equal((await api(DMP_ADMIN, 'DELETE', `${roles}/${clerkRole.id}`)).statusCode, 204, 'unused: deleted');
  t.equal((await api(DMP_ADMIN, 'PUT', `${roles}/00000000-0000-4000-a000-000000000001`, { permissions: [] })).statusCode, 404, 'system roles are not editable');
});

t.test('API clients: register (secret once), client credentials grant, rotate, revoke', async (t) => {
  const base = `/api/v1/publishers/${DMP}/api-clients`;
  t.equal((await api(DMP_MANAGER, 'POST', base, { name: 'Ingest' })).statusCode, 403, 'api_clients:manage is an admin permission');
  const reg = await api(DMP_ADMIN, 'POST', base, { name: 'Ingest' });
  t.equal(reg.statusCode, 201, reg.body);
  const { client_id, client_secret } = reg.json();
  t.match(client_secret, /^[A-Za-z0-9_-]{43}$/);
  t.notOk(JSON.stringify((await api(DMP_ADMIN, 'GET', base)).json()).includes(client_secret), 'never shown again');
  const grant = (id: string, secret: string) =>
    ta.app.inject({ method: 'POST', url: '/api/v1/auth/token', headers: { 'content-type': 'application/x-www-form-urlencoded' }, payload: new URLSearchParams({ grant_type: 'client_credentials', client_id: id, client_secret: secret }).toString() });
  const ok = await grant(client_id, client_secret);
  t.equal(ok.statusCode, 200, ok.body);
  t.equal(ok.json().token_type, 'Bearer');
  t.notOk(ok.json().refresh_token, 'no refresh token (RFC 6749 §4.4.3)');
  const claims = decodeJwt(ok.json().access_token);
  t.match(claims, { sub: client_id, client_id });
  t.type(claims.sid, 'string');
  const basic = await ta.app.inject({
    method: 'POST',
    url: '/api/v1/auth/token',
    headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${Buffer.from(`${client_id}:${client_secret}`).toString('base64')}` },
    payload: 'grant_type=client_credentials',
  });
  t.equal(basic.statusCode, 200, 'HTTP Basic client authentication (RFC 6749 §2.3.1)');
  const answers = await Promise.all([grant(client_id, 'wrong'), grant(randomUUID(), client_secret), grant('nope', 'x')]);
  t.same(answers.map((a) => a.statusCode), [401, 401, 401], 'one answer for every failure');
  t.same(new Set(answers.map((a) => a.json().detail)).size, 1);
  // the client is an api_user: catalog read/create/update, nothing else
  t.equal((await api(client_id, 'GET', '/api/v1/works?limit=1', undefined, DMP)).statusCode, 200);
  t.equal((await api(client_id, 'POST', '/api/v1/works', { title: 'From the API' }, DMP)).statusCode, 201);
  t.equal((await api(client_id, 'GET', `/api/v1/publishers/${DMP}/users`)).statusCode, 403, 'no administration');
  const rotated = await api(DMP_ADMIN, 'POST', `${base}/${client_id}/rotate`);
  t.equal(rotated.statusCode, 200);
  t.equal((await grant(client_id, client_secret)).statusCode, 401, 'the old secret is void');
  t.equal((await grant(client_id, rotated.json().client_secret)).statusCode, 200);
  t.ok((await su.query(`select revoked_at from user_sessions where id = $1`, [claims.sid])).rows[0].revoked_at, 'sessions of the old secret ended');
  t.equal((await api(DMP_ADMIN, 'DELETE', `${base}/${client_id}`)).statusCode, 204);
  t.equal((await grant(client_id, rotated.json().client_secret)).statusCode, 401, 'revoked');
  t.equal((await api(client_id, 'GET', '/api/v1/works?limit=1', undefined, DMP)).statusCode, 403, 'no membership left');
});

t.test('users: system admins create, disable and delete; who may see a user', async (t) => {
  t.equal((await api(DMP_ADMIN, 'POST', '/api/v1/users', { email: 'x@new.example', display_name: 'X' })).statusCode, 403, 'only system admins create people');
  const created = await api(SYSADMIN, 'POST', '/api/v1/users', { email: 'Fresh.Person@new.example', display_name: 'Fresh Person' });
  t.equal(created.statusCode, 201, created.body);
  const fresh = created.json();
  t.match(fresh, { email: 'fresh.person@new.example', kind: 'person', status: 'active', memberships: [] });
  t.equal((await api(SYSADMIN, 'POST', '/api/v1/users', { email: 'fresh.person@new.example', display_name: 'Again' })).statusCode, 409);

  // who sees whom: self, system admins, and those holding members:read at a shared publisher (only those memberships)
  t.equal((await api(MULTI, 'GET', `/api/v1/users/${MULTI}`)).statusCode, 200, 'themself');
  t.equal((await api(SYSADMIN, 'GET', `/api/v1/users/${MULTI}`)).json().memberships.length, 2, 'a system admin: every membership');
  const byDmp = await api(DMP_ADMIN, 'GET', `/api/v1/users/${MULTI}`);
  t.equal(byDmp.statusCode, 200, "DMP's admin: multi is a member of DMP");
  t.same(byDmp.json().memberships.map((m: { slug: string }) => m.slug), ['dmp'], 'only the shared publisher');
  const stranger = await api(DMP_ADMIN, 'GET', `/api/v1/users/${SPIRIT_OWNER}`);
  const unknown = await api(DMP_ADMIN, 'GET', `/api/v1/users/${randomUUID()}`);
  t.same([stranger.statusCode, stranger.json().detail], [unknown.statusCode, unknown.json().detail], 'a stranger and an unknown id look the same');
  t.equal(stranger.statusCode, 404);
  t.equal((await api(DMP_VIEWER, 'GET', `/api/v1/users/${MULTI}`)).statusCode, 404, 'a viewer holds no members:read');

  t.equal((await api(SYSADMIN, 'PUT', `/api/v1/users/${SYSADMIN}/status`, { status: 'disabled' })).statusCode, 403, 'not on oneself');
  const login = await postLogin(ta, 'multi@example.com', DEMO_PASSWORD);
  const sid = decodeJwt(login.body.access_token).sid as string;
  t.equal((await api(SYSADMIN, 'PUT', `/api/v1/users/${MULTI}/status`, { status: 'disabled' })).json().status, 'disabled');
  t.ok((await su.query(`select revoked_at from user_sessions where id = $1`, [sid])).rows[0].revoked_at, 'their sessions ended');
  t.same((await su.query(`select operation from authz_outbox where object = 'system:platform' and relation = 'disabled' and subject = $1 order by id desc limit 1`, [`user:${MULTI}`])).rows, [{ operation: 'write' }], 'shut out in OpenFGA');
  t.equal((await api(MULTI, 'GET', '/api/v1/works?limit=1', undefined, DMP)).statusCode, 403, 'and in the API');
  t.equal((await postLogin(ta, 'multi@example.com', DEMO_PASSWORD)).status, 401, 'no sign-in');
  const byStatus = async (status: string) => (await api(DMP_ADMIN, 'GET', `/api/v1/publishers/${DMP}/users?status=${status}&limit=100`)).json().items.map((m: { user_id: string }) => m.user_id);
  t.same(await byStatus('disabled'), [MULTI], 'the members list filters by user status');
  t.notOk((await byStatus('active')).includes(MULTI), 'a disabled member is not among the active ones');
  await api(SYSADMIN, 'PUT', `/api/v1/users/${MULTI}/status`, { status: 'active' });

  const added = await api(SYSADMIN, 'POST', `/api/v1/users/${fresh.id}/publishers`, { publisher_id: SONGTRUST, role: 'creator' });
  t.equal(added.statusCode, 201, added.body);
  t.equal((await api(SYSADMIN, 'PUT', `/api/v1/users/${fresh.id}/publishers/${SONGTRUST}`, { role: 'viewer' })).json().role, 'viewer');
  t.equal((await api(SYSADMIN, 'DELETE', `/api/v1/users/${fresh.id}`)).statusCode, 204);
  t.same((await su.query(`select deleted_at is not null as deleted, (select count(*)::int from user_publishers where user_id = $1) as memberships from users where id = $1`, [fresh.id])).rows, [
    { deleted: true, memberships: 0 },
  ], 'soft-deleted, memberships gone');
  t.equal((await api(SYSADMIN, 'GET', `/api/v1/users/${fresh.id}`)).statusCode, 404);
  t.equal((await api(SYSADMIN, 'DELETE', `/api/v1/users/${DMP_ADMIN}`)).statusCode, 409, "DMP's only admin cannot be deleted");
});

t.test('departments: scoped members see and change only their department; department admins manage its members', async (t) => {
  const base = `/api/v1/publishers/${DMP}/departments`;
  t.equal((await api(DMP_MANAGER, 'POST', base, { name: 'Classical' })).statusCode, 403, 'departments:manage is an admin permission');
  const dept = (await api(DMP_ADMIN, 'POST', base, { name: 'Classical' })).json();
  t.match(dept, { name: 'Classical', publisher_id: DMP });
  t.equal((await api(DMP_ADMIN, 'POST', base, { name: 'classical' })).statusCode, 409, 'names are unique (case-insensitively)');
  const other = (await api(DMP_ADMIN, 'POST', base, { name: 'Pop' })).json();
  // two works in Classical, one in Pop; a department editor and a department admin
  const inDept = [];
  for (const [title, d] of [['Requiem', dept.id], ['Nocturne', dept.id], ['Hit', other.id]]) {
    inDept.push((await api(DMP_ADMIN, 'POST', '/api/v1/works', { title, department_id: d }, DMP)).json());
  }
  await api(DMP_ADMIN, 'PUT', `/api/v1/publishers/${DMP}/users/${DMP_EDITOR}/role`, { role: 'editor', department_id: dept.id });
  await api(DMP_ADMIN, 'PUT', `/api/v1/publishers/${DMP}/users/${MULTI}/role`, { role: 'admin', department_id: dept.id });
  const list = (await api(DMP_EDITOR, 'GET', '/api/v1/works?limit=100', undefined, DMP)).json();
  t.same(list.items.map((w: { title: string }) => w.title).sort(), ['Nocturne', 'Requiem'], 'a department editor sees its department only');
  t.equal((await api(DMP_EDITOR, 'GET', `/api/v1/works/${inDept[2].id}`, undefined, DMP)).statusCode, 404, "another department's row does not exist for them");
  const created = await api(DMP_EDITOR, 'POST', '/api/v1/works', { title: 'Partita' }, DMP);
  t.equal(created.statusCode, 201);
  t.equal(created.json().department_id, dept.id, 'created in their department');
  t.equal((await api(DMP_EDITOR, 'PATCH', `/api/v1/works/${inDept[0].id}`, { department_id: other.id }, DMP)).statusCode, 403, 'cannot move a row out');
  t.equal((await api(DMP_EDITOR, 'DELETE', `/api/v1/works/${inDept[0].id}`, undefined, DMP)).statusCode, 403, 'no deletes');
  const members = (await api(MULTI, 'GET', `/api/v1/publishers/${DMP}/users`)).json().items.map((m: { user_id: string }) => m.user_id).sort();
  t.same(members, [DMP_EDITOR, MULTI].sort(), "a department admin sees its department's members only");
  t.equal((await api(MULTI, 'PUT', `/api/v1/publishers/${DMP}/users/${DMP_VIEWER}/role`, { role: 'editor' })).statusCode, 404, 'others look like nobody');
  t.equal((await api(MULTI, 'PUT', `/api/v1/publishers/${DMP}/users/${DMP_EDITOR}/role`, { role: 'viewer' })).json().department_id, dept.id, 'it changes roles within its department');
  const escalate = await api(MULTI, 'PUT', `/api/v1/publishers/${DMP}/users/${DMP_EDITOR}/role`, { role: 'admin', department_id: null });
  t.equal(escalate.statusCode, 200, 'an absent department means its own');
  t.equal(escalate.json().department_id, dept.id);
  t.equal((await api(MULTI, 'PUT', `/api/v1/publishers/${DMP}/users/${DMP_EDITOR}/role`, { role: 'editor', department_id: other.id })).statusCode, 403, 'not into another department');
  t.equal((await api(DMP_ADMIN, 'DELETE', `${base}/${dept.id}`)).statusCode, 409, 'a department with members and rows stays');
  // restore
  await su.query(`update user_publishers set role = $3, department_id = null where publisher_id = $1 and user_id = $2`, [DMP, DMP_EDITOR, 'editor']);
  await su.query(`update user_publishers set role = 'viewer', department_id = null where publisher_id = $1 and user_id = $2`, [DMP, MULTI]);
});

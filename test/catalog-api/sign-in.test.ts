/**
 * Sign-in (POST /api/v1/auth/login) against real PostgreSQL, Redis and the Samba AD domain
 * controller: the matrix internal/AD × right/wrong/empty password × account state × publisher auth
 * policy → status and problem type, with no session row on any failure; lockout and its doubling;
 * unknown emails lock too; LDAP injection in the login name; the directory's answers; and the
 * enumeration guarantees (same answer, similar time, for known and unknown accounts).
 */
import t, { type Test } from 'tap';
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { Client } from 'ldapts';
import { readFileSync } from 'node:fs';
import { DEMO_DIRECTORY, DEMO_PASSWORD, publisherId, userId } from '../../migrations/seed/demo.ts';
import { userFilter } from '../../catalog-api/src/modules/directory/gateway.ts';
import { adBindCode } from '../../catalog-api/src/modules/directory/gateway.ts';
import { buildTestApp, clearLockouts as clearSignInFailures, postLogin, useSuite, type TestApp } from './helpers.ts';
import { createTestUser, resetDirectory, setAttribute, UAC } from '../support/directory.ts';

const suite = useSuite(t, 'signin');
const DMP = publisherId('dmp');
const SHEER = publisherId('sheer');
const TYPE = (kind: string) => `https://errors.music-publishing.example/${kind}`;

const login = postLogin;

const sessionCount = async (email: string) =>
  Number((await suite.su.query(`select count(*) as n from user_sessions s join users u on u.id = s.user_id where lower(u.email) = lower($1)`, [email])).rows[0].n);
const clearLockouts = () => clearSignInFailures(suite.su);
const setPolicy = (publisher: string, policy: string) =>
  suite.su.query(`update publishers set settings = jsonb_set(settings, '{auth_policy}', to_jsonb($2::text)) where id = $1`, [publisher, policy]);

/** An internal user made for one case: member of `publisher` with `role`, the demo password. */
async function internalUser(tag: string, publisher: string | null, extra: { status?: string; locked?: boolean; expired?: boolean } = {}): Promise<string> {
  const id = randomUUID();
  const email = `${tag}-${id.slice(0, 8)}@internal.example`;
  await suite.su.query(`insert into users (id, email, display_name, status) values ($1, $2, $3, $4)`, [id, email, tag, extra.status ?? 'active']);
  await suite.su.query(
    `insert into user_credentials (user_id, password_hash, locked_until, password_expires_at)
     select $1, password_hash, $2::timestamptz, $3::timestamptz from user_credentials where user_id = $4`,
    [id, extra.locked ? new Date(Date.now() + 600_000) : null, extra.expired ? new Date(Date.now() - 60_000) : null, userId('viewer@dmp.example')],
  );
  if (publisher) await suite.su.query(`insert into user_publishers (publisher_id, user_id, role) values ($1, $2, 'viewer')`, [publisher, id]);
  return email;
}

t.before(async () => {
  await resetDirectory();
  await setPolicy(SHEER, 'ad');
  await setPolicy(DMP, 'both');
});
t.teardown(() => resetDirectory());

type Case = { name: string; email: () => Promise<string>; right: [number, string]; wrong?: [number, string]; empty?: [number, string]; before?: () => Promise<unknown>; after?: () => Promise<unknown> };
const ok: [number, string] = [200, ''];
const generic: [number, string] = [401, 'unauthenticated'];

t.test('sign-in matrix: source × password × state × publisher policy', async (t) => {
  const ta = suite.ta;
  const cases: Case[] = [
    // internal accounts
    { name: 'internal, active, policy both', email: async () => 'viewer@dmp.example', right: ok },
    { name: 'internal, active, policy internal', email: async () => 'creator2@songtrust.example', right: ok },
    { name: 'internal, active, only at a publisher with policy ad', email: () => internalUser('adonly', SHEER), right: [403, 'auth-method-not-allowed'] },
    { name: 'internal, no membership yet', email: () => internalUser('nomember', null), right: ok },
    { name: 'internal, disabled', email: () => internalUser('disabled', DMP, { status: 'disabled' }), right: generic },
    { name: 'internal, locked', email: () => internalUser('locked', DMP, { locked: true }), right: [429, 'account-locked'], wrong: [429, 'account-locked'], empty: [429, 'account-locked'] },
    { name: 'internal, password expired', email: () => internalUser('expired', DMP, { expired: true }), right: [403, 'password-expired'] },
    { name: 'unknown email', email: async () => `nobody-${randomUUID()}@internal.example`, right: generic },
    // directory accounts
    { name: 'AD, active, policy both (DMP)', email: async () => 'ad.viewer@dmp.example', right: ok },
    { name: 'AD, active, policy ad (Sheer)', email: async () => 'ad.editor@sheer.example', right: ok },
    {
      name: 'AD, the publisher now allows internal sign-in only',
      email: async () => 'ad.editor@sheer.example',
      before: () => setPolicy(SHEER, 'internal'),
      after: () => setPolicy(SHEER, 'ad'),
      right: generic,
    },
    { name: 'AD, disabled in the directory', email: async () => 'ad.disabled@dmp.example', right: [403, 'account-disabled'] },
    { name: 'AD, in no mapped group', email: async () => 'ad.nogroup@dmp.example', right: [403, 'no-directory-role'] },
    { name: 'unknown email of a directory domain', email: async () => `nobody-${randomUUID().slice(0, 8)}@dmp.example`, right: generic },
    {
      name: 'AD, disabled here (not in the directory)',
      email: async () => 'ad.viewer@dmp.example',
      before: async () => void (await suite.su.query(`update users set status = 'disabled' where lower(email) = 'ad.viewer@dmp.example'`)),
      after: async () => void (await suite.su.query(`update users set status = 'active' where lower(email) = 'ad.viewer@dmp.example'`)),
      right: generic,
    },
    {
      name: 'AD, locked here',
      email: async () => 'ad.viewer@dmp.example',
      before: async () =>
        void (await suite.su.query(
          `insert into user_credentials (user_id, locked_until) select id, now() + interval '10 minutes' from users where lower(email) = 'ad.viewer@dmp.example'
           on conflict (user_id) do update set locked_until = excluded.locked_until`,
        )),
      after: clearLockouts,
      right: [429, 'account-locked'],
      wrong: [429, 'account-locked'],
      empty: [429, 'account-locked'],
    },
  ];
  for (const c of cases) {
    await clearLockouts();
    await c.before?.();
    const email = await c.email();
    for (const [label, password, expected] of [
      ['right', DEMO_PASSWORD, c.right],
      ['wrong', 'not-the-password-123', c.wrong ?? generic],
      ['empty', '', c.empty ?? generic],
    ] as const) {
      const before = await sessionCount(email);
      const r = await login(ta, email, password);
      t.equal(r.status, expected[0], `${c.name} / ${label} password → ${expected[0]} (${JSON.stringify(r.body).slice(0, 160)})`);
      if (expected[1]) t.equal(r.body.type, TYPE(expected[1]), `${c.name} / ${label}: ${expected[1]}`);
      const after = await sessionCount(email);
      t.equal(after - before, r.status === 200 ? 1 : 0, `${c.name} / ${label}: ${r.status === 200 ? 'one session' : 'no session row'}`);
      if (r.status === 200) {
        t.ok(r.body.access_token && r.body.refresh_token, 'tokens');
        t.equal(r.body.token_type, 'Bearer');
        t.equal(r.headers['cache-control'], 'no-store');
      }
    }
    await c.after?.();
  }
});

t.test("AD account states from the directory's bind codes", async (t) => {
  const user = await createTestUser('t.states', 't.states@dmp.example', ['DMP-Viewers']);
  t.teardown(user.remove);
  const expect = async (label: string, status: number, kind: string) => {
    await clearLockouts();
    const before = await sessionCount('t.states@dmp.example');
    const r = await login(suite.ta, 't.states@dmp.example', DEMO_PASSWORD);
    t.equal(r.status, status, `${label} → ${status}`);
    t.equal(r.body.type, TYPE(kind), `${label}: ${kind}`);
    t.equal(await sessionCount('t.states@dmp.example'), before, `${label}: no session`);
  };
  await setAttribute(user.dn, 'accountExpires', ['1']);
  await expect('account expired (701)', 403, 'account-expired');
  await setAttribute(user.dn, 'accountExpires', ['0']);
  await setAttribute(user.dn, 'userAccountControl', ['512']);
  await setAttribute(user.dn, 'pwdLastSet', ['0']);
  await expect('must change password (773)', 403, 'password-must-change');
  await setAttribute(user.dn, 'pwdLastSet', ['-1']);
  await setAttribute(user.dn, 'userAccountControl', [UAC.enabled]);
  // Lock the account in the directory itself: its threshold (20) is above ours, so bind directly.
  const ca = readFileSync(process.env.DIRECTORY_CA_FILE!);
  for (let i = 0; i < 21; i++) {
    const c = new Client({ url: process.env.DIRECTORY_URL!, timeout: 3000, connectTimeout: 3000, tlsOptions: { ca } });
    await c.bind(user.dn, 'wrong-password').catch(() => undefined);
    await c.unbind().catch(() => undefined);
  }
  await expect('locked by the directory (775)', 403, 'directory-account-locked');
  await setAttribute(user.dn, 'lockoutTime', ['0']);
  await clearLockouts();
  t.equal((await login(suite.ta, 't.states@dmp.example', DEMO_PASSWORD)).status, 200, 'unlocked → signs in');
  // 532 (password expired) needs a domain maximum password age; the code is mapped all the same.
  t.equal(adBindCode('80090308: LdapErr: DSID-0C09044E, comment: AcceptSecurityContext error, data 532, v4563'), '532');
});

t.test('nested groups: the highest mapped role wins; a DMP group never grants a role at Sheer', async (t) => {
  await clearLockouts();
  const r = await login(suite.ta, 'ad.editor@dmp.example', DEMO_PASSWORD);
  t.equal(r.status, 200);
  const rows = (
    await suite.su.query(`select m.publisher_id, m.role from user_publishers m join users u on u.id = m.user_id where u.email = 'ad.editor@dmp.example'`)
  ).rows;
  t.same(rows, [{ publisher_id: DMP, role: 'editor' }], 'DMP-Catalog-Team ⊂ DMP-Editors → editor at DMP only');
  const [u] = (await suite.su.query(`select auth_source, external_id, email_verified_at from users where email = 'ad.editor@dmp.example'`)).rows;
  t.equal(u.auth_source, 'ad');
  t.match(u.external_id, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/, 'objectGUID kept as external id');
  const pending = (await suite.su.query(`select object, relation, subject from authz_outbox where subject = 'user:' || (select id from users where email = 'ad.editor@dmp.example')::text`)).rows;
  t.same(pending.map((p) => `${p.object}#${p.relation}`), [`publisher:${DMP}#editor`], 'the membership reached the outbox (→ OpenFGA tuple)');

  const sheer = await createTestUser('t.both', 't.both@sheer.example', ['DMP-Admins', 'SHEER-Editors']);
  t.teardown(sheer.remove);
  const s = await login(suite.ta, 't.both@sheer.example', DEMO_PASSWORD);
  t.equal(s.status, 200);
  const roles = (await suite.su.query(`select m.publisher_id, m.role from user_publishers m join users u on u.id = m.user_id where u.email = 't.both@sheer.example'`)).rows;
  t.same(roles, [{ publisher_id: SHEER, role: 'editor' }], 'a Sheer login in DMP-Admins is editor at Sheer and nothing at DMP');
});

t.test('every sign-in brings memberships in line with the directory', async (t) => {
  const u = await createTestUser('t.moves', 't.moves@dmp.example', ['DMP-Viewers']);
  t.teardown(u.remove);
  const roleOf = async () =>
    (await suite.su.query(`select m.role from user_publishers m join users x on x.id = m.user_id where x.email = 't.moves@dmp.example'`)).rows.map((r) => r.role);
  t.equal((await login(suite.ta, 't.moves@dmp.example', DEMO_PASSWORD)).status, 200);
  t.same(await roleOf(), ['viewer']);
  const { addMember, removeMember, demoGroupDn, asAdmin } = await import('../support/directory.ts');
  await asAdmin(async (c) => {
    await removeMember(c, demoGroupDn('DMP-Viewers'), u.dn);
    await addMember(c, demoGroupDn('DMP-Managers'), u.dn);
  });
  t.equal((await login(suite.ta, 't.moves@dmp.example', DEMO_PASSWORD)).status, 200);
  t.same(await roleOf(), ['manager'], 'promoted in AD → manager here');
  await asAdmin((c) => removeMember(c, demoGroupDn('DMP-Managers'), u.dn));
  const r = await login(suite.ta, 't.moves@dmp.example', DEMO_PASSWORD);
  t.equal(r.status, 403);
  t.equal(r.body.type, TYPE('no-directory-role'));
});

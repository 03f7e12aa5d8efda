/**
 * Sessions and the account flows of the sign-in service, against real PostgreSQL, Redis and an
 * SMTP server process: refresh-token rotation and reuse detection, logout and the revocation
 * announced to Redis (sorted set + pub/sub), listing and ending sessions, publisher admins ending a
 * member's sessions, password reset (single-use, expiring, revokes every session), password change,
 * email verification, TOTP enrolment, MFA sign-in with replay protection and recovery codes, and a
 * publisher's MFA requirement.
 */
import t from 'tap';
import { Redis } from 'ioredis';
import { decodeJwt } from 'jose';
import { DEMO_PASSWORD, DEMO_TOTP_SECRETS, publisherId, userId } from '../../migrations/seed/demo.ts';
import { REVOKED_SESSIONS_KEY, SESSION_REVOKED_CHANNEL, decodeRevocation } from '../../policies/src/session-revocations.ts';
import { totpCode } from '../../catalog-api/src/modules/auth/totp.ts';
import { adminClient, assertion, bindingOf, buildTestApp, createTestDb, type TestApp, type TestDb } from './helpers.ts';
import { startMailCatcher, tokenInMail, type MailCatcher } from '../support/mail.ts';
import type pg from 'pg';

const DMP = publisherId('dmp');
const TYPE = (kind: string) => `https://errors.music-publishing.example/${kind}`;
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379/0';

let db: TestDb;
let ta: TestApp;
let su: pg.Client;
let mail: MailCatcher;
let redis: Redis;
t.before(async () => {
  mail = await startMailCatcher();
  db = await createTestDb('sessions');
  ta = await buildTestApp(db, {}, { SMTP_URL: mail.url, SIGN_IN_RATE_LIMIT_PER_MINUTE: '100000' });
  su = await adminClient(db);
  redis = new Redis(REDIS_URL);
});
t.teardown(async () => {
  redis?.disconnect();
  await su?.end();
  await ta?.close();
  await db?.drop();
  await mail?.stop();
});

const post = (url: string, payload: unknown, headers: Record<string, string> = {}) =>
  ta.app.inject({ method: 'POST', url, headers: { 'content-type': 'application/json', ...headers }, payload: payload as object });

async function login(email: string, password = DEMO_PASSWORD): Promise<{ access_token: string; refresh_token: string; mfa_token?: string; mfa_required?: boolean; mfa_enrollment_required?: boolean }> {
  const r = await post('/api/v1/auth/login', { email, password });
  if (r.statusCode !== 200) throw new Error(`login ${email}: ${r.statusCode} ${r.body}`);
  return r.json();
}

/** Call an authenticated route the way the sidecar would: an assertion carrying the token's sid and amr. */
async function as(accessToken: string, method: string, url: string, payload?: unknown, publisher?: string) {
  const claims = decodeJwt(accessToken);
  const token = await assertion(ta.key, {
    sub: String(claims.sub),
    publisherId: publisher ?? null,
    ...bindingOf(method, url),
    extra: { sid: claims.sid as string, amr: claims.amr as string[] },
  });
  return ta.app.inject({
    method: method as 'GET',
    url,
    headers: { 'x-identity-assertion': token, ...(payload !== undefined ? { 'content-type': 'application/json' } : {}) },
    ...(payload !== undefined ? { payload: payload as object } : {}),
  });
}

const revokedAt = async (sid: string) => (await su.query(`select revoked_at, revoked_reason, revocation_published_at from user_sessions where id = $1`, [sid])).rows[0];

t.test('refresh rotates the token; a used one revokes the whole session', async (t) => {
  const first = await login('editor@dmp.example');
  const sid = decodeJwt(first.access_token).sid as string;
  const r1 = await post('/api/v1/auth/refresh', { refresh_token: first.refresh_token });
  t.equal(r1.statusCode, 200);
  const second = r1.json();
  t.not(second.refresh_token, first.refresh_token, 'a new refresh token');
  t.equal(decodeJwt(second.access_token).sid, sid, 'same session');
  t.equal(r1.headers['cache-control'], 'no-store');

  const sub = redis.duplicate();
  const messages: string[] = [];
  await sub.subscribe(SESSION_REVOKED_CHANNEL);
  sub.on('message', (_c, m) => messages.push(m));
  t.teardown(() => sub.disconnect());

  const reuse = await post('/api/v1/auth/refresh', { refresh_token: first.refresh_token });
  t.equal(reuse.statusCode, 401, 'the used token → 401');
  t.equal(reuse.json().type, TYPE('invalid-grant'));
  const s = await revokedAt(sid);
  t.ok(s.revoked_at, 'session revoked');
  t.equal(s.revoked_reason, 'refresh_token_reuse');
  t.ok(s.revocation_published_at, 'announced');
  t.ok(Number(await redis.zscore(REVOKED_SESSIONS_KEY, sid)) > Date.now() + 14 * 60_000, 'in the revoked set until its tokens expire');
  for (let i = 0; i < 50 && !messages.length; i++) await new Promise((r) => setTimeout(r, 20));
  t.same(messages.map((m) => decodeRevocation(m)?.sid), [sid], 'published on the channel');
  t.equal((await post('/api/v1/auth/refresh', { refresh_token: second.refresh_token })).statusCode, 401, 'the newest token of the session is dead too');
  t.equal((await post('/api/v1/auth/refresh', { refresh_token: 'x'.repeat(43) })).statusCode, 401, 'an unknown token → 401');
});

t.test('logout ends the session; the sessions list and ending one of them', async (t) => {
  const a = await login('viewer@dmp.example');
  const b = await login('viewer@dmp.example');
  const list = await as(a.access_token, 'GET', '/api/v1/auth/sessions');
  t.equal(list.statusCode, 200);
  const items = list.json().items as { id: string; current: boolean; ip: string; user_agent: string | null }[];
  const [sa, sb] = [decodeJwt(a.access_token).sid, decodeJwt(b.access_token).sid];
  t.ok(items.find((i) => i.id === sa)?.current, 'the calling session is marked current');
  t.ok(items.find((i) => i.id === sb), 'the other session is listed');

  const other = await login('editor@dmp.example');
  const foreign = await as(a.access_token, 'DELETE', `/api/v1/auth/sessions/${decodeJwt(other.access_token).sid}`);
  t.equal(foreign.statusCode, 404, "someone else's session → 404");
  t.notOk((await revokedAt(decodeJwt(other.access_token).sid as string)).revoked_at, 'untouched');

  t.equal((await as(a.access_token, 'DELETE', `/api/v1/auth/sessions/${sb}`)).statusCode, 204, 'end one of your own');
  t.equal((await revokedAt(sb as string)).revoked_reason, 'revoked_by_user');
  t.equal((await as(a.access_token, 'POST', '/api/v1/auth/logout')).statusCode, 204, 'logout');
  t.equal((await revokedAt(sa as string)).revoked_reason, 'logout');
  t.ok(await redis.zscore(REVOKED_SESSIONS_KEY, sa as string), 'announced');
  t.equal((await post('/api/v1/auth/refresh', { refresh_token: a.refresh_token })).statusCode, 401, 'its refresh token is dead');
});

t.test("a publisher admin ends a member's sessions; nobody else can", async (t) => {
  const admin = await login('admin@dmp.example');
  const viewer = await login('viewer@dmp.example');
  const editor = await login('editor@dmp.example');
  const path = (u: string) => `/api/v1/publishers/${DMP}/users/${u}/sessions`;
  t.equal((await as(viewer.access_token, 'DELETE', path(userId('editor@dmp.example')))).statusCode, 403, 'a viewer cannot');
  t.equal((await as(admin.access_token, 'DELETE', path(userId('creator1@songtrust.example')))).statusCode, 404, 'a non-member looks like nobody');
  t.equal((await as(admin.access_token, 'DELETE', path('11111111-1111-4111-8111-111111111111'))).statusCode, 404, 'an unknown user too');
  t.equal((await as(admin.access_token, 'DELETE', path(userId('editor@dmp.example')), undefined, publisherId('spirit'))).statusCode, 400, 'X-Publisher-Id contradicting the path → 400');
  t.equal((await as(admin.access_token, 'DELETE', path(userId('editor@dmp.example')))).statusCode, 204);
  const s = await revokedAt(decodeJwt(editor.access_token).sid as string);
  t.equal(s.revoked_reason, 'revoked_by_admin');
  t.ok(s.revocation_published_at);
});

t.test('password reset: mail, single use, expiry, revokes every session', async (t) => {
  const email = 'manager@dmp.example';
  const live = await login(email);
  const before = (await mail.all()).length;
  const forgot = await post('/api/v1/auth/password/forgot', { email });
  t.equal(forgot.statusCode, 202);
  const m = await mail.waitFor(email, { subject: /reset/i, after: before });
  const token = tokenInMail(m);
  t.equal((await post('/api/v1/auth/password/reset', { token, new_password: 'short' })).statusCode, 422, 'a weak password → 422, the link still works');
  const ok = await post('/api/v1/auth/password/reset', { token, new_password: 'a-much-better-password-2026' });
  t.equal(ok.statusCode, 204);
  t.equal((await post('/api/v1/auth/password/reset', { token, new_password: 'another-good-password-2026' })).statusCode, 400, 'single use');
  t.equal((await revokedAt(decodeJwt(live.access_token).sid as string)).revoked_reason, 'password_reset', 'sessions revoked');
  t.equal((await post('/api/v1/auth/login', { email, password: DEMO_PASSWORD })).statusCode, 401, 'the old password is gone');
  t.equal((await post('/api/v1/auth/login', { email, password: 'a-much-better-password-2026' })).statusCode, 200, 'the new one works');

  // a second request voids the first link; an expired link is refused
  const n = (await mail.all()).length;
  await post('/api/v1/auth/password/forgot', { email });
  const firstLink = tokenInMail(await mail.waitFor(email, { after: n }));
  await post('/api/v1/auth/password/forgot', { email });
  const secondLink = tokenInMail(await mail.waitFor(email, { after: n + 1 }));
  t.equal((await post('/api/v1/auth/password/reset', { token: firstLink, new_password: 'yet-another-password-2026' })).statusCode, 400, 'voided by the newer link');
  await su.query(`update user_tokens set expires_at = now() - interval '1 second' where purpose = 'password_reset' and used_at is null`);
  t.equal((await post('/api/v1/auth/password/reset', { token: secondLink, new_password: 'yet-another-password-2026' })).statusCode, 400, 'expired');

  // a directory account gets a note, an unknown email nothing
  const k = (await mail.all()).length;
  await post('/api/v1/auth/password/forgot', { email: `nobody-${Date.now()}@internal.example` });
  await post('/api/v1/auth/password/forgot', { email: 'ad.viewer@dmp.example' });
  t.equal((await post('/api/v1/auth/login', { email: 'ad.viewer@dmp.example', password: DEMO_PASSWORD })).statusCode, 200, '(directory user provisioned)');
  await post('/api/v1/auth/password/forgot', { email: 'ad.viewer@dmp.example' });
  const note = await mail.waitFor('ad.viewer@dmp.example', { after: k });
  t.match(note.text, /directory/i, 'the directory user is told where the password lives');
  t.notMatch(note.text, /token=/, 'and gets no reset link');
  t.notOk((await mail.all()).slice(k).some((x) => x.to.includes('nobody-')), 'no mail to an unknown address');
});

t.test('change password: the current one is required; other sessions end, this one stays', async (t) => {
  const email = 'multi@example.com';
  const a = await login(email);
  const b = await login(email);
  const wrong = await as(a.access_token, 'PUT', '/api/v1/users/me/password', { current_password: 'nope-nope-nope', new_password: 'brand-new-password-2026' });
  t.equal(wrong.statusCode, 401);
  const ok = await as(a.access_token, 'PUT', '/api/v1/users/me/password', { current_password: DEMO_PASSWORD, new_password: 'brand-new-password-2026' });
  t.equal(ok.statusCode, 204);
  t.notOk((await revokedAt(decodeJwt(a.access_token).sid as string)).revoked_at, 'the calling session stays');
  t.equal((await revokedAt(decodeJwt(b.access_token).sid as string)).revoked_reason, 'password_changed', 'the other one ends');
  const ad = await login('ad.viewer@dmp.example');
  t.equal((await as(ad.access_token, 'PUT', '/api/v1/users/me/password', { current_password: DEMO_PASSWORD, new_password: 'brand-new-password-2026' })).statusCode, 409, 'directory accounts change it in the directory');
});

t.test('email verification: mail, single use, expiry', async (t) => {
  const email = 'owner@spirit.example';
  await su.query(`update users set email_verified_at = null where email = $1`, [email]);
  const s = await login(email);
  const n = (await mail.all()).length;
  t.equal((await as(s.access_token, 'POST', '/api/v1/auth/email/verification')).statusCode, 202);
  const token = tokenInMail(await mail.waitFor(email, { subject: /confirm/i, after: n }));
  t.equal((await post('/api/v1/auth/email/verify', { token })).statusCode, 204);
  t.ok((await su.query(`select email_verified_at from users where email = $1`, [email])).rows[0].email_verified_at, 'verified');
  t.equal((await post('/api/v1/auth/email/verify', { token })).statusCode, 400, 'single use');
  await as(s.access_token, 'POST', '/api/v1/auth/email/verification');
  const late = tokenInMail(await mail.waitFor(email, { after: n + 1 }));
  await su.query(`update user_tokens set expires_at = now() - interval '1 second' where purpose = 'email_verification' and used_at is null`);
  t.equal((await post('/api/v1/auth/email/verify', { token: late })).statusCode, 400, 'expired');
});

t.test('TOTP: enrol, confirm, sign in with a code (once), recovery codes (once), disable', async (t) => {
  const email = 'creator2@songtrust.example';
  const s = await login(email);
  const enrol = await as(s.access_token, 'POST', '/api/v1/users/me/mfa/totp');
  t.equal(enrol.statusCode, 200);
  const { secret, otpauth_uri } = enrol.json();
  t.match(otpauth_uri, /^otpauth:\/\/totp\/.*secret=/);
  const [stored] = (await su.query(`select totp_pending_secret from user_credentials where user_id = $1`, [userId(email)])).rows;
  t.notMatch(stored.totp_pending_secret, secret, 'the secret is stored sealed, never in plaintext');
  t.equal((await as(s.access_token, 'POST', '/api/v1/users/me/mfa/totp/confirm', { code: '000000' })).statusCode, 422, 'a wrong code does not enable it');
  const confirm = await as(s.access_token, 'POST', '/api/v1/users/me/mfa/totp/confirm', { code: totpCode(secret) });
  t.equal(confirm.statusCode, 200);
  const codes = confirm.json().recovery_codes as string[];
  t.equal(codes.length, 10);
  t.equal(new Set(codes).size, 10);

  const challenge = await login(email);
  t.equal(challenge.mfa_required, true, 'sign-in now asks for a second factor');
  t.notOk(challenge.access_token);
  // the confirm step used the current step's code: the next one (within the ±1 window) is new
  const next = totpCode(secret, Date.now() + 30_000);
  const v = await post('/api/v1/auth/mfa/verify', { mfa_token: challenge.mfa_token, code: next });
  t.equal(v.statusCode, 200);
  t.same(decodeJwt(v.json().access_token).amr, ['pwd', 'otp', 'mfa'], 'amr records both factors');
  t.equal((await post('/api/v1/auth/mfa/verify', { mfa_token: challenge.mfa_token, code: next })).statusCode, 401, 'the challenge is used up');
  const again = await login(email);
  const replay = await post('/api/v1/auth/mfa/verify', { mfa_token: again.mfa_token, code: next });
  t.equal(replay.statusCode, 401, 'an accepted code is never accepted again');
  t.equal(replay.json().type, TYPE('unauthenticated'));
  const rc = await post('/api/v1/auth/mfa/verify', { mfa_token: again.mfa_token, code: codes[0]!.toUpperCase() });
  t.equal(rc.statusCode, 200, 'a recovery code works (case-insensitive)');
  t.same(decodeJwt(rc.json().access_token).amr, ['pwd', 'mfa']);
  const third = await login(email);
  t.equal((await post('/api/v1/auth/mfa/verify', { mfa_token: third.mfa_token, code: codes[0]! })).statusCode, 401, 'a recovery code works once');

  const fourth = await login(email);
  for (let i = 0; i < 5; i++) await post('/api/v1/auth/mfa/verify', { mfa_token: fourth.mfa_token, code: '123456' });
  const after5 = await post('/api/v1/auth/mfa/verify', { mfa_token: fourth.mfa_token, code: codes[1]! });
  t.equal(after5.statusCode, 401, 'five wrong codes use the challenge up');
  t.equal(after5.json().type, TYPE('invalid-grant'));
  await su.query(`update user_credentials set failed_login_count = 0, first_failed_at = null, locked_until = null, lockout_level = 0 where user_id = $1`, [userId(email)]);

  t.equal((await as(s.access_token, 'DELETE', '/api/v1/users/me/mfa/totp', { code: '000000' })).statusCode, 422, 'disabling needs a current code');
  // (as if a time step had passed since the last accepted code)
  await su.query(`update user_credentials set totp_last_step = null where user_id = $1`, [userId(email)]);
  const disable = await as(s.access_token, 'DELETE', '/api/v1/users/me/mfa/totp', { code: totpCode(secret) });
  t.equal(disable.statusCode, 204);
  t.ok((await login(email)).access_token, 'no second factor any more');
});

t.test('the seeded creator1 signs in with password + TOTP', async (t) => {
  const c = await login('creator1@songtrust.example');
  t.equal(c.mfa_required, true);
  const v = await post('/api/v1/auth/mfa/verify', { mfa_token: c.mfa_token, code: totpCode(DEMO_TOTP_SECRETS['creator1@songtrust.example']!) });
  t.equal(v.statusCode, 200);
});

t.test("a publisher's MFA requirement: sign-in says so, its context refuses tokens without a second factor", async (t) => {
  await su.query(`update publishers set settings = settings || '{"require_mfa": true}' where id = $1`, [DMP]);
  t.teardown(() => su.query(`update publishers set settings = settings - 'require_mfa' where id = $1`, [DMP]));
  const s = await login('viewer@dmp.example');
  t.equal(s.mfa_enrollment_required, true);
  const r = await as(s.access_token, 'GET', '/api/v1/works?limit=1', undefined, DMP);
  t.equal(r.statusCode, 403);
  t.equal(r.json().type, TYPE('mfa-required'));
  t.equal((await as(s.access_token, 'GET', '/api/v1/users/me')).statusCode, 200, 'enrolment stays possible (no publisher context)');
  const withMfa = await assertion(ta.key, { sub: userId('viewer@dmp.example'), publisherId: DMP, ...bindingOf('GET', '/api/v1/works?limit=1'), extra: { amr: ['pwd', 'otp', 'mfa'] } });
  t.equal((await ta.app.inject({ method: 'GET', url: '/api/v1/works?limit=1', headers: { 'x-identity-assertion': withMfa } })).statusCode, 200, 'with a second factor: allowed');
});

t.test("a publisher's auth policy applies to every request in its context", async (t) => {
  const sheer = publisherId('sheer');
  await su.query(`insert into user_publishers (publisher_id, user_id, role) values ($1, $2, 'viewer') on conflict do nothing`, [sheer, userId('multi@example.com')]);
  const internal = await assertion(ta.key, { sub: userId('multi@example.com'), publisherId: sheer, ...bindingOf('GET', '/api/v1/works'), extra: { amr: ['pwd'] } });
  const r = await ta.app.inject({ method: 'GET', url: '/api/v1/works', headers: { 'x-identity-assertion': internal } });
  t.equal(r.statusCode, 403, 'Sheer (policy ad) refuses an internal sign-in');
  t.equal(r.json().type, TYPE('auth-method-not-allowed'));
  const viaDirectory = await assertion(ta.key, { sub: userId('multi@example.com'), publisherId: publisherId('spirit'), ...bindingOf('GET', '/api/v1/works'), extra: { amr: ['ldap'] } });
  t.equal((await ta.app.inject({ method: 'GET', url: '/api/v1/works', headers: { 'x-identity-assertion': viaDirectory } })).statusCode, 403, 'Spirit (policy internal) refuses a directory sign-in');
});

t.test('sign-in with a second app instance: the issuer key set is shared', async (t) => {
  const other = await buildTestApp(db, {}, { SMTP_URL: mail.url });
  t.teardown(() => other.close());
  const a = (await ta.app.inject({ method: 'GET', url: '/api/v1/auth/jwks.json' })).json();
  const b = (await other.app.inject({ method: 'GET', url: '/api/v1/auth/jwks.json' })).json();
  t.same(a, b, 'both processes publish the same keys');
});

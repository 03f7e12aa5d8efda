/**
 * Sign-in guards against real PostgreSQL, Redis and the Samba AD domain controller: LDAP injection
 * in the login name, lockout (5 failures in 15 min, doubling), unknown emails locking the same way,
 * the enumeration guarantees (same answer, similar time, for known and unknown accounts — login and
 * forgot-password), the per-IP limit on sign-in attempts, and malformed input.
 */
import t, { type Test } from 'tap';
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { Client } from 'ldapts';
import { readFileSync } from 'node:fs';
import { DEMO_DIRECTORY, DEMO_PASSWORD, publisherId, userId } from '../../migrations/seed/demo.ts';
import { userFilter } from '../../catalog-api/src/modules/directory/gateway.ts';
import { DirectoryConfig } from '../../catalog-api/src/modules/directory/directory-config.entity.ts';
import { buildTestApp, clearLockouts as clearSignInFailures, postLogin, useSuite, type TestApp } from './helpers.ts';
import { resetDirectory } from '../support/directory.ts';

const suite = useSuite(t, 'signinguards');
const DMP = publisherId('dmp');
const TYPE = (kind: string) => `https://errors.music-publishing.example/${kind}`;

const login = postLogin;
const clearLockouts = () => clearSignInFailures(suite.su);

/** An internal user made for one case: viewer at `publisher`, the demo password. */
async function internalUser(tag: string, publisher: string): Promise<string> {
  const id = randomUUID();
  const email = `${tag}-${id.slice(0, 8)}@internal.example`;
  await suite.su.query(`insert into users (id, email, display_name) values ($1, $2, $3)`, [id, email, tag]);
  await suite.su.query(`insert into user_credentials (user_id, password_hash) select $1, password_hash from user_credentials where user_id = $2`, [id, userId('viewer@dmp.example')]);
  await suite.su.query(`insert into user_publishers (publisher_id, user_id, role) values ($1, $2, 'viewer')`, [publisher, id]);
  return email;
}

t.before(() => resetDirectory());

t.test('LDAP injection in the login name never signs in as anyone else nor matches two entries', async (t) => {
  const specials = ['*', '(', ')', '\\', '\u0000', ',', '=', '+', '<', '>', '#', ';', ' '];
  const logins = [
    '*@dmp.example',
    'ad.*@dmp.example',
    'ad.editor*@dmp.example',
    '*)(userPrincipalName=*@dmp.example',
    'ad.editor@dmp.example)(|(objectClass=*',
    'ad.editor\\2a@dmp.example',
    ' ad.editor@dmp.example',
    'ad.editor@dmp.example ',
    ...specials.map((c) => `ad.editor${c}@dmp.example`),
    ...specials.map((c) => `${c}ad.viewer@dmp.example`),
  ];
  const config = await suite.ta.authOrm.em.fork().findOneOrFail(DirectoryConfig, { publisherId: DMP });
  const admin = new Client({ url: process.env.DIRECTORY_URL!, timeout: 5000, connectTimeout: 5000, tlsOptions: { ca: readFileSync(process.env.DIRECTORY_CA_FILE!) } });
  await admin.bind(`CN=Administrator,CN=Users,${DEMO_DIRECTORY.baseDn}`, process.env.DIRECTORY_ADMIN_PASSWORD!);
  t.teardown(() => admin.unbind());
  for (const l of logins) {
    await clearLockouts();
    const r = await login(suite.ta, l, DEMO_PASSWORD);
    t.ok(r.status === 400 || r.status === 401, `${JSON.stringify(l)} → ${r.status} (never 200)`);
    t.notOk(r.body.access_token, `${JSON.stringify(l)}: no token`);
    if (l.includes('@') && !/[\s\u0000]/.test(l)) {
      const { searchEntries } = await admin.search(config.baseDn, { scope: 'sub', filter: userFilter('userPrincipalName', l), attributes: ['userPrincipalName'], sizeLimit: 5 });
      t.ok(searchEntries.length <= 1, `${JSON.stringify(l)}: at most one entry (${searchEntries.length})`);
      for (const e of searchEntries) t.equal(String(e.userPrincipalName).toLowerCase(), l.toLowerCase(), 'only the literal login matches');
    }
  }
  t.equal(Number((await suite.su.query(`select count(*) as n from users where email like '%*%' or email like '%(%'`)).rows[0].n), 0, 'no user provisioned');
});

t.test('lockout: 5 failures in 15 min lock for 15 min, doubling on repeat; the answer hides the password', async (t) => {
  await clearLockouts();
  const email = 'editor@dmp.example';
  for (let i = 1; i <= 5; i++) t.equal((await login(suite.ta, email, 'wrong-password-xx')).status, 401, `failure ${i} → 401`);
  const right = await login(suite.ta, email, DEMO_PASSWORD);
  const wrong = await login(suite.ta, email, 'wrong-password-xx');
  t.equal(right.status, 429, 'locked: even the right password → 429');
  t.equal(right.body.type, TYPE('account-locked'));
  t.same(right.body, wrong.body, 'the same answer for the right and a wrong password');
  t.ok(Number(right.headers['retry-after']) > 14 * 60 && Number(right.headers['retry-after']) <= 15 * 60, `Retry-After ≈ 15 min (${right.headers['retry-after']})`);
  // the lock ran out; five more failures soon after → 30 min
  await suite.su.query(`update user_credentials set locked_until = now() - interval '1 second' where user_id = $1`, [userId(email)]);
  for (let i = 1; i <= 5; i++) await login(suite.ta, email, 'wrong-password-xx');
  const again = await login(suite.ta, email, DEMO_PASSWORD);
  t.equal(again.status, 429);
  t.ok(Number(again.headers['retry-after']) > 29 * 60, `doubled: Retry-After ≈ 30 min (${again.headers['retry-after']})`);
  await suite.su.query(`update user_credentials set locked_until = now() - interval '1 second' where user_id = $1`, [userId(email)]);
  t.equal((await login(suite.ta, email, DEMO_PASSWORD)).status, 200, 'after the lock: signs in');
  const [c] = (await suite.su.query(`select failed_login_count, lockout_level, locked_until from user_credentials where user_id = $1`, [userId(email)])).rows;
  t.same(c, { failed_login_count: 0, lockout_level: 0, locked_until: null }, 'success clears the count and the doubling');
});

t.test('unknown emails lock too, with the same answers (no enumeration through the lockout)', async (t) => {
  const unknown = `ghost-${randomUUID()}@internal.example`;
  const known = await internalUser('known', DMP);
  const answers: Record<string, unknown>[] = [];
  for (const email of [unknown, known]) {
    const seen: Record<string, unknown>[] = [];
    for (let i = 0; i < 6; i++) {
      const r = await login(suite.ta, email, 'wrong-password-xx');
      seen.push({ status: r.status, type: r.body.type, detail: r.body.detail });
    }
    answers.push(...seen);
  }
  t.same(answers.slice(0, 6), answers.slice(6), 'the same sequence of answers');
  t.same(answers[5], { status: 429, type: TYPE('account-locked'), detail: answers[11]!.detail }, 'the sixth attempt is locked for both');
});

t.test('enumeration: known and unknown accounts get the same answer in about the same time', async (t) => {
  await clearLockouts();
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const time = async (email: string, password: string) => {
    const started = performance.now();
    const r = await login(suite.ta, email, password);
    return { ms: performance.now() - started, status: r.status, body: r.body };
  };
  const users = await Promise.all(Array.from({ length: 4 }, (_, i) => internalUser(`timing${i}`, DMP)));
  // warm-up: the first argon2 call of a process allocates its memory
  await time(users[0]!, 'wrong-password-xx');
  await clearLockouts();
  const known: number[] = [];
  const unknown: number[] = [];
  let knownAnswer: unknown;
  let unknownAnswer: unknown;
  for (let i = 0; i < 16; i++) {
    const k = await time(users[i % users.length]!, 'wrong-password-xx');
    const u = await time(`ghost-${randomUUID()}@internal.example`, 'wrong-password-xx');
    known.push(k.ms);
    unknown.push(u.ms);
    knownAnswer = { status: k.status, body: k.body };
    unknownAnswer = { status: u.status, body: u.body };
    if (i % 3 === 2) await clearLockouts();
  }
  t.same(knownAnswer, unknownAnswer, 'same status and body');
  const [a, b] = [median(known), median(unknown)];
  t.ok(Math.abs(a - b) / Math.max(a, b) < 0.2, `median ${a.toFixed(1)} ms (known) vs ${b.toFixed(1)} ms (unknown) differ by < 20 %`);

  // forgot-password answers at once for everyone; the work happens afterwards. Each probe is
  // measured on its own, as a prober sending one at a time sees it: a pause lets the previous
  // probe's background work (a known account's token and mail) finish first, and the order of
  // known and unknown alternates.
  const f: Record<string, number[]> = { known: [], unknown: [] };
  const bodies = new Set<string>();
  for (let i = 0; i < 24; i++) {
    const pair = [['known', users[i % users.length]!], ['unknown', `ghost-${randomUUID()}@internal.example`]] as const;
    for (const [kind, email] of i % 2 ? [...pair].reverse() : pair) {
      await sleep(30);
      const started = performance.now();
      const r = await suite.ta.app.inject({ method: 'POST', url: '/api/v1/auth/password/forgot', headers: { 'content-type': 'application/json', 'x-forwarded-for': `10.9.${i}.1` }, payload: { email } });
      f[kind]!.push(performance.now() - started);
      bodies.add(`${r.statusCode} ${r.body}`);
    }
  }
  t.same([...bodies], ['202 '], 'forgot-password: 202 with no body for both');
  const [fa, fb] = [median(f.known!), median(f.unknown!)];
  t.ok(Math.abs(fa - fb) / Math.max(fa, fb) < 0.2, `forgot-password median ${fa.toFixed(1)} ms vs ${fb.toFixed(1)} ms differ by < 20 %`);
});

t.test('per-IP limit on sign-in attempts: 429 too-many-requests with Retry-After', async (t) => {
  const limited = await buildTestApp(suite.db, {}, { SIGN_IN_RATE_LIMIT_PER_MINUTE: '3' });
  t.teardown(() => limited.close());
  const from = `10.77.${Math.floor(Math.random() * 250)}.1`;
  const statuses: number[] = [];
  for (let i = 0; i < 4; i++) statuses.push((await login(limited, `ghost-${randomUUID()}@internal.example`, 'x', from)).status);
  t.same(statuses.slice(0, 3), [401, 401, 401]);
  const r = await login(limited, 'viewer@dmp.example', DEMO_PASSWORD, from);
  t.equal(r.status, 429, 'over the limit: refused before any password check');
  t.equal(r.body.type, TYPE('too-many-requests'));
  t.ok(Number(r.headers['retry-after']) > 0, 'Retry-After');
  t.ok(r.headers['ratelimit-limit'], 'RateLimit-Limit header');
  t.equal((await login(limited, 'viewer@dmp.example', DEMO_PASSWORD, '10.78.0.1')).status, 200, 'another client is not affected');
});

t.test('malformed input is a 400, not a sign-in attempt', async (t: Test) => {
  for (const payload of [{}, { email: 'viewer@dmp.example' }, { email: 'not-an-email', password: 'x' }, { email: 'a@b', password: 'x'.repeat(1025) }, { email: 'viewer@dmp.example', password: 'x', extra: 1 }]) {
    const r = await suite.ta.app.inject({ method: 'POST', url: '/api/v1/auth/login', headers: { 'x-forwarded-for': '10.200.0.1' }, payload });
    t.equal(r.statusCode, 400, `${JSON.stringify(payload).slice(0, 60)} → 400`);
  }
  await sleep(0);
});

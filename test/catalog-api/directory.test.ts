/**
 * Publishers' Active Directory against the real Samba AD DC: the configuration endpoints (system
 * admins only, validated, the bind secret never stored), the directory sync (removed from every
 * mapped group → membership deleted and sessions revoked; disabled → the same; moved group → role
 * changed), and a directory that is down or silent → 503 `directory-unavailable` within its timeout
 * + 100 ms, while internal sign-in keeps working.
 */
import t, { type Test } from 'tap';
import { createServer, type Server, type Socket } from 'node:net';
import { DEMO_PASSWORD, publisherId, userId } from '../../migrations/seed/demo.ts';
import { createDirectoryGateway } from '../../catalog-api/src/modules/directory/gateway.ts';
import { syncDirectories } from '../../catalog-api/src/modules/directory/sync.ts';
import { DirectoryConfig } from '../../catalog-api/src/modules/directory/directory-config.entity.ts';
import { RevocationPublisher } from '../../catalog-api/src/modules/auth/revocations.ts';
import { guidFromBytes, guidToBytes } from '../../catalog-api/src/modules/directory/guid.ts';
import { assertion, bindingOf, useSuite } from './helpers.ts';
import { addMember, asAdmin, createTestUser, demoGroupDn, removeMember, resetDirectory, setAttribute, UAC } from '../support/directory.ts';
import { freePort } from '../support/http.ts';
import { Redis } from 'ioredis';

const suite = useSuite(t, 'directory');
const DMP = publisherId('dmp');
const SYSADMIN = userId('sysadmin@example.com');
const TYPE = (kind: string) => `https://errors.music-publishing.example/${kind}`;

t.before(() => resetDirectory());
t.teardown(() => resetDirectory());

const login = async (email: string, password = DEMO_PASSWORD) => {
  const r = await suite.ta.app.inject({ method: 'POST', url: '/api/v1/auth/login', headers: { 'x-forwarded-for': `10.4.0.${Math.floor(Math.random() * 250)}` }, payload: { email, password } });
  return { status: r.statusCode, body: r.json() };
};
const asUser = async (sub: string, method: string, url: string, payload?: unknown) =>
  suite.ta.app.inject({
    method: method as 'GET',
    url,
    headers: { 'x-identity-assertion': await assertion(suite.ta.key, { sub, ...bindingOf(method, url) }), ...(payload ? { 'content-type': 'application/json' } : {}) },
    ...(payload ? { payload: payload as object } : {}),
  });

t.test('objectGUID conversion is the Windows GUID byte order', async (t) => {
  // [MS-DTYP] 2.3.4: {00112233-4455-6677-8899-AABBCCDDEEFF} is stored as 33 22 11 00 55 44 77 66 88 99 AA …
  const bytes = Buffer.from('33221100554477668899aabbccddeeff', 'hex');
  t.equal(guidFromBytes(bytes), '00112233-4455-6677-8899-aabbccddeeff');
  t.same(guidToBytes('00112233-4455-6677-8899-aabbccddeeff'), bytes);
  t.throws(() => guidToBytes('nope'));
});

t.test('configuration endpoints: system admins only, validated, secrets by reference', async (t) => {
  const path = `/api/v1/publishers/${DMP}/directory`;
  const got = await asUser(SYSADMIN, 'GET', path);
  t.equal(got.statusCode, 200);
  t.equal(got.json().bind_secret_ref, 'env:DIRECTORY_BIND_PASSWORD', 'a reference, never the secret');
  t.equal((await asUser(userId('admin@dmp.example'), 'GET', path)).statusCode, 404, "a publisher admin does not see it (RLS)");
  const body = { ...got.json(), publisher_id: undefined };
  delete body.publisher_id;
  const bad = await asUser(SYSADMIN, 'PUT', path, { ...body, url: 'ldap://127.0.0.1:389', start_tls: false });
  t.equal(bad.statusCode, 400, 'plain ldap:// without StartTLS is refused');
  t.equal((await asUser(SYSADMIN, 'PUT', path, { ...body, bind_secret_ref: 'hunter2' })).statusCode, 400, 'a secret instead of a reference is refused');
  t.equal((await asUser(SYSADMIN, 'PUT', path, { ...body, group_role_map: [{ group_dn: 'CN=x', role: 'creator' }] })).statusCode, 400, 'only staff roles map');
  t.equal((await asUser(userId('admin@dmp.example'), 'PUT', path, body)).statusCode, 403, 'a publisher admin cannot change it');
  const put = await asUser(SYSADMIN, 'PUT', path, { ...body, connect_timeout_ms: 2500 });
  t.equal(put.statusCode, 200);
  t.equal(put.json().connect_timeout_ms, 2500);
  const test = await asUser(SYSADMIN, 'POST', `${path}/test`);
  t.same(test.json(), { ok: true }, 'the service account binds');
  const spirit = `/api/v1/publishers/${publisherId('spirit')}/directory`;
  t.equal((await asUser(SYSADMIN, 'GET', spirit)).statusCode, 404);
  const created = await asUser(SYSADMIN, 'PUT', spirit, { ...body, email_domains: ['spirit.example'], bind_secret_ref: 'env:NO_SUCH_SECRET_VAR' });
  t.equal(created.statusCode, 201);
  const broken = await asUser(SYSADMIN, 'POST', `${spirit}/test`);
  t.same({ ok: broken.json().ok, reason: broken.json().reason }, { ok: false, reason: 'misconfigured' }, 'a missing secret is reported, not thrown');
  t.equal((await asUser(SYSADMIN, 'DELETE', spirit)).statusCode, 204);
});

t.test('directory sync: group removal, disabling and role changes reach memberships and sessions', async (t) => {
  const keep = await createTestUser('t.sync.keep', 't.sync.keep@dmp.example', ['DMP-Viewers']);
  const drop = await createTestUser('t.sync.drop', 't.sync.drop@dmp.example', ['DMP-Catalog-Team']);
  const off = await createTestUser('t.sync.off', 't.sync.off@dmp.example', ['DMP-Editors']);
  t.teardown(async () => {
    await keep.remove();
    await drop.remove();
    await off.remove();
  });
  for (const e of ['t.sync.keep@dmp.example', 't.sync.drop@dmp.example', 't.sync.off@dmp.example']) t.equal((await login(e)).status, 200, `${e} signs in`);
  await asAdmin(async (c) => {
    await removeMember(c, demoGroupDn('DMP-Catalog-Team'), drop.dn);
    await removeMember(c, demoGroupDn('DMP-Viewers'), keep.dn);
    await addMember(c, demoGroupDn('DMP-Managers'), keep.dn);
  });
  await setAttribute(off.dn, 'userAccountControl', [UAC.disabled]);

  const redis = new Redis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379/0');
  t.teardown(() => redis.disconnect());
  const log = { info: () => undefined, warn: () => undefined, error: () => undefined };
  const revocations = new RevocationPublisher({ orm: suite.ta.authOrm, redis, accessTokenTtlMs: 900_000, intervalMs: 1000, log });
  let flushed = 0;
  const [summary] = await syncDirectories({ orm: suite.ta.authOrm, directory: createDirectoryGateway(), revocations, flushOutbox: async () => void flushed++, log }, DMP);
  t.match(summary, { publisherId: DMP, removed: 2, roleChanged: 1 });
  t.ok(summary!.sessionsRevoked >= 2, 'the removed users lost their sessions');
  t.equal(flushed, 1, 'the tuple changes were handed to the outbox relay');
  const roles = (
    await suite.su.query(`select u.email, m.role from users u left join user_publishers m on m.user_id = u.id and m.publisher_id = $1 where u.email like 't.sync.%' order by u.email`, [DMP])
  ).rows;
  t.same(roles, [
    { email: 't.sync.drop@dmp.example', role: null },
    { email: 't.sync.keep@dmp.example', role: 'manager' },
    { email: 't.sync.off@dmp.example', role: null },
  ]);
  const live = (await suite.su.query(`select u.email from user_sessions s join users u on u.id = s.user_id where u.email like 't.sync.%' and s.revoked_at is null`)).rows.map((r) => r.email);
  t.same(live, ['t.sync.keep@dmp.example'], 'only the kept user still has a session');
  const outbox = (await suite.su.query(`select operation, relation from authz_outbox where subject = 'user:' || (select id from users where email = 't.sync.drop@dmp.example')::text order by id`)).rows;
  t.same(outbox.at(-1), { operation: 'delete', relation: 'editor' }, 'the membership tuple is deleted through the outbox');

  const [again] = await syncDirectories({ orm: suite.ta.authOrm, directory: createDirectoryGateway(), revocations, flushOutbox: async () => undefined, log }, DMP);
  t.match(again, { removed: 0, roleChanged: 0 }, 'idempotent');
});

/** A TCP server that accepts connections and never answers (a hung directory). */
async function silentServer(t: Test): Promise<number> {
  const sockets: Socket[] = [];
  const server: Server = createServer((s) => sockets.push(s));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(
    () =>
      new Promise<void>((r) => {
        sockets.forEach((s) => s.destroy());
        server.close(() => r());
      }),
  );
  return (server.address() as { port: number }).port;
}

t.test('directory down or silent → 503 within its timeout + 100 ms; internal sign-in unaffected', async (t) => {
  const em = suite.ta.authOrm.em.fork();
  const config = await em.findOneOrFail(DirectoryConfig, { publisherId: DMP });
  const original = { url: config.url, connectTimeoutMs: config.connectTimeoutMs, operationTimeoutMs: config.operationTimeoutMs };
  t.teardown(() => suite.su.query(`update directory_configs set url = $2, connect_timeout_ms = $3, operation_timeout_ms = $4 where publisher_id = $1`, [DMP, original.url, original.connectTimeoutMs, original.operationTimeoutMs]));
  const cases = [
    ['stopped (connection refused)', `ldaps://127.0.0.1:${await freePort()}`],
    ['silent (accepts, never answers)', `ldaps://127.0.0.1:${await silentServer(t)}`],
  ] as const;
  for (const [label, url] of cases) {
    await suite.su.query(`update directory_configs set url = $2, connect_timeout_ms = 500, operation_timeout_ms = 500 where publisher_id = $1`, [DMP, url]);
    const started = performance.now();
    const r = await login('ad.viewer@dmp.example');
    const ms = performance.now() - started;
    t.equal(r.status, 503, `${label} → 503`);
    t.equal(r.body.type, TYPE('directory-unavailable'));
    // connect (500) + one operation (500) at most, plus 100 ms
    t.ok(ms < 1100, `${label}: answered in ${ms.toFixed(0)} ms (≤ timeouts + 100 ms)`);
    const internal = await login('viewer@dmp.example');
    t.equal(internal.status, 200, `${label}: internal sign-in unaffected`);
  }
});

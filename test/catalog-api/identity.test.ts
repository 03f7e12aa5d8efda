/**
 * Identity assertion verification (docs/CONTRACTS.md "Identity assertion"): only a valid ES256
 * assertion from the sidecar's key, for our audience and issuer, unexpired, is accepted; every other
 * shape is a 401 problem. Also: plain identity headers are ignored, public routes need nothing, and
 * keys fetched from a JWKS URL (served on an ephemeral loopback port) work, with an unreachable JWKS
 * answered 503.
 */
import t, { type Test } from 'tap';
import { createServer, type Server } from 'node:http';
import { randomUUID } from 'node:crypto';
import { SignJWT, UnsecuredJWT, base64url } from 'jose';
import { PUBLISHERS, USERS } from '../../migrations/seed/demo.ts';
import { buildCatalogApi } from '../../catalog-api/src/app.ts';
import { assertion, bindingOf, buildTestApp, createTestDb, makeKey, queryHashOf, testConfig, AUDIENCE, ISSUER, type TestApp, type TestDb } from './helpers.ts';

const admin = USERS.find((u) => u.email === 'admin@dmp.example')!;
const dmp = PUBLISHERS.find((p) => p.slug === 'dmp')!.id;
/** The request binding of `get` below (GET /api/v1/works?limit=1). */
const W = { htm: 'GET', htu: '/api/v1/works', htq: queryHashOf('limit=1') };

let db: TestDb;
let ta: TestApp;
t.before(async () => {
  db = await createTestDb('identity');
  ta = await buildTestApp(db);
});
t.teardown(async () => {
  await ta?.close();
  await db?.drop();
});

const get = (token: string | undefined, extra: Record<string, string> = {}) =>
  ta.app.inject({ method: 'GET', url: '/api/v1/works?limit=1', headers: { ...(token === undefined ? {} : { 'x-identity-assertion': token }), ...extra } });

function expect401(t: Test, res: Awaited<ReturnType<typeof get>>, label: string, detail?: RegExp) {
  t.equal(res.statusCode, 401, `${label}: 401`);
  t.match(res.headers['content-type'], /^application\/problem\+json/, `${label}: problem+json`);
  t.equal(res.json().type, 'https://errors.music-publishing.example/unauthenticated', `${label}: type`);
  if (detail) t.match(res.json().detail, detail, `${label}: detail`);
}

t.test('a valid assertion is accepted', async (t) => {
  const res = await get(await assertion(ta.key, { ...W, sub: admin.id, publisherId: dmp }));
  t.equal(res.statusCode, 200);
  t.equal(res.json().items.length, 1);
});

t.test('request binding (htm/htu/htq): the assertion is valid only for the method, path and query it was issued for', async (t) => {
  const mint = (extra: { htm?: string; htu?: string; htq?: string }) => assertion(ta.key, { sub: admin.id, publisherId: dmp, ...extra });
  expect401(t, await get(await mint({ htm: 'POST', htu: '/api/v1/works' })), 'other method', /method/i);
  expect401(t, await get(await mint({ htm: 'get', htu: '/api/v1/works' })), 'method not upper case', /method/i);
  expect401(t, await get(await mint({ htm: 'GET', htu: '/api/v1/songwriters' })), 'other path', /path/i);
  expect401(t, await get(await mint({ htm: 'GET', htu: '/api/v1/works?limit=1' })), 'htu with the query string', /path/i);
  expect401(t, await get(await mint({ htm: 'GET', htu: '/api/v1/works/' })), 'htu with a trailing slash', /path/i);
  expect401(t, await get(await mint({ htm: 'GET', htu: 'http://127.0.0.1:8001/api/v1/works' })), 'htu as an absolute URI', /path/i);
  expect401(t, await get(await mint({})), 'no htm, no htu', /htm/);
  expect401(t, await get(await mint({ htu: '/api/v1/works' })), 'no htm', /htm/);
  expect401(t, await get(await mint({ htm: 'GET' })), 'no htu', /htu/);
  expect401(t, await get(await assertion(ta.key, { sub: admin.id, publisherId: dmp, extra: { htm: ['GET'], htu: '/api/v1/works' } })), 'htm not a string', /htm/);
  expect401(t, await get(await mint({ htm: 'GET', htu: '/api/v1/works' })), 'no htq', /htq/);
  expect401(t, await get(await mint({ ...W, htq: queryHashOf('limit=2') })), 'another query', /query/i);
  t.equal((await get(await mint(W))).statusCode, 200, 'matching method, path and query');

  // a write: the assertion for one work's PATCH cannot be used for another work, nor as a DELETE
  const [a, b] = await twoWorkIds();
  const patch = (id: string, token: string) =>
    ta.app.inject({ method: 'PATCH', url: `/api/v1/works/${id}`, payload: { title: 'Rebound' }, headers: { 'x-identity-assertion': token } });
  const forA = await mint(bindingOf('PATCH', `/api/v1/works/${a}`));
  expect401(t, await patch(b!, forA), 'PATCH assertion replayed on another work', /path/i);
  expect401(t, await ta.app.inject({ method: 'DELETE', url: `/api/v1/works/${a}`, headers: { 'x-identity-assertion': forA } }), 'PATCH assertion used for DELETE', /method/i);
  t.equal((await patch(a!, forA)).statusCode, 200, 'the PATCH it was issued for');
});

async function twoWorkIds(): Promise<string[]> {
  const res = await ta.app.inject({ url: '/api/v1/works?limit=2', headers: { 'x-identity-assertion': await assertion(ta.key, { ...bindingOf('GET', '/api/v1/works?limit=2'), sub: admin.id, publisherId: dmp }) } });
  return res.json().items.map((w: { id: string }) => w.id);
}

t.test('missing, empty, garbage → 401; plain identity headers are not trusted', async (t) => {
  expect401(t, await get(undefined), 'none');
  expect401(t, await get(''), 'empty');
  expect401(t, await get('not.a.jwt'), 'garbage');
  expect401(t, await get(undefined, { 'x-user-id': admin.id, 'x-publisher-id': dmp, authorization: 'Bearer x' }), 'plain headers');
});

t.test('expired, wrong audience, wrong issuer, wrong typ → 401', async (t) => {
  const now = Math.floor(Date.now() / 1000);
  expect401(t, await get(await assertion(ta.key, { ...W, sub: admin.id, publisherId: dmp, expiresIn: now - 60 })), 'expired');
  expect401(t, await get(await assertion(ta.key, { ...W, sub: admin.id, publisherId: dmp, aud: 'someone-else' })), 'wrong aud');
  expect401(t, await get(await assertion(ta.key, { ...W, sub: admin.id, publisherId: dmp, iss: 'https://evil.example' })), 'wrong iss');
  expect401(t, await get(await assertion(ta.key, { ...W, sub: admin.id, publisherId: dmp, typ: 'at+jwt' })), 'wrong typ');
});

t.test('alg none, HS256 (with the public key as secret), unknown key → 401', async (t) => {
  const none = new UnsecuredJWT({ publisher_id: dmp }).setIssuer(ISSUER).setAudience(AUDIENCE).setSubject(admin.id).setIssuedAt().setExpirationTime('60s').encode();
  expect401(t, await get(none), 'alg none');

  const secret = new TextEncoder().encode(JSON.stringify(ta.key.jwk));
  const hs = await new SignJWT({ publisher_id: dmp })
    .setProtectedHeader({ alg: 'HS256', kid: ta.key.kid, typ: 'JWT' })
    .setIssuer(ISSUER)
    .setAudience(AUDIENCE)
    .setSubject(admin.id)
    .setIssuedAt()
    .setExpirationTime('60s')
    .sign(secret);
  expect401(t, await get(hs), 'HS256');

  const stranger = await makeKey();
  expect401(t, await get(await assertion(ta.key, { ...W, sub: admin.id, publisherId: dmp, key: stranger })), 'unknown key');
  // the right kid but a different key's signature
  const forged = await assertion(ta.key, { ...W, sub: admin.id, publisherId: dmp, key: { ...stranger, kid: ta.key.kid } });
  expect401(t, await get(forged), 'signature by another key under our kid');
  // tampered payload
  const good = await assertion(ta.key, { ...W, sub: admin.id, publisherId: dmp });
  const [h, , s] = good.split('.');
  const tampered = `${h}.${base64url.encode(JSON.stringify({ sub: USERS[7]!.id, iss: ISSUER, aud: AUDIENCE, exp: 9999999999 }))}.${s}`;
  expect401(t, await get(tampered), 'tampered payload');
});

t.test('bad claims → 401: sub not a UUID, publisher_id not a UUID, no exp', async (t) => {
  expect401(t, await get(await assertion(ta.key, { ...W, sub: 'admin', publisherId: dmp })), 'sub');
  expect401(t, await get(await assertion(ta.key, { ...W, sub: admin.id, extra: { publisher_id: 'dmp' } })), 'publisher_id');
  const noExp = await new SignJWT({ publisher_id: dmp })
    .setProtectedHeader({ alg: 'ES256', kid: ta.key.kid, typ: 'JWT' })
    .setIssuer(ISSUER)
    .setAudience(AUDIENCE)
    .setSubject(admin.id)
    .setIssuedAt()
    .sign(ta.key.privateKey);
  expect401(t, await get(noExp), 'no exp');
});

t.test('valid assertion for an unknown user → 403; without publisher context → 400 publisher-context', async (t) => {
  const unknown = await get(await assertion(ta.key, { ...W, sub: randomUUID(), publisherId: dmp }));
  t.equal(unknown.statusCode, 403);
  const noPub = await get(await assertion(ta.key, { ...W, sub: admin.id }));
  t.equal(noPub.statusCode, 400);
  t.equal(noPub.json().type, 'https://errors.music-publishing.example/publisher-context');
});

t.test('public routes need no assertion', async (t) => {
  t.equal((await ta.app.inject({ url: '/healthz' })).statusCode, 200);
  t.equal((await ta.app.inject({ url: '/readyz' })).statusCode, 200);
  const spec = await ta.app.inject({ url: '/api/v1/openapi.json' });
  t.equal(spec.statusCode, 200);
  t.ok(spec.json().paths['/api/v1/works'], 'spec documents /api/v1/works');
  const docs = await ta.app.inject({ url: '/docs' });
  t.ok(docs.statusCode === 200 || docs.statusCode === 302, `docs served (${docs.statusCode})`);
  const unknown = await ta.app.inject({ url: '/nope' });
  t.equal(unknown.statusCode, 404);
  t.match(unknown.headers['content-type'], /^application\/problem\+json/);
});

t.test('keys from a remote JWKS (loopback), and 503 when the JWKS is unreachable', async (t) => {
  const key = await makeKey();
  const server: Server = createServer((req, res) => {
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ keys: [key.jwk] }));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  // a generous fetch timeout: this case is about which key verifies, not about timing
  const app = await buildCatalogApi(testConfig(db, { SIDECAR_JWKS_URL: `http://127.0.0.1:${port}/.well-known/jwks.json`, JWKS_TIMEOUT_MS: '10000' }), { logger: false, relationshipSink: null });
  t.teardown(async () => {
    await app.close();
    server.close();
  });
  const ok = await app.inject({ url: '/api/v1/works?limit=1', headers: { 'x-identity-assertion': await assertion(key, { ...W, sub: admin.id, publisherId: dmp }) } });
  t.equal(ok.statusCode, 200, 'verified with the fetched key');
  const other = await makeKey();
  const bad = await app.inject({ url: '/api/v1/works?limit=1', headers: { 'x-identity-assertion': await assertion(key, { ...W, sub: admin.id, publisherId: dmp, key: other }) } });
  t.equal(bad.statusCode, 401, 'unknown kid → 401');

  const down = await buildCatalogApi(testConfig(db, { SIDECAR_JWKS_URL: 'http://127.0.0.1:9/jwks.json', JWKS_TIMEOUT_MS: '500' }), { logger: false, relationshipSink: null });
  t.teardown(() => down.close());
  const res = await down.inject({ url: '/api/v1/works?limit=1', headers: { 'x-identity-assertion': await assertion(key, { ...W, sub: admin.id, publisherId: dmp }) } });
  t.equal(res.statusCode, 503, 'JWKS unreachable → 503, not 401 and never 200');
  t.match(res.headers['content-type'], /^application\/problem\+json/);
});

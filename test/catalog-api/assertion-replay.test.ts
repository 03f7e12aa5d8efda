/**
 * One-time, query-bound identity assertions (issue 9 §2; docs/CONTRACTS.md "Identity assertion";
 * catalog-api/src/plugins/assertion-replay.ts): the catalog API accepts each `jti` once (Redis
 * `SET NX PX`, shared by every API process), refuses an assertion whose `htq` is not the hash of the
 * request's raw query, and — when Redis cannot answer — fails closed with 503 and recovers by itself.
 * The ext_authz case runs a real sidecar (in process, real OpenFGA store) whose assertions the API
 * verifies through the sidecar's JWKS over HTTP, the way nginx `auth_request` would pass them on.
 */
import t, { type Test } from 'tap';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import type { FastifyInstance } from 'fastify';
import { createLocalJWKSet, createRemoteJWKSet, type JWTVerifyGetKey } from 'jose';
import { buildCatalogApi } from '../../catalog-api/src/app.ts';
import { DMP, DMP_EDITOR, DMP_VIEWER, TYPE } from '../support/demo-ids.ts';
import { freePort } from '../support/http.ts';
import { ROOT, createIssuer, createTestStore, startPrivateRedis, startSidecar, type Child, type Sidecar } from '../sidecar/helpers.ts';
import { adminClient, assertion, bindingOf, createTestDb, makeKey, queryHashOf, testConfig, type AssertionOptions, type SigningKey, type TestDb } from './helpers.ts';
import type pg from 'pg';

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379/0';
/** This run's key prefix, so the keys the suite inspects are its own. */
const PREFIX = `test-assertion-jti-${process.pid}-${Date.now()}:`;

let db: TestDb;
let su: pg.Client;
let redis: Redis;
t.before(async () => {
  db = await createTestDb('assertreplay');
  su = await adminClient(db);
  redis = new Redis(REDIS_URL);
});
t.teardown(async () => {
  const keys = await redis?.keys(`${PREFIX}*`);
  if (keys?.length) await redis.del(...keys);
  redis?.disconnect();
  await su?.end();
  await db?.drop();
});

/** A catalog API on the suite's database with a local key (or the given JWKS URL) and `env`. */
async function api(t: Test, env: Record<string, string> = {}, key?: SigningKey): Promise<FastifyInstance> {
  const app = await buildCatalogApi(testConfig(db, { REDIS_URL, ASSERTION_JTI_PREFIX: PREFIX, ...env }), {
    ...(key ? { getKey: createLocalJWKSet({ keys: [key.jwk] }) } : {}),
    logger: false,
    relationshipSink: null,
  });
  t.teardown(() => app.close());
  await app.ready();
  return app;
}

/** An assertion for `sub` in DMP's context, bound to `method` + `url` exactly as the sidecar binds it. */
const mint = (key: SigningKey, method: string, url: string, sub = DMP_VIEWER, extra: Partial<AssertionOptions> = {}) =>
  assertion(key, { sub, publisherId: DMP, ...bindingOf(method, url), ...extra });

const send = (app: FastifyInstance, method: 'GET' | 'POST', url: string, token: string, payload?: object) =>
  app.inject({ method, url, headers: { 'x-identity-assertion': token }, ...(payload ? { payload } : {}) });

function expect401(t: Test, res: { statusCode: number; json(): any }, label: string, detail: RegExp) {
  t.equal(res.statusCode, 401, `${label}: 401`);
  t.equal(res.json().type, TYPE('unauthenticated'), `${label}: unauthenticated`);
  t.match(res.json().detail, detail, `${label}: detail`);
}

t.test('replay → 401: one assertion is accepted once, on this process and on any other sharing Redis', async (t) => {
  const key = await makeKey();
  const [a, b] = [await api(t, {}, key), await api(t, {}, key)];
  const url = '/api/v1/works?limit=1';
  const token = await mint(key, 'GET', url);
  const first = await send(a, 'GET', url, token);
  t.equal(first.statusCode, 200, 'first use', { body: first.body });
  expect401(t, await send(a, 'GET', url, token), 'the same request again', /already used/);
  expect401(t, await send(b, 'GET', url, token), 'replayed on a second API process', /already used/);

  // the claim lives as long as the assertion can still verify (exp + the 5 s clock tolerance), no longer
  const jti = JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()).jti as string;
  const pttl = await redis.pttl(PREFIX + jti);
  t.ok(pttl > 55_000 && pttl <= 65_000, `key kept for the remaining lifetime + tolerance (PTTL ${pttl} ms)`);

  // concurrent copies: exactly one wins (SET NX is atomic)
  const raced = await mint(key, 'GET', url);
  const answers = await Promise.all(Array.from({ length: 12 }, (_, i) => send(i % 2 ? a : b, 'GET', url, raced)));
  t.same(answers.map((r) => r.statusCode).sort(), [200, ...Array(11).fill(401)], '12 concurrent copies: one 200, eleven 401');

  // a write: the replayed POST creates nothing
  const before = Number((await su.query(`select count(*) from works where publisher_id = $1`, [DMP])).rows[0].count);
  const post = await mint(key, 'POST', '/api/v1/works', DMP_EDITOR);
  t.equal((await send(a, 'POST', '/api/v1/works', post, { title: `Once ${randomUUID()}` })).statusCode, 201, 'the POST it was issued for');
  expect401(t, await send(b, 'POST', '/api/v1/works', post, { title: `Twice ${randomUUID()}` }), 'the POST replayed', /already used/);
  const after = Number((await su.query(`select count(*) from works where publisher_id = $1`, [DMP])).rows[0].count);
  t.equal(after, before + 1, 'one work, not two');

  expect401(t, await send(a, 'GET', url, await mint(key, 'GET', url, DMP_VIEWER, { jti: null })), 'no jti', /jti/);
  expect401(t, await send(a, 'GET', url, await mint(key, 'GET', url, DMP_VIEWER, { jti: 'a b' })), 'a jti that is no token', /jti/);
});

t.test('changed query → 401: htq binds the raw query string, byte for byte', async (t) => {
  const key = await makeKey();
  const app = await api(t, {}, key);
  const token = await mint(key, 'GET', '/api/v1/works?limit=1&probe=a');
  for (const other of [
    '/api/v1/works',
    '/api/v1/works?',
    '/api/v1/works?limit=2&probe=a',
    '/api/v1/works?probe=a&limit=1',
    '/api/v1/works?limit=%31&probe=a',
    '/api/v1/works?limit=1&probe=a&limit=1',
  ]) {
    expect401(t, await send(app, 'GET', other, token), `issued for ?limit=1&probe=a, sent to ${other}`, /query string \(htq\)/);
  }
  expect401(t, await send(app, 'GET', '/api/v1/works', await mint(key, 'GET', '/api/v1/works', DMP_VIEWER, { htq: undefined })), 'an assertion without htq', /htq claim required/);
  const right = await send(app, 'GET', '/api/v1/works?limit=1&probe=a', token);
  t.equal(right.statusCode, 200, 'the refused attempts did not use up the jti: only a fully verified assertion claims it');

  // no query: the hash of '' — and `?` with nothing after it is the same empty query
  const bare = await mint(key, 'GET', '/api/v1/works');
  t.equal(JSON.parse(Buffer.from(bare.split('.')[1]!, 'base64url').toString()).htq, queryHashOf(''), 'htq of no query');
  t.equal((await send(app, 'GET', '/api/v1/works?', bare)).statusCode, 200, "an empty query ('?') is no query");
});

t.test('ext_authz: an assertion the sidecar issued for a request with a query is accepted once at the API', async (t) => {
  const store = await createTestStore();
  t.teardown(() => store.remove());
  await store.fga.write({ writes: [{ user: `user:${DMP_VIEWER}`, relation: 'viewer', object: `publisher:${DMP}` }] });
  const issuer = await createIssuer();
  t.teardown(() => issuer.close());
  // The sidecar signs with a key of its own; the API fetches it from the sidecar's JWKS over HTTP.
  // Both listen on port 0: the API first (the sidecar's upstream), its key set bound to the
  // sidecar's JWKS URL once the sidecar is up.
  let sidecarKeys: JWTVerifyGetKey | undefined;
  const app = await buildCatalogApi(testConfig(db, { REDIS_URL, ASSERTION_JTI_PREFIX: PREFIX }), {
    getKey: (header, token) => sidecarKeys!(header, token),
    logger: false,
    relationshipSink: null,
  });
  t.teardown(() => app.close());
  const apiUrl = await app.listen({ host: '127.0.0.1', port: 0 });
  const sidecar: Sidecar = await startSidecar({
    OPENFGA_STORE_NAME: store.storeName,
    ROUTES_FILE: join(ROOT, 'policies/routes.yaml'),
    JWT_JWKS_URL: issuer.jwksUrl,
    UPSTREAM_URL: apiUrl,
  });
  t.teardown(() => sidecar.close());
  sidecarKeys = createRemoteJWKSet(new URL(`${sidecar.url}/.well-known/jwks.json`));
  const auth = { authorization: `Bearer ${await issuer.token(DMP_VIEWER)}`, 'x-publisher-id': DMP };

  /** nginx: auth_request → /ext-authz with the original method and URI; then the original request with the assertion. */
  const authorize = async (headers: Record<string, string>, path = '/ext-authz') => {
    const res = await fetch(`${sidecar.url}${path}`, { headers: { ...auth, ...headers } });
    t.equal(res.status, 200, `ext_authz ${path} allows`);
    return res.headers.get('x-identity-assertion')!;
  };
  const original = (pathAndQuery: string, token: string) => fetch(`${apiUrl}${pathAndQuery}`, { headers: { 'x-identity-assertion': token, 'x-publisher-id': DMP } });

  const nginx = await authorize({ 'x-original-method': 'GET', 'x-original-uri': '/api/v1/works?limit=2' });
  const first = await original('/api/v1/works?limit=2', nginx);
  t.equal(first.status, 200, 'nginx: the original request is accepted');
  t.equal(((await first.json()) as { items: unknown[] }).items.length, 2, 'with its query applied');
  const again = await original('/api/v1/works?limit=2', nginx);
  t.equal(again.status, 401, 'nginx: the same assertion a second time → 401');
  t.match(((await again.json()) as { detail: string }).detail, /already used/);

  const otherQuery = await authorize({ 'x-original-method': 'GET', 'x-original-uri': '/api/v1/works?limit=2' });
  const moved = await original('/api/v1/works?limit=50', otherQuery);
  t.equal(moved.status, 401, 'an assertion issued for ?limit=2 does not serve ?limit=50');
  t.match(((await moved.json()) as { detail: string }).detail, /htq/);

  const envoy = await authorize({}, '/ext-authz/api/v1/works?limit=1');
  t.equal((await original('/api/v1/works?limit=1', envoy)).status, 200, 'Envoy (path_prefix): accepted');
  t.equal((await original('/api/v1/works?limit=1', envoy)).status, 401, 'Envoy: once');

  // and through the sidecar as a proxy: a fresh assertion per request, so repeating the call is fine
  for (const n of [1, 2]) {
    const proxied = await fetch(`${sidecar.url}/api/v1/works?limit=1`, { headers: auth });
    t.equal(proxied.status, 200, `proxied call ${n}: 200 (the sidecar signs one assertion per request)`);
  }
});

t.test('Redis down → 503 (fail closed) at once; slow → 503 within its timeout; back → accepted again without a restart', async (t) => {
  const port = await freePort();
  let child: Child = await startPrivateRedis(port);
  t.teardown(() => child.stop());
  const key = await makeKey();
  const timeoutMs = 300;
  const app = await api(t, { REDIS_URL: `redis://127.0.0.1:${port}/0`, REDIS_COMMAND_TIMEOUT_MS: String(timeoutMs) }, key);
  const url = '/api/v1/works?limit=1';
  t.equal((await send(app, 'GET', url, await mint(key, 'GET', url))).statusCode, 200, 'accepted while Redis is up');

  const expect503 = (res: { statusCode: number; headers: Record<string, unknown>; json(): any }, label: string) => {
    t.equal(res.statusCode, 503, `${label}: 503`);
    t.equal(res.json().type, TYPE('upstream-unavailable'), `${label}: upstream-unavailable`);
    t.match(res.json().detail, /replay check \(Redis\) is unavailable/, `${label}: says why`);
    t.equal(res.headers['retry-after'], '1', `${label}: Retry-After`);
  };

  // slow: every write command waits (CLIENT PAUSE), so SET NX runs into the command timeout
  const pauser = new Redis({ port, host: '127.0.0.1' });
  t.teardown(() => pauser.disconnect());
  await pauser.call('CLIENT', 'PAUSE', '3000', 'WRITE');
  let started = Date.now();
  expect503(await send(app, 'GET', url, await mint(key, 'GET', url)), 'Redis slower than its timeout');
  const slowMs = Date.now() - started;
  t.ok(slowMs >= timeoutMs - 20 && slowMs < timeoutMs + 400, `answered after the command timeout (${slowMs} ms, timeout ${timeoutMs} ms)`);
  await pauser.call('CLIENT', 'UNPAUSE');
  pauser.disconnect();

  // down: a refused connection fails the check at once
  await child.stop();
  const before = Number((await su.query(`select count(*) from works where publisher_id = $1`, [DMP])).rows[0].count);
  const kept = await mint(key, 'GET', url);
  started = Date.now();
  expect503(await send(app, 'GET', url, kept), 'Redis down');
  t.ok(Date.now() - started < timeoutMs + 100, `at once (${Date.now() - started} ms)`);
  expect503(await send(app, 'POST', '/api/v1/works', await mint(key, 'POST', '/api/v1/works', DMP_EDITOR), { title: 'Never written' }), 'a write while Redis is down');
  t.equal(Number((await su.query(`select count(*) from works where publisher_id = $1`, [DMP])).rows[0].count), before, 'nothing was written');
  t.equal((await app.inject({ url: '/api/v1/openapi.json' })).statusCode, 200, 'public routes need no replay check');
  t.equal((await app.inject({ url: '/healthz' })).statusCode, 200, 'nor does /healthz');
  const notReady = await app.inject({ url: '/readyz' });
  t.equal(notReady.statusCode, 503, '/readyz: not ready without Redis');
  t.match(notReady.json().detail, /Redis not reachable/, '/readyz says why');

  // back: the client reconnects on its own (ioredis retries every ≤ 2 s)
  child = await startPrivateRedis(port);
  const deadline = Date.now() + 10_000;
  let status = 0;
  while (Date.now() < deadline) {
    status = (await send(app, 'GET', url, await mint(key, 'GET', url))).statusCode;
    if (status === 200) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  t.equal(status, 200, 'accepted again once Redis is back');
  t.equal((await app.inject({ url: '/readyz' })).statusCode, 200, '/readyz: ready again');
  t.equal((await send(app, 'GET', url, kept)).statusCode, 200, 'an assertion refused with 503 was never claimed: still usable within its lifetime');
  t.equal((await send(app, 'GET', url, kept)).statusCode, 401, '…once');
});

/**
 * Authorization through the sidecar against real OpenFGA + Redis: allow forwards a verifiable
 * identity assertion and no spoofed identity headers; deny never reaches the upstream; the second
 * identical request is decided from the in-process cache; revoking a tuple (RelationshipWriter
 * bumps the epoch) denies the next request at once on two sidecar instances sharing Redis;
 * /ext-authz gives the same decisions (Envoy path_prefix, nginx, Traefik).
 */
import t from 'tap';
import { createHash, randomUUID } from 'node:crypto';
import { createRemoteJWKSet, jwtVerify } from 'jose';
import { decisions, raw, startSidecar, useSidecarFixture, type Sidecar } from './helpers.ts';
import { bumpEpochs } from '../../policies/src/epoch-push.ts';
import { userEpochKey } from '../../policies/src/epochs.ts';

const viewer = randomUUID();
const stranger = randomUUID();
const publisher = randomUUID();
const work = randomUUID();

const fx = useSidecarFixture(t, {
  sidecars: 2,
  tuples: [
    { user: `user:${viewer}`, relation: 'viewer', object: `publisher:${publisher}` },
    { user: `publisher:${publisher}`, relation: 'publisher', object: `work:${work}` },
  ],
});

/** The `htq` claim expected for a raw query string (base64url SHA-256), computed independently of the sidecar. */
const htq = (query: string) => createHash('sha256').update(query).digest('base64url');

const call = async (s: Sidecar, userId: string, path = '/api/v1/works', extra: Record<string, string> = {}) =>
  raw(s.port, 'GET', path, { authorization: `Bearer ${await fx.issuer.token(userId)}`, 'x-publisher-id': publisher, ...extra });

t.test('allow: upstream gets a verifiable assertion and no spoofed identity headers', async (t) => {
  const res = await call(fx.sidecar, viewer, '/api/v1/works?limit=1', {
    'x-identity-assertion': 'forged',
    'x-user-id': randomUUID(),
    'x-user-email': 'x@evil',
    'x-auth-request-user': 'x',
    'x-remote-user': 'x',
    'x-forwarded-user': 'x',
    'x-request-id': 'req-123',
    connection: 'x-user-id, x-custom-hop',
    'x-custom-hop': 'should-not-pass',
    'proxy-authorization': 'Basic eDp4',
  });
  t.equal(res.status, 200);
  t.equal(res.headers['x-request-id'], 'req-123', 'valid inbound request id kept');
  const got = fx.upstream.received.at(-1)!;
  for (const h of ['authorization', 'x-user-id', 'x-user-email', 'x-auth-request-user', 'x-remote-user', 'x-forwarded-user', 'x-custom-hop', 'proxy-authorization']) {
    t.notOk(got.headers[h], `${h} not forwarded`);
  }
  t.equal(got.headers['x-request-id'], 'req-123');
  t.equal(got.headers['x-publisher-id'], publisher);
  t.equal(got.headers['x-forwarded-for'], '127.0.0.1');
  t.equal(got.headers['x-forwarded-proto'], 'http');
  t.match(String(got.headers['x-forwarded-host']), /^127\.0\.0\.1:/);
  const assertion = String(got.headers['x-identity-assertion']);
  t.not(assertion, 'forged');
  const jwks = createRemoteJWKSet(new URL(`${fx.sidecar.url}/.well-known/jwks.json`));
  const { payload, protectedHeader } = await jwtVerify(assertion, jwks, {
    algorithms: ['EdDSA', 'ES256'],
    issuer: 'urn:music-publishing:sidecar',
    audience: 'catalog-api',
    requiredClaims: ['exp', 'sub'],
    clockTolerance: 5,
  });
  t.equal(protectedHeader.typ, 'JWT');
  t.ok(protectedHeader.kid);
  t.equal(payload.sub, viewer);
  t.equal(payload.publisher_id, publisher);
  t.equal(payload.scope, 'catalog');
  t.equal(payload.request_id, 'req-123');
  t.equal(payload.exp! - payload.iat!, 60);
  t.ok(payload.jti);
  t.equal(payload.htm, 'GET', 'htm = the method');
  t.equal(payload.htu, '/api/v1/works', 'htu = the path as forwarded, without the query');

  const bad = await call(fx.sidecar, viewer, '/api/v1/works', { 'x-request-id': 'bad id with spaces' });
  t.match(String(bad.headers['x-request-id']), /^[0-9a-f-]{36}$/, 'unsafe request id replaced');
});

t.test('hop-by-hop response headers of the upstream are stripped', async (t) => {
  const res = await raw(fx.sidecar.port, 'GET', '/hop/x');
  t.equal(res.status, 200);
  t.notOk(res.headers['x-secret-hop'], 'header named in upstream Connection removed');
  t.equal(res.headers['x-upstream'], 'yes');
});

t.test('authenticated-only route: identity, no check, no publisher context', async (t) => {
  const pdpBefore = await decisions(fx.sidecar.adminUrl, 'pdp');
  const res = await call(fx.sidecar, stranger, '/api/v1/users/me');
  t.equal(res.status, 200);
  const got = fx.upstream.received.at(-1)!;
  t.notOk(got.headers['x-publisher-id']);
  t.ok(got.headers['x-identity-assertion']);
  t.equal(await decisions(fx.sidecar.adminUrl, 'pdp'), pdpBefore, 'no Check');
});

t.test('deny → 403 problem+json, upstream saw nothing', async (t) => {
  const before = fx.upstream.received.length;
  const res = await call(fx.sidecar, stranger);
  t.equal(res.status, 403);
  t.match(String(res.headers['content-type']), /problem\+json/);
  t.equal(res.json().type, 'https://errors.music-publishing.example/forbidden');
  const obj = await call(fx.sidecar, stranger, `/api/v1/works/${work}`);
  t.equal(obj.status, 403);
  t.equal(fx.upstream.received.length, before);
  t.equal((await call(fx.sidecar, viewer, `/api/v1/works/${work.toUpperCase()}`)).status, 200, 'object check via publisher (UUID case-insensitive)');
});

t.test('the second identical request is decided from the in-process cache', async (t) => {
  const path = `/api/v1/works?probe=${randomUUID()}`;
  const u = randomUUID();
  await fx.writer.write({ writes: [{ user: `user:${u}`, relation: 'editor', object: `publisher:${publisher}` }] });
  t.equal((await call(fx.sidecar, u, path)).status, 200);
  const pdp = await decisions(fx.sidecar.adminUrl, 'pdp');
  const lru = await decisions(fx.sidecar.adminUrl, 'lru', true);
  t.equal((await call(fx.sidecar, u, path)).status, 200);
  t.equal(await decisions(fx.sidecar.adminUrl, 'pdp'), pdp, 'no OpenFGA Check');
  t.equal(await decisions(fx.sidecar.adminUrl, 'lru', true), lru + 1, 'served from the LRU');
  // The other instance has an empty LRU but shares Redis.
  const b = fx.sidecars[1]!;
  const redisBefore = await decisions(b.adminUrl, 'redis', true);
  t.equal((await call(b, u, path)).status, 200);
  t.equal(await decisions(b.adminUrl, 'redis', true), redisBefore + 1, 'second instance served from Redis');
});

t.test('revocation + epoch bump denies the next request on both instances', async (t) => {
  const u = randomUUID();
  const tuple = { user: `user:${u}`, relation: 'viewer', object: `publisher:${publisher}` };
  const b = fx.sidecars[1]!;
  await fx.writer.write({ writes: [tuple] });
  for (const s of fx.sidecars) {
    t.equal((await call(s, u)).status, 200, `allowed on ${s.url}`);
    t.equal((await call(s, u)).status, 200, `cached on ${s.url}`);
  }
  await fx.writer.write({ deletes: [tuple] });
  t.equal((await call(b, u)).status, 403, 'denied on b');
  t.equal((await call(fx.sidecar, u)).status, 403, 'denied on a');
  await fx.writer.write({ writes: [tuple] });
  t.equal((await call(fx.sidecar, u)).status, 200, 'allowed again after re-grant');
});

t.test('a bare bump of the user epoch (INCR + push: bumpEpochs) also invalidates (writer-independent contract)', async (t) => {
  const u = randomUUID();
  const tuple = { user: `user:${u}`, relation: 'viewer', object: `publisher:${publisher}` };
  await fx.store.fga.write({ writes: [tuple] });
  t.equal((await call(fx.sidecar, u)).status, 200);
  await fx.store.fga.write({ deletes: [tuple] });
  t.equal((await call(fx.sidecar, u)).status, 200, 'stale until the epoch moves (by design: the writer bumps)');
  await bumpEpochs(fx.redis, fx.store.storeId, [userEpochKey(fx.store.storeId, u)]);
  t.equal((await call(fx.sidecar, u)).status, 403, 'denied after the bump');
});

t.test('/ext-authz: Envoy path_prefix, nginx auth_request, Traefik forwardAuth', async (t) => {
  const token = await fx.issuer.token(viewer);
  const before = fx.upstream.received.length;
  const envoy = await raw(fx.sidecar.port, 'GET', '/ext-authz/api/v1/works', { authorization: `Bearer ${token}`, 'x-publisher-id': publisher });
  t.equal(envoy.status, 200);
  t.ok(envoy.headers['x-identity-assertion']);
  t.equal(envoy.headers['x-publisher-id'], publisher);
  t.ok(envoy.headers['x-request-id']);
  const envoyDeny = await raw(fx.sidecar.port, 'GET', '/ext-authz/api/v1/works', { authorization: `Bearer ${await fx.issuer.token(stranger)}`, 'x-publisher-id': publisher });
  t.equal(envoyDeny.status, 403);
  t.match(String(envoyDeny.headers['content-type']), /problem\+json/);

  const nginx = await raw(fx.sidecar.port, 'GET', '/ext-authz', { 'x-original-uri': `/api/v1/works/${work}`, 'x-original-method': 'GET', authorization: `Bearer ${token}`, 'x-publisher-id': publisher });
  t.equal(nginx.status, 200);
  const nginxPost = await raw(fx.sidecar.port, 'GET', '/ext-authz', { 'x-original-uri': '/api/v1/works', 'x-original-method': 'POST', authorization: `Bearer ${token}`, 'x-publisher-id': publisher });
  t.equal(nginxPost.status, 403, 'viewer may not create (method from X-Original-Method)');
  const traefik = await raw(fx.sidecar.port, 'GET', '/ext-authz', { 'x-forwarded-uri': '/api/v1/works?limit=1', 'x-forwarded-method': 'GET', authorization: `Bearer ${token}`, 'x-publisher-id': publisher });
  t.equal(traefik.status, 200);
  const noAuth = await raw(fx.sidecar.port, 'GET', '/ext-authz', { 'x-forwarded-uri': '/api/v1/works', 'x-forwarded-method': 'GET', 'x-publisher-id': publisher });
  t.equal(noAuth.status, 401);
  t.ok(noAuth.headers['www-authenticate']);
  const conflict = await raw(fx.sidecar.port, 'GET', '/ext-authz', { 'x-original-uri': '/docs/x', 'x-forwarded-uri': '/api/v1/works', authorization: `Bearer ${token}` });
  t.equal(conflict.status, 400, 'a client-injected second URI header is rejected, not trusted');
  const nonCanon = await raw(fx.sidecar.port, 'GET', '/ext-authz', { 'x-original-uri': '/docs/%2e%2e/api/v1/works', 'x-original-method': 'GET' });
  t.equal(nonCanon.status, 400);
  t.equal(nonCanon.json().type, 'https://errors.music-publishing.example/non-canonical-path');
  const missing = await raw(fx.sidecar.port, 'GET', '/ext-authz', {});
  t.equal(missing.status, 400);
  t.equal(fx.upstream.received.length, before, 'ext-authz never forwards');
});

const verifyAssertion = async (s: Sidecar, jwt: string) =>
  (await jwtVerify(jwt, createRemoteJWKSet(new URL(`${s.url}/.well-known/jwks.json`)), { algorithms: ['EdDSA', 'ES256'], issuer: 'urn:music-publishing:sidecar', audience: 'catalog-api' })).payload;

t.test('/ext-authz header mode requires the original method header; never the auth request own method', async (t) => {
  const token = await fx.issuer.token(viewer);
  const auth = { authorization: `Bearer ${token}`, 'x-publisher-id': publisher };
  const before = fx.upstream.received.length;
  for (const [name, headers] of [
    ['X-Original-URI without a method header', { 'x-original-uri': '/api/v1/works' }],
    ['X-Forwarded-Uri without a method header', { 'x-forwarded-uri': '/api/v1/works' }],
    ['method header without a URI header', { 'x-original-method': 'GET' }],
    ['conflicting method families', { 'x-original-uri': '/api/v1/works', 'x-original-method': 'GET', 'x-forwarded-method': 'POST' }],
    ['lower-case method', { 'x-original-uri': '/api/v1/works', 'x-original-method': 'get' }],
  ] as const) {
    for (const authMethod of ['GET', 'POST']) {
      const res = await raw(fx.sidecar.port, authMethod, '/ext-authz', { ...auth, ...headers });
      t.equal(res.status, 400, `${name} (auth request ${authMethod}) → 400`);
      t.equal(res.json().type, 'https://errors.music-publishing.example/bad-request', `${name}: bad-request`);
    }
  }
  const same = await raw(fx.sidecar.port, 'GET', '/ext-authz', { ...auth, 'x-original-uri': '/api/v1/works', 'x-forwarded-uri': '/api/v1/works', 'x-original-method': 'GET', 'x-forwarded-method': 'GET' });
  t.equal(same.status, 200, 'both families present and equal → fine');
  t.equal(fx.upstream.received.length, before, 'ext-authz never forwards');
});

t.test('/ext-authz Envoy path_prefix mode: the auth request method decides, headers are ignored', async (t) => {
  const token = await fx.issuer.token(viewer);
  const auth = { authorization: `Bearer ${token}`, 'x-publisher-id': publisher };
  t.equal((await raw(fx.sidecar.port, 'GET', '/ext-authz/api/v1/works', auth)).status, 200, 'GET allowed');
  const post = await raw(fx.sidecar.port, 'POST', '/ext-authz/api/v1/works', { ...auth, 'x-original-method': 'GET', 'x-forwarded-method': 'GET' });
  t.equal(post.status, 403, 'POST denied to a viewer even with a spoofed X-Original-Method: GET');
  const noHeaders = await raw(fx.sidecar.port, 'GET', `/ext-authz/api/v1/works/${work}`, auth);
  t.equal(noHeaders.status, 200, 'no original-method header needed in Envoy mode');
});

t.test('assertion htm/htu/htq: proxy (with an upstream base path) and ext_authz (original path and query)', async (t) => {
  const c = await startSidecar({ ...fx.env, UPSTREAM_URL: `${fx.upstream.url}/base/` });
  t.teardown(() => c.close());
  const res = await call(c, viewer, `/api/v1/works/${work}?fields=title`);
  t.equal(res.status, 200);
  const got = fx.upstream.received.at(-1)!;
  t.equal(got.url, `/base/api/v1/works/${work}?fields=title`, 'forwarded under the base path');
  const proxied = await verifyAssertion(c, String(got.headers['x-identity-assertion']));
  t.equal(proxied.htm, 'GET');
  t.equal(proxied.htu, `/base/api/v1/works/${work}`, 'htu = exactly the path the upstream received, no query');
  t.equal(proxied.htq, htq('fields=title'), 'htq = the hash of the query the upstream received');

  const token = await fx.issuer.token(viewer);
  const nginx = await raw(fx.sidecar.port, 'GET', '/ext-authz', { authorization: `Bearer ${token}`, 'x-publisher-id': publisher, 'x-original-uri': `/api/v1/works/${work}?a=1`, 'x-original-method': 'GET' });
  t.equal(nginx.status, 200);
  const fromNginx = await verifyAssertion(fx.sidecar, String(nginx.headers['x-identity-assertion']));
  t.equal(fromNginx.htm, 'GET');
  t.equal(fromNginx.htu, `/api/v1/works/${work}`, 'ext_authz: the original request path');
  t.equal(fromNginx.htq, htq('a=1'), 'ext_authz: the original query');
  const envoy = await raw(fx.sidecar.port, 'GET', '/ext-authz/api/v1/works?limit=5', { authorization: `Bearer ${token}`, 'x-publisher-id': publisher });
  t.equal(envoy.status, 200);
  const fromEnvoy = await verifyAssertion(fx.sidecar, String(envoy.headers['x-identity-assertion']));
  t.equal(fromEnvoy.htm, 'GET');
  t.equal(fromEnvoy.htu, '/api/v1/works', 'Envoy: the path after /ext-authz');
  t.equal(fromEnvoy.htq, htq('limit=5'), 'Envoy: the query of the original request');

  const editor = randomUUID();
  await fx.writer.write({ writes: [{ user: `user:${editor}`, relation: 'editor', object: `publisher:${publisher}` }] });
  const post = await raw(fx.sidecar.port, 'POST', '/api/v1/works', { authorization: `Bearer ${await fx.issuer.token(editor)}`, 'x-publisher-id': publisher, 'content-type': 'application/json' }, Buffer.from('{}'));
  t.equal(post.status, 200);
  const posted = await verifyAssertion(fx.sidecar, String(fx.upstream.received.at(-1)!.headers['x-identity-assertion']));
  t.equal(posted.htm, 'POST');
  t.equal(posted.htu, '/api/v1/works');
  t.equal(posted.htq, htq(''), 'no query: the hash of the empty string');
});

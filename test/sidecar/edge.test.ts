/**
 * Sidecar edge behaviour against real OpenFGA + Redis and a recording upstream: canonical-path
 * rejection, route rules (no default allow, case-sensitive), authentication failures, publisher
 * context, the own endpoints, and problem+json everywhere.
 */
import t, { type Test } from 'tap';
import { randomUUID } from 'node:crypto';
import { SignJWT, base64url } from 'jose';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { TEST_ROUTES, createIssuer, raw, startSidecar, useSidecarFixture } from './helpers.ts';

const user = randomUUID();
const editor = randomUUID();
const publisher = randomUUID();

const fx = useSidecarFixture(t, {
  tuples: [
    { user: `user:${user}`, relation: 'viewer', object: `publisher:${publisher}` },
    { user: `user:${editor}`, relation: 'editor', object: `publisher:${publisher}` },
  ],
});

const problem = (t: Test, res: { status: number; headers: Record<string, unknown>; json(): any }, status: number, kind: string) => {
  t.equal(res.status, status, `status ${status}`);
  t.match(String(res.headers['content-type']), /^application\/problem\+json/, 'problem+json');
  const body = res.json();
  t.equal(body.type, `https://errors.music-publishing.example/${kind}`);
  t.equal(body.status, status);
};

t.test('non-canonical targets are rejected with 400 and never reach the upstream', async (t) => {
  const token = await fx.issuer.token(user);
  const before = fx.upstream.received.length;
  const targets = [
    '//api/v1/works',
    '/api//v1/works',
    '/api/v1%2Fworks',
    '/api/v1%2fworks',
    '/api/v1%5Cworks',
    '/api/v1/works/%2e%2e/x',
    '/docs/%2E%2E/api/v1/works',
    '/docs/../api/v1/works',
    '/docs/./x',
    '/api/v1/works;x',
    '/docs/a;jsessionid=1',
    '/docs/a\\b',
    '/docs/%77x',
    '/docs/%zz',
    'http://evil.example/api/v1/works',
    '*',
  ];
  for (const target of targets) {
    const res = await raw(fx.sidecar.port, target === '*' ? 'OPTIONS' : 'GET', target, { authorization: `Bearer ${token}`, 'x-publisher-id': publisher });
    t.equal(res.status, 400, `${target} → 400`);
    t.equal(res.json().type, 'https://errors.music-publishing.example/non-canonical-path', `${target} kind`);
  }
  // Non-ASCII: Node's parser or our check rejects it — either way 400 problem+json.
  const nonAscii = await raw(fx.sidecar.port, 'GET', '/docs/\u00e9', {});
  t.equal(nonAscii.status, 400, 'non-ASCII → 400');
  t.match(String(nonAscii.headers['content-type']), /problem\+json/);
  t.equal(fx.upstream.received.length, before, 'upstream saw nothing');
});

t.test('routing is exact and case-sensitive; no rule → 404 problem+json', async (t) => {
  const token = await fx.issuer.token(user);
  const before = fx.upstream.received.length;
  for (const [m, p] of [
    ['GET', '/API/V1/WORKS'],
    ['GET', '/api/v1/works/'],
    ['GET', '/api/v1/nothing'],
    ['DELETE', '/api/v1/works'],
    ['GET', '/api/v1/works/not-a-uuid'],
    ['GET', '/docs'],
  ] as const) {
    const res = await raw(fx.sidecar.port, m, p, { authorization: `Bearer ${token}`, 'x-publisher-id': publisher });
    problem(t, res, 404, 'not-found');
  }
  const propfind = await raw(fx.sidecar.port, 'PROPFIND', '/docs/x', {});
  problem(t, propfind, 404, 'not-found');
  t.equal(fx.upstream.received.length, before, 'upstream saw nothing');
});

t.test('public route: no identity needed; HEAD follows the GET rule; identity headers stripped', async (t) => {
  const res = await raw(fx.sidecar.port, 'GET', '/docs/index.html?x=%2F', { 'x-user-id': 'spoof', authorization: 'Bearer abc' });
  t.equal(res.status, 200);
  t.equal(res.headers['x-upstream'], 'yes');
  const got = fx.upstream.received.at(-1)!;
  t.equal(got.url, '/docs/index.html?x=%2F', 'raw target forwarded unchanged');
  t.notOk(got.headers['x-user-id']);
  t.notOk(got.headers['authorization']);
  t.notOk(got.headers['x-identity-assertion'], 'no assertion on public routes');
  const head = await raw(fx.sidecar.port, 'HEAD', '/docs/index.html', {});
  t.equal(head.status, 200);
  t.equal(fx.upstream.received.at(-1)!.method, 'HEAD');
});

t.test('authentication failures → 401 with an RFC 6750 challenge', async (t) => {
  const before = fx.upstream.received.length;
  const path = '/api/v1/works';
  const h = (token?: string) => ({ ...(token ? { authorization: `Bearer ${token}` } : {}), 'x-publisher-id': publisher });
  const missing = await raw(fx.sidecar.port, 'GET', path, h());
  problem(t, missing, 401, 'unauthenticated');
  t.equal(missing.headers['www-authenticate'], 'Bearer realm="music-publishing"', 'no error code without credentials (RFC 6750 §3.1)');

  const now = Math.floor(Date.now() / 1000);
  const cases: [string, string][] = [
    ['expired', await fx.issuer.token(user, { expSeconds: -60 })],
    ['wrong iss', await fx.issuer.token(user, { iss: 'https://evil.example' })],
    ['wrong aud', await fx.issuer.token(user, { aud: 'other' })],
    ['no exp', await fx.issuer.token(user, { omitExp: true })],
    ['typ JWT (not an access token)', await fx.issuer.token(user, { typ: 'JWT' })],
    ['sub not a UUID', await fx.issuer.token('alice')],
    ['garbage', 'abc.def.ghi'],
    [
      'alg none',
      `${base64url.encode(JSON.stringify({ alg: 'none', typ: 'at+jwt' }))}.${base64url.encode(
        JSON.stringify({ iss: 'https://issuer.test.local', aud: 'music-publishing', sub: user, exp: now + 600 }),
      )}.`,
    ],
    [
      'HS256 signed with the public key',
      await new SignJWT({})
        .setProtectedHeader({ alg: 'HS256', typ: 'at+jwt', kid: fx.issuer.kid })
        .setIssuer('https://issuer.test.local')
        .setAudience('music-publishing')
        .setSubject(user)
        .setExpirationTime(now + 600)
        .sign(new TextEncoder().encode(JSON.stringify(fx.issuer.publicJwk))),
    ],
    [
      'signed by another key',
      await (async () => {
        const other = await createIssuer();
        t.teardown(() => other.close());
        return other.token(user);
      })(),
    ],
  ];
  for (const [name, token] of cases) {
    const res = await raw(fx.sidecar.port, 'GET', path, h(token));
    t.equal(res.status, 401, `${name} → 401`);
    t.match(String(res.headers['www-authenticate']), /^Bearer realm="music-publishing", error="invalid_token"/, `${name}: invalid_token`);
  }
  const basic = await raw(fx.sidecar.port, 'GET', path, { authorization: 'Basic dTpw', 'x-publisher-id': publisher });
  t.equal(basic.status, 401, 'another scheme counts as no credentials');
  t.equal(fx.upstream.received.length, before, 'upstream saw nothing');
});

t.test('publisher context: alias, conflict, malformed, missing', async (t) => {
  const token = await fx.issuer.token(user);
  const auth = { authorization: `Bearer ${token}` };
  const alias = await raw(fx.sidecar.port, 'GET', '/api/v1/works', { ...auth, 'x-tenant-id': publisher.toUpperCase() });
  t.equal(alias.status, 200, 'X-Tenant-Id alone works');
  t.equal(alias.headers['deprecation'], '@1793491200', 'RFC 9745 date form');
  t.match(String(alias.headers['sunset']), /GMT$/);
  t.equal(fx.upstream.received.at(-1)!.headers['x-publisher-id'], publisher, 'forwarded as normalised X-Publisher-Id');
  t.notOk(fx.upstream.received.at(-1)!.headers['x-tenant-id'], 'legacy header not forwarded');

  const same = await raw(fx.sidecar.port, 'GET', '/api/v1/works', { ...auth, 'x-tenant-id': publisher, 'x-publisher-id': publisher });
  t.equal(same.status, 200, 'both equal → fine');
  const before = fx.upstream.received.length;
  const conflict = await raw(fx.sidecar.port, 'GET', '/api/v1/works', { ...auth, 'x-tenant-id': randomUUID(), 'x-publisher-id': publisher });
  problem(t, conflict, 400, 'publisher-context');
  t.equal(conflict.headers['deprecation'], '@1793491200', 'Deprecation also on the error');
  problem(t, await raw(fx.sidecar.port, 'GET', '/api/v1/works', { ...auth, 'x-publisher-id': 'dmp' }), 400, 'publisher-context');
  problem(t, await raw(fx.sidecar.port, 'GET', '/api/v1/works', auth), 400, 'publisher-context');
  t.equal(fx.upstream.received.length, before, 'upstream saw nothing');
});

t.test('own endpoints', async (t) => {
  t.equal((await raw(fx.sidecar.port, 'GET', '/healthz')).status, 200);
  const ready = await raw(fx.sidecar.port, 'GET', '/readyz');
  t.equal(ready.status, 200);
  t.same(ready.json().checks, { openfga: 'ok', redis: 'ok', upstream: 'ok', session_revocations: 'ok' });
  const jwks = (await raw(fx.sidecar.port, 'GET', '/.well-known/jwks.json')).json();
  t.equal(jwks.keys.length, 1);
  t.match(jwks.keys[0].alg, /^(EdDSA|ES256)$/, "the key file's algorithm (Ed25519 → EdDSA, P-256 → ES256: assertion-signer.test.ts)");
  t.notOk(jwks.keys[0].d, 'no private part');
  const metrics = await raw(fx.sidecar.adminPort, 'GET', '/metrics'); // the admin listener (admin-listener.test.ts)
  t.match(metrics.text, /sidecar_decisions_total\{source="pdp",allowed="true"\}/);
});

t.test('remote JWKS unreachable → 503 (fail closed), not 401', async (t) => {
  const { freePort } = await import('./helpers.ts');
  const dead = await freePort();
  const s = await startSidecar({
    OPENFGA_STORE_NAME: fx.store.storeName,
    UPSTREAM_URL: fx.upstream.url,
    ROUTES_FILE: fx.tmp.routesFile,
    JWT_JWKS_URL: `http://127.0.0.1:${dead}/jwks.json`,
    JWT_JWKS_TIMEOUT_MS: '300',
  });
  t.teardown(() => s.close());
  const before = fx.upstream.received.length;
  const res = await raw(s.port, 'GET', '/api/v1/works', { authorization: `Bearer ${await fx.issuer.token(user)}`, 'x-publisher-id': publisher });
  t.equal(res.status, 503);
  t.match(String(res.headers['content-type']), /problem\+json/);
  t.equal(fx.upstream.received.length, before);
});

t.test('a route rule lets named meaning-changing headers through (forward_headers), for that rule only', async (t) => {
  const routesFile = join(fx.tmp.dir, 'routes-forward-headers.yaml');
  writeFileSync(
    routesFile,
    TEST_ROUTES.replace(
      '  - { method: POST, path: /api/v1/works, relation: works_create, object: "publisher:{publisher}" }',
      '  - { method: POST, path: /api/v1/works, relation: works_create, object: "publisher:{publisher}", forward_headers: [x-http-method-override] }',
    ),
  );
  const s = await startSidecar({ ...fx.env, ROUTES_FILE: routesFile });
  t.teardown(() => s.close());
  const headers = { authorization: `Bearer ${await fx.issuer.token(editor)}`, 'x-publisher-id': publisher, 'x-http-method-override': 'PATCH', 'x-rewrite-url': '/api/v1/users' };
  t.equal((await raw(s.port, 'POST', '/api/v1/works', { ...headers, 'content-type': 'application/json' }, Buffer.from('{}'))).status, 200, 'the write is allowed …');
  const post = fx.upstream.received.at(-1)!;
  t.equal(post.headers['x-http-method-override'], 'PATCH', '… the rule’s named header reaches the upstream');
  t.notOk(post.headers['x-rewrite-url'], '… one it does not name does not');
  t.equal((await raw(s.port, 'GET', '/api/v1/works', headers)).status, 200);
  t.notOk(fx.upstream.received.at(-1)!.headers['x-http-method-override'], 'another rule forwards none');
});

t.test('headers that change a request’s meaning upstream are dropped; two Authorization fields → 400', async (t) => {
  const token = await fx.issuer.token(user);
  const overrides = {
    'x-http-method-override': 'DELETE',
    'x-http-method': 'DELETE',
    'x-method-override': 'DELETE',
    'x-original-url': '/api/v1/users',
    'x-rewrite-url': '/api/v1/users',
    'x-original-uri': '/api/v1/users',
    'x-original-method': 'DELETE',
  };
  const ok = await raw(fx.sidecar.port, 'GET', '/api/v1/works', { authorization: `Bearer ${token}`, 'x-publisher-id': publisher, ...overrides });
  t.equal(ok.status, 200, 'the read is allowed …');
  const got = fx.upstream.received.at(-1)!;
  t.equal(got.method, 'GET');
  for (const h of Object.keys(overrides)) t.notOk(got.headers[h], `… and ${h} does not reach the upstream`);

  const before = fx.upstream.received.length;
  const other = await fx.issuer.token(randomUUID());
  for (const target of ['/api/v1/works', '/ext-authz/api/v1/works']) {
    for (const pair of [[`Bearer ${token}`, `Bearer ${other}`], [`Bearer ${token}`, `Bearer ${token}`]]) {
      const res = await raw(fx.sidecar.port, 'GET', target, { authorization: pair, 'x-publisher-id': publisher });
      problem(t, res, 400, 'bad-request');
      t.match(res.json().detail, /authorization header must be sent once/i, `${target}: says why`);
    }
  }
  t.equal(fx.upstream.received.length, before, 'the upstream saw none of them');
});

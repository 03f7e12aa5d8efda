/**
 * A real client in front: Debian's nginx runs the shipped configuration (examples/nginx/
 * nginx.conf.template) with `auth_request` to the sidecar's /ext-authz, in front of the catalog API
 * of the real stack (test/e2e/stack.ts: sign-in, OpenFGA, PostgreSQL with RLS). Every case of one
 * table is sent twice, byte for byte (raw request targets, duplicate headers), once through the
 * sidecar's own proxy route and once through nginx, and must come out the same: status, problem
 * type and detail, challenge and limit headers, the catalog API's answer — and whether the catalog
 * API saw the request at all, and with which identity (a recording pass-through proxy sits in front
 * of the catalog API on each path).
 */
import t, { type Test } from 'tap';
import { randomUUID } from 'node:crypto';
import { decodeJwt } from 'jose';
import { Redis } from 'ioredis';
import { startStack, tokenFor, type Proc, type Stack } from './stack.ts';
import { raw, type RawResponse } from '../sidecar/helpers.ts';
import { freePort, within } from '../support/http.ts';
import { startNginx, type Nginx } from '../support/nginx.ts';
import { startRecordingProxy, type Recorded, type RecordingProxy } from '../support/recording-proxy.ts';
import { DMP, DMP_ADMIN, DMP_EDITOR, DMP_VIEWER, MULTI, SONGTRUST, SPIRIT, TYPE } from '../support/demo-ids.ts';
import { encodeLimit, limitsKey } from '../../policies/src/metering.ts';

const hostPort = (url: string) => new URL(url).host;

let stack: Stack;
/** in front of the catalog API: one for the sidecar's proxy route, one for nginx */
let viaSidecar: RecordingProxy;
let viaNginx: RecordingProxy;
let nginx: Nginx;
let sidecar: Proc;

t.before(async () => {
  viaSidecar = await startRecordingProxy();
  viaNginx = await startRecordingProxy();
  stack = await startStack({
    env: {
      UPSTREAM_URL: viaSidecar.url, // the sidecars' upstream (the catalog API ignores it)
      METERING_LIMITS_RELOAD_MS: '100', // the sidecars re-read the limits the metering case sets …
      METERING_ROLLUP_INTERVAL_MS: '0', // … which the catalog API's roll-up would overwrite
    },
  });
  viaSidecar.target = stack.api.url;
  viaNginx.target = stack.api.url;
  sidecar = stack.sidecars[0]!;
  nginx = await startNginx({ sidecar: hostPort(sidecar.url), catalogApi: hostPort(viaNginx.url) });
});
t.teardown(async () => {
  await nginx?.stop();
  await stack?.stop();
  await viaSidecar?.close();
  await viaNginx?.close();
});

type Headers = Record<string, string | string[]>;
const port = (url: string) => Number(new URL(url).port);

/** The client's request, as the table gives it. */
type Request = { method: string; target: string; headers: Headers; body?: Buffer };
/** One way through and what the catalog API saw of it (nothing: undefined). */
type Outcome = { res: RawResponse; seen: Recorded | undefined; seenCount: number };

async function send(entry: { url: string }, tap: RecordingProxy, r: Request): Promise<Outcome> {
  const before = tap.received.length;
  const res = await raw(port(entry.url), r.method, r.target, r.body ? { ...r.headers, 'content-length': String(r.body.length) } : r.headers, r.body);
  const seenNow = tap.received.slice(before);
  return { res, seen: seenNow[0], seenCount: seenNow.length };
}

/** Headers of the client that must never reach the catalog API on either path. */
const NEVER_FORWARDED = [
  'authorization',
  'x-user-id',
  'x-user-email',
  'x-forwarded-user',
  'x-remote-user',
  'x-auth-user',
  'x-auth-request-email',
  'x-tenant-id',
  'x-http-method-override',
  'x-http-method',
  'x-method-override',
  'x-original-url',
  'x-rewrite-url',
];
/** The ext_authz request's own headers: nginx keeps them between itself and the sidecar. */
const EXT_AUTHZ_HEADERS = ['x-original-method', 'x-original-uri', 'x-forwarded-method', 'x-forwarded-uri'];

/** The response fields that must be equal both ways (Retry-After: within 2 s, it counts down between the two calls). */
const COMPARED_HEADERS = ['www-authenticate', 'retry-after', 'x-api-call-limit-exceeded', 'deprecation', 'sunset'];

/**
 * What a case must give both ways: `status`; `kind`, the problem kind of an error answer;
 * `reaches`, whether the catalog API sees it; `sameBody`, the same JSON answer both ways; `edgeKind`,
 * the problem kind of nginx's own answer for a request nginx refuses itself while reading it.
 */
type Want = { status: number; kind?: string; reaches: boolean; sameBody?: boolean; edgeKind?: string };

/**
 * Send `r` both ways and compare. `status` is expected on both; `kind` is the problem kind of an
 * error answer; `reaches` whether the catalog API must see it. Returns both outcomes.
 */
async function both(
  t: Test,
  name: string,
  r: Request,
  want: Want,
  ways: { sidecar: { url: string }; nginx: { url: string } } = { sidecar, nginx },
): Promise<{ direct: Outcome; edge: Outcome }> {
  const direct = await send(ways.sidecar, viaSidecar, r);
  const edge = await send(ways.nginx, viaNginx, r);
  t.equal(direct.res.status, want.status, `${name}: proxy route → ${want.status}`);
  t.equal(edge.res.status, want.status, `${name}: nginx → ${want.status}`);
  if (want.kind) {
    for (const [way, o] of [['proxy route', direct], ['nginx', edge]] as const) {
      t.match(String(o.res.headers['content-type']), /^application\/problem\+json/, `${name}: ${way} answers problem+json`);
    }
    const [a, b] = [direct.res.json(), edge.res.json()];
    t.equal(a.type, TYPE(want.kind), `${name}: problem ${want.kind}`);
    t.equal(b.status, a.status, `${name}: the same status member`);
    if (want.edgeKind) {
      t.equal(b.type, TYPE(want.edgeKind), `${name}: nginx refused it itself: ${want.edgeKind}`);
    } else {
      t.equal(b.type, a.type, `${name}: nginx passes the problem type`);
      t.equal(b.detail, a.detail, `${name}: and its detail`);
    }
  }
  for (const h of COMPARED_HEADERS) {
    const [e, d] = [edge.res.headers[h], direct.res.headers[h]];
    if (h === 'retry-after' && typeof e === 'string' && typeof d === 'string') t.ok(Math.abs(Number(e) - Number(d)) <= 2, `${name}: Retry-After the same (${d} s, ${e} s)`);
    else t.equal(e, d, `${name}: ${h} the same`);
  }
  t.equal(typeof edge.res.headers['ratelimit-limit'], typeof direct.res.headers['ratelimit-limit'], `${name}: RateLimit fields on both or neither`);
  for (const [way, o] of [['proxy route', direct], ['nginx', edge]] as const) {
    const id = o.res.headers['x-request-id'];
    if (id !== undefined || want.reaches) t.match(id, /^[^,\s]+$/, `${name}: ${way}: one X-Request-Id, never two`);
    if (o.seen?.headers['x-identity-assertion']) t.equal(decodeJwt(String(o.seen.headers['x-identity-assertion'])).request_id, id, `${name}: ${way}: the client gets the request id the assertion carries`);
  }
  const n = want.reaches ? 1 : 0;
  t.equal(direct.seenCount, n, `${name}: the catalog API saw it ${n}× via the proxy route`);
  t.equal(edge.seenCount, n, `${name}: the catalog API saw it ${n}× via nginx`);
  if (want.reaches && direct.seen && edge.seen) {
    for (const [way, seen] of [['proxy route', direct.seen], ['nginx', edge.seen]] as const) {
      t.equal(seen.method, r.method, `${name}: ${way}: the method it was decided for`);
      t.equal(seen.url, r.target, `${name}: ${way}: the raw target, unchanged`);
      for (const h of NEVER_FORWARDED) t.notOk(seen.headers[h], `${name}: ${way}: no ${h} reaches the catalog API`);
      if (way === 'nginx') for (const h of EXT_AUTHZ_HEADERS) t.notOk(seen.headers[h], `${name}: nginx: no ${h} reaches the catalog API`);
      t.type(seen.headers['x-identity-assertion'], 'string', `${name}: ${way}: with the sidecar's assertion`);
    }
    t.equal(edge.seen.headers['x-publisher-id'], direct.seen.headers['x-publisher-id'], `${name}: the same X-Publisher-Id upstream`);
    const claims = (s: Recorded) => {
      const a = s.headers['x-identity-assertion'];
      if (typeof a !== 'string') return null;
      const c = decodeJwt(a);
      return { sub: c.sub, publisher_id: c.publisher_id, htm: c.htm, htu: c.htu, htq: c.htq, iss: c.iss, aud: c.aud };
    };
    t.same(claims(edge.seen), claims(direct.seen), `${name}: an assertion with the same claims`);
    const spoofed = r.headers['x-identity-assertion'];
    if (spoofed) t.not(edge.seen.headers['x-identity-assertion'], spoofed, `${name}: the client's assertion never reaches the catalog API`);
  }
  if (want.sameBody) t.same(edge.res.json(), direct.res.json(), `${name}: the catalog API's answer, the same`);
  return { direct, edge };
}

const bearer = async (email: string) => `Bearer ${await tokenFor(email)}`;

t.test('one table, two ways: allowed, denied, unauthenticated, path tricks, spoofed headers', async (t) => {
  const viewer = await bearer('viewer@dmp.example');
  const editor = await bearer('editor@dmp.example');
  const admin = await bearer('admin@dmp.example');
  const asViewer = { authorization: viewer, 'x-publisher-id': DMP };
  // a real assertion, as /ext-authz hands it to a proxy, for another user
  const stolen = await raw(port(sidecar.url), 'GET', '/ext-authz', {
    authorization: admin,
    'x-publisher-id': DMP,
    'x-original-method': 'GET',
    'x-original-uri': '/api/v1/works?limit=1',
  });
  t.equal(stolen.status, 200, 'the sidecar hands out an assertion on /ext-authz');
  const stolenAssertion = String(stolen.headers['x-identity-assertion']);
  const works = (await raw(port(sidecar.url), 'GET', '/api/v1/works?limit=1', asViewer)).json();
  const dmpWork = works.items[0].id as string;

  const json = (v: unknown) => Buffer.from(JSON.stringify(v));
  const table: [string, Request, Want][] = [
    // allowed: the catalog API's answer
    ['allowed list', { method: 'GET', target: '/api/v1/works?limit=2', headers: asViewer }, { status: 200, reaches: true, sameBody: true }],
    ['allowed row', { method: 'GET', target: `/api/v1/works/${dmpWork}`, headers: asViewer }, { status: 200, reaches: true, sameBody: true }],
    ['allowed, query with encoded bytes', { method: 'GET', target: '/api/v1/works?limit=1&title=%2F%2e%2e', headers: asViewer }, { status: 200, reaches: true }],
    ['identity only', { method: 'GET', target: '/api/v1/users/me', headers: { authorization: viewer } }, { status: 200, reaches: true, sameBody: true }],
    ['X-Tenant-Id (deprecated alias, upper case)', { method: 'GET', target: '/api/v1/works?limit=1', headers: { authorization: viewer, 'x-tenant-id': DMP.toUpperCase() } }, { status: 200, reaches: true, sameBody: true }],
    ['allowed write with a body', { method: 'POST', target: '/api/v1/works', headers: { authorization: editor, 'x-publisher-id': DMP, 'content-type': 'application/json' }, body: json({ title: 'Through the edge' }) }, { status: 201, reaches: true }],
    ["the catalog API's own refusal passes through", { method: 'POST', target: '/api/v1/works', headers: { authorization: editor, 'x-publisher-id': DMP, 'content-type': 'application/json' }, body: json({}) }, { status: 400, kind: 'bad-request', reaches: true }],
    // denied: never reaches the catalog API
    ['other publisher', { method: 'GET', target: '/api/v1/works', headers: { authorization: viewer, 'x-publisher-id': SONGTRUST } }, { status: 403, kind: 'forbidden', reaches: false }],
    ['a write the role lacks', { method: 'POST', target: '/api/v1/works', headers: { ...asViewer, 'content-type': 'application/json' }, body: json({ title: 'nope' }) }, { status: 403, kind: 'forbidden', reaches: false }],
    ['delete the role lacks', { method: 'DELETE', target: `/api/v1/works/${dmpWork}`, headers: asViewer }, { status: 403, kind: 'forbidden', reaches: false }],
    ['no route rule', { method: 'GET', target: '/api/v1/nothing', headers: asViewer }, { status: 404, kind: 'not-found', reaches: false }],
    // unauthenticated
    ['no token', { method: 'GET', target: '/api/v1/works', headers: { 'x-publisher-id': DMP } }, { status: 401, kind: 'unauthenticated', reaches: false }],
    ['a bad token', { method: 'GET', target: '/api/v1/works', headers: { authorization: 'Bearer abc.def.ghi', 'x-publisher-id': DMP } }, { status: 401, kind: 'unauthenticated', reaches: false }],
    ['two Authorization fields', { method: 'GET', target: '/api/v1/works', headers: { authorization: [viewer, admin], 'x-publisher-id': DMP } }, { status: 400, kind: 'bad-request', reaches: false, edgeKind: 'bad-request' }], // nginx refuses a duplicate Authorization itself
    ['a 20 KiB token', { method: 'GET', target: '/api/v1/works', headers: { authorization: `Bearer ${'a'.repeat(20 * 1024)}`, 'x-publisher-id': DMP } }, { status: 431, reaches: false }],
    // path tricks: the sidecar decides on the raw target nginx got, never on nginx's normalised $uri
    ...(
      [
        '//api/v1/works',
        '/api//v1/works',
        '/api/v1/works/',
        '/api/v1%2Fworks',
        '/api/v1%2fworks',
        '/api/v1%5Cworks',
        '/api/v1/./works',
        '/api/v1/works/../users/me',
        '/api/v1/works/%2e%2e/users',
        '/api/v1/%2E%2E/v1/works',
        `/api/v1/works/%2e/${dmpWork}`,
        '/api/v1/works;x',
        '/api/v1/w%6Frks',
        '/api/v1/works/%zz', // nginx refuses this one itself (a bad %-escape) …
        '/../api/v1/works', // … and this one (above the root)
      ] as const
    ).map((target): (typeof table)[number] => [
      `path trick ${target}`,
      { method: 'GET', target, headers: asViewer },
      target === '/api/v1/works/'
        ? { status: 404, kind: 'not-found', reaches: false }
        : { status: 400, kind: 'non-canonical-path', reaches: false, ...(target.startsWith('/../') || target.endsWith('%zz') ? { edgeKind: 'bad-request' } : {}) },
    ]),
    // spoofed headers
    ['a forged X-Identity-Assertion next to a good token', { method: 'GET', target: '/api/v1/works?limit=1', headers: { ...asViewer, 'x-identity-assertion': 'forged.by.client' } }, { status: 200, reaches: true, sameBody: true }],
    ["someone else's real assertion, no token", { method: 'GET', target: '/api/v1/works?limit=1', headers: { 'x-publisher-id': DMP, 'x-identity-assertion': stolenAssertion } }, { status: 401, kind: 'unauthenticated', reaches: false }],
    ['X-Original-Method/-URI from the client (naming an allowed read)', { method: 'DELETE', target: `/api/v1/works/${dmpWork}`, headers: { ...asViewer, 'x-original-method': 'GET', 'x-original-uri': '/api/v1/works' } }, { status: 403, kind: 'forbidden', reaches: false }],
    ['X-Original-URI from the client on an allowed read', { method: 'GET', target: '/api/v1/works?limit=1', headers: { ...asViewer, 'x-original-uri': '/api/v1/users', 'x-original-method': 'DELETE' } }, { status: 200, reaches: true, sameBody: true }],
    ["Traefik's X-Forwarded-Method/-Uri from the client", { method: 'GET', target: '/api/v1/works?limit=1', headers: { ...asViewer, 'x-forwarded-method': 'DELETE', 'x-forwarded-uri': `/api/v1/works/${dmpWork}` } }, { status: 200, reaches: true, sameBody: true }],
    ['X-Forwarded-Method/-Uri from the client naming an allowed read on a denied request', { method: 'GET', target: '/api/v1/works', headers: { authorization: viewer, 'x-publisher-id': SONGTRUST, 'x-forwarded-method': 'GET', 'x-forwarded-uri': '/api/v1/users/me' } }, { status: 403, kind: 'forbidden', reaches: false }],
    ['identity headers from the client', { method: 'GET', target: '/api/v1/users/me', headers: { authorization: viewer, 'x-user-id': DMP_ADMIN, 'x-user-email': 'admin@dmp.example', 'x-forwarded-user': DMP_ADMIN, 'x-remote-user': DMP_ADMIN, 'x-auth-user': DMP_ADMIN, 'x-auth-request-email': 'admin@dmp.example' } }, { status: 200, reaches: true, sameBody: true }],
    ['method and path overrides from the client', { method: 'GET', target: '/api/v1/works?limit=1', headers: { ...asViewer, 'x-http-method-override': 'DELETE', 'x-http-method': 'DELETE', 'x-method-override': 'DELETE', 'x-original-url': '/api/v1/users', 'x-rewrite-url': '/api/v1/users' } }, { status: 200, reaches: true, sameBody: true }],
    ['X-Publisher-Id and X-Tenant-Id that disagree', { method: 'GET', target: '/api/v1/works', headers: { authorization: viewer, 'x-publisher-id': DMP, 'x-tenant-id': SONGTRUST } }, { status: 400, kind: 'publisher-context', reaches: false }],
    ['X-Publisher-Id twice', { method: 'GET', target: '/api/v1/works', headers: { authorization: viewer, 'x-publisher-id': [DMP, SONGTRUST] } }, { status: 400, kind: 'publisher-context', reaches: false }],
  ];
  for (const [name, request, want] of table) await both(t, name, request, want);

  // What the allowed cases delivered: the caller's own identity, never the client's claims.
  const me = viaNginx.received.filter((r) => r.url === '/api/v1/users/me').map((r) => decodeJwt(String(r.headers['x-identity-assertion'])).sub);
  t.ok(me.length >= 2 && me.every((sub) => sub === DMP_VIEWER), 'users/me went to the catalog API as the viewer each time');
  const write = viaNginx.received.find((r) => r.method === 'POST' && r.headers['content-type'] === 'application/json');
  t.equal(decodeJwt(String(write!.headers['x-identity-assertion'])).sub, DMP_EDITOR, 'the write went as the editor');
  t.match(nginx.errorLog(), /auth request unexpected status: 400/, "nginx's log: the sidecar's 400 was not a 2xx/401/403 (the case the error pages handle)");
});

t.test('the monthly API-call limit: warn header on an allowed call, 429 with Retry-After when blocked', async (t) => {
  const redis = new Redis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379/0');
  const key = limitsKey(process.env.METERING_KEY_PREFIX ?? 'metering');
  t.teardown(async () => {
    await redis.hdel(key, SPIRIT);
    redis.disconnect();
  });
  const r: Request = { method: 'GET', target: '/api/v1/works?limit=1', headers: { authorization: await bearer('multi@example.com'), 'x-publisher-id': SPIRIT } };
  const header = async () => (await raw(port(sidecar.url), r.method, r.target, r.headers)).headers['x-api-call-limit-exceeded'] === '0' ? 1 : 0;
  await redis.hset(key, SPIRIT, encodeLimit({ callsPerMonth: 0, overLimit: 'warn' }));
  t.not(await within(3000, 1, header), -1, 'the sidecar warns (it re-read the limits)');
  const warned = await both(t, 'over a warn limit', r, { status: 200, reaches: true, sameBody: true });
  t.equal(warned.edge.res.headers['x-api-call-limit-exceeded'], '0', 'nginx copies the warning to the client');
  t.equal(decodeJwt(String(warned.edge.seen!.headers['x-identity-assertion'])).sub, MULTI);

  await redis.hset(key, SPIRIT, encodeLimit({ callsPerMonth: 0, overLimit: 'block' }));
  const status = async () => (await raw(port(sidecar.url), r.method, r.target, r.headers)).status;
  t.not(await within(3000, 429, status), -1, 'the sidecar blocks (it re-read the limits)');
  const blocked = await both(t, 'over a block limit', r, { status: 429, kind: 'api-call-limit-exceeded', reaches: false });
  t.match(String(blocked.edge.res.headers['retry-after']), /^\d+$/, 'Retry-After reaches the client through nginx');
});

t.test('the authorization service unavailable (JWKS unreachable) → the sidecar’s 503 through nginx', async (t) => {
  const broken = await stack.addSidecar({ JWT_JWKS_URL: `http://127.0.0.1:${await freePort()}/jwks.json`, JWT_JWKS_TIMEOUT_MS: '300' });
  const edge = await startNginx({ sidecar: hostPort(broken.url), catalogApi: hostPort(viaNginx.url) });
  t.teardown(() => edge.stop());
  const r: Request = { method: 'GET', target: '/api/v1/works', headers: { authorization: await bearer('viewer@dmp.example'), 'x-publisher-id': DMP } };
  await both(t, 'JWKS unreachable', r, { status: 503, kind: 'pdp-unavailable', reaches: false }, { sidecar: broken, nginx: edge });
});

t.test('the sidecar down → nginx fails closed with 503 problem+json; nothing reaches the catalog API', async (t) => {
  const edge = await startNginx({ sidecar: `127.0.0.1:${await freePort()}`, catalogApi: hostPort(viaNginx.url) });
  t.teardown(() => edge.stop());
  const before = viaNginx.received.length;
  for (const [method, target, headers] of [
    ['GET', '/api/v1/works', { authorization: await bearer('viewer@dmp.example'), 'x-publisher-id': DMP }],
    ['POST', '/api/v1/auth/login', { 'content-type': 'application/json' }],
    ['GET', `/api/v1/works/${randomUUID()}`, {}],
  ] as const) {
    const res = await raw(edge.port, method, target, headers);
    t.equal(res.status, 503, `${method} ${target} → 503`);
    t.match(String(res.headers['content-type']), /^application\/problem\+json/);
    t.equal(res.json().type, TYPE('pdp-unavailable'));
    t.equal(res.headers['retry-after'], '1');
  }
  t.equal(viaNginx.received.length, before, 'the catalog API saw none of them');
});

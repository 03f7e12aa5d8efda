/**
 * API-call metering at the sidecar (docs/CONTRACTS.md, "Metering") against real Redis and OpenFGA:
 * which calls count (proxy and /ext-authz, per publisher and per API client; denied, public,
 * authenticated-only, platform and blocked calls not), the flush replay guard, the monthly limit
 * (block / warn / under it / never-blocked routes / learned from other sidecars' counts), Redis down
 * (counting goes on in process and is flushed when it returns, limits keep their values), the last
 * flush on close, and the metering metrics.
 */
import t from 'tap';
import { randomUUID } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { SignJWT } from 'jose';
import { Redis } from 'ioredis';
import { dayKey, dirtyKey, encodeLimit, limitsKey, meteringScripts, monthKey, monthOfDay, nextMonthStartMs, utcDayOf } from '../../policies/src/metering.ts';
import { createMeter } from '../../sidecar/src/metering/meter.ts';
import { AUDIENCE, ISSUER, freePort, raw, startPrivateRedis, startSidecar, useSidecarFixture, type Sidecar } from './helpers.ts';

const ROUTES = `version: 1
routes:
  - { method: GET, path: /docs/*, public: true }
  - { method: GET, path: /api/v1/users/me, authenticated: true }
  - { method: GET, path: /api/v1/works, relation: works_read, object: "publisher:{publisher}" }
  - { method: GET, path: "/api/v1/publishers/{publisherId}", relation: publishers_read, object: "publisher:{publisherId}" }
  - { method: PUT, path: "/api/v1/publishers/{publisherId}/account/plan", relation: accounts_change_plan, object: "publisher:{publisherId}" }
  - { method: POST, path: /api/v1/publishers, relation: can_administer, object: "system:platform" }
`;

const admin = randomUUID(); // admin of every publisher below
const sysadmin = randomUUID();
const client = randomUUID(); // an API client of P.counted
const NAMES = ['counted', 'path', 'block', 'warn', 'shared', 'learned', 'outage', 'unlimited', 'paused', 'closing'] as const;
/** One publisher per test (so their counts are their own). */
const P = Object.fromEntries(NAMES.map((k) => [k, randomUUID()])) as Record<(typeof NAMES)[number], string>;
const prefix = `mtest-${randomUUID()}`;

const fx = useSidecarFixture(t, {
  sidecars: 2,
  tuples: [
    ...Object.values(P).map((p) => ({ user: `user:${admin}`, relation: 'admin', object: `publisher:${p}` })),
    { user: `user:${client}`, relation: 'api_user', object: `publisher:${P.counted}` },
    { user: `user:${sysadmin}`, relation: 'admin', object: 'system:platform' },
  ],
  env: { METERING_KEY_PREFIX: prefix, METERING_FLUSH_INTERVAL_MS: '100', METERING_LIMITS_RELOAD_MS: '100', METERING_NEVER_BLOCK: '/api/v1/publishers/{publisherId}/account/plan' },
});
writeFileSync(fx.tmp.routesFile, ROUTES);

/** An access token as the client credentials grant issues it: `client_id` = `sub`, no `amr`. */
async function clientToken(sub: string): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ scope: 'catalog', client_id: sub, sid: randomUUID(), amr: [] })
    .setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid: fx.issuer.kid })
    .setIssuer(ISSUER)
    .setAudience(AUDIENCE)
    .setSubject(sub)
    .setIssuedAt(now)
    .setExpirationTime(now + 600)
    .sign(fx.issuer.privateKey);
}

const tokens = new Map<string, string>();
const bearer = async (sub: string) => {
  if (!tokens.has(sub)) tokens.set(sub, sub === client ? await clientToken(sub) : await fx.issuer.token(sub));
  return `Bearer ${tokens.get(sub)}`;
};

const call = async (s: Sidecar, sub: string, method: string, path: string, publisher?: string) =>
  raw(s.port, method, path, { authorization: await bearer(sub), ...(publisher ? { 'x-publisher-id': publisher } : {}) });

/** The day hash of `publisher` for the UTC days this test ran in (normally one). */
async function counts(redis: Redis, publisher: string, since: number, pfx = prefix): Promise<{ calls: number; clients: Record<string, number> }> {
  const days = [...new Set([utcDayOf(since), utcDayOf(Date.now())])];
  const out = { calls: 0, clients: {} as Record<string, number> };
  for (const d of days) {
    const h = await redis.hgetall(dayKey(pfx, publisher, d));
    out.calls += Number(h.calls ?? 0);
    for (const [k, v] of Object.entries(h)) if (k.startsWith('client:')) out.clients[k.slice(7)] = (out.clients[k.slice(7)] ?? 0) + Number(v);
  }
  return out;
}

/** Poll until `read()` satisfies `ok` (then return it) or `ms` pass (then return the last value). */
async function eventually<T>(read: () => Promise<T>, ok: (v: T) => boolean, ms = 5000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await read();
    if (ok(v) || Date.now() > deadline) return v;
    await sleep(50);
  }
}

/** One sample of `name` (with every label in `labels`) from a sidecar's /metrics, or NaN. */
async function metric(s: Sidecar, name: string, labels: Record<string, string> = {}): Promise<number> {
  const text = (await raw(s.adminPort, 'GET', '/metrics')).text;
  const line = text.split('\n').find((l) => (l.startsWith(`${name}{`) || l.startsWith(`${name} `)) && Object.entries(labels).every(([k, v]) => l.includes(`${k}="${v}"`)));
  return line ? Number(line.split(' ').pop()) : NaN;
}

t.test('allowed calls are counted per publisher and API client, on the proxy and /ext-authz; nothing else is', async (t) => {
  const since = Date.now();
  const [s1, s2] = fx.sidecars as [Sidecar, Sidecar];
  for (let i = 0; i < 3; i++) t.equal((await call(s1, admin, 'GET', '/api/v1/works', P.counted)).status, 200, 'proxy');
  for (let i = 0; i < 2; i++) t.equal((await call(s2, admin, 'GET', '/ext-authz/api/v1/works', P.counted)).status, 200, '/ext-authz');
  for (let i = 0; i < 4; i++) t.equal((await call(i % 2 ? s1 : s2, client, 'GET', '/api/v1/works', P.counted)).status, 200, 'API client');
  // the path names the publisher: counted there, whatever the context says
  t.equal((await call(s1, admin, 'GET', `/api/v1/publishers/${P.path}`, P.counted)).status, 200);

  t.equal((await call(s1, client, 'GET', '/api/v1/works', P.path)).status, 403, 'denied: not counted');
  t.equal((await call(s1, admin, 'GET', '/api/v1/users/me', P.counted)).status, 200, 'authenticated-only: not counted');
  t.equal((await raw(s1.port, 'GET', '/docs/x', { 'x-publisher-id': P.counted })).status, 200, 'public: not counted');
  t.equal((await call(s1, sysadmin, 'POST', '/api/v1/publishers', P.counted)).status, 200, "the platform's own route: not counted");
  t.equal((await call(s1, admin, 'GET', '/api/v1/works')).status, 400, 'no publisher context: refused, not counted');
  t.equal((await raw(s1.port, 'GET', '/api/v1/works', { 'x-publisher-id': P.counted })).status, 401, 'unauthenticated: not counted');

  const c = await eventually(() => counts(fx.redis, P.counted, since), (v) => v.calls >= 9);
  t.same(c, { calls: 9, clients: { [client]: 4 } }, 'publisher total 3 + 2 + 4, of which the API client 4');
  // the path's call came last: it may reach Redis in a later flush round than the others
  t.same(await eventually(() => counts(fx.redis, P.path, since), (v) => v.calls >= 1), { calls: 1, clients: {} }, "the path's publisher");
  await sleep(300); // a few more flush rounds: nothing is sent twice
  t.same(await counts(fx.redis, P.counted, since), { calls: 9, clients: { [client]: 4 } }, 'stable after more flushes');
  const day = utcDayOf(Date.now());
  t.equal(Number(await fx.redis.get(monthKey(prefix, P.counted, monthOfDay(day)))), 9, 'the month total');
  t.ok((await fx.redis.zscore(dirtyKey(prefix, P.counted), day)) !== null, 'the day is marked for the roll-up');
  t.ok((await fx.redis.ttl(dayKey(prefix, P.counted, day))) > 39 * 86_400, 'day keys expire (40 days)');
});

t.test('a replayed flush (same instance and seq) is applied once', async (t) => {
  const scripts = meteringScripts(fx.redis);
  const publisherId = randomUUID();
  const day = '2026-03-04';
  const batch = { publisherId, day, instance: 'sidecar-a', seq: 7, calls: 5, clients: new Map([[client, 2]]) };
  t.same(await scripts.flush(prefix, batch), { applied: true, monthTotal: 5 });
  t.same(await scripts.flush(prefix, batch), { applied: false, monthTotal: 5 }, 'the retry after a timeout changes nothing');
  t.same(await scripts.flush(prefix, { ...batch, seq: 3 }), { applied: false, monthTotal: 5 }, 'an older seq neither');
  t.same(await scripts.flush(prefix, { ...batch, seq: 8, calls: 1, clients: null }), { applied: true, monthTotal: 6 }, 'the next batch is');
  t.same(await scripts.flush(prefix, { ...batch, instance: 'sidecar-b', seq: 1, calls: 2, clients: null }), { applied: true, monthTotal: 8 }, "another sidecar's seq is its own");
  const h = await fx.redis.hgetall(dayKey(prefix, publisherId, day));
  t.same({ calls: h.calls, client: h[`client:${client}`] }, { calls: '8', client: '2' });
  t.equal(await fx.redis.get(monthKey(prefix, publisherId, '2026-03')), '8');
});

t.test('the monthly limit: block → 429 with Retry-After, warn → a header, under it → nothing', async (t) => {
  const [s1] = fx.sidecars as [Sidecar];
  await fx.redis.hset(limitsKey(prefix), { [P.block]: encodeLimit({ callsPerMonth: 2, overLimit: 'block' }), [P.warn]: encodeLimit({ callsPerMonth: 2, overLimit: 'warn' }) });
  await sleep(400); // every sidecar re-reads the limits (METERING_LIMITS_RELOAD_MS = 100)
  const since = Date.now();
  for (let i = 1; i <= 2; i++) {
    const ok = await call(s1, admin, 'GET', '/api/v1/works', P.block);
    t.equal(ok.status, 200, `call ${i} under the limit`);
    t.equal(ok.headers['x-api-call-limit-exceeded'], undefined, 'no header under the limit');
  }
  const received = fx.upstream.received.length;
  const blocked = await call(s1, admin, 'GET', '/api/v1/works', P.block);
  t.equal(blocked.status, 429);
  t.match(String(blocked.headers['content-type']), /^application\/problem\+json/);
  t.equal(blocked.json().type, 'https://errors.music-publishing.example/api-call-limit-exceeded');
  t.equal(blocked.headers['x-api-call-limit-exceeded'], '2', 'the header names the limit');
  const expected = Math.ceil((nextMonthStartMs(Date.now()) - Date.now()) / 1000);
  t.ok(Math.abs(Number(blocked.headers['retry-after']) - expected) <= 2, `Retry-After = seconds to the next UTC month (${blocked.headers['retry-after']} ≈ ${expected})`);
  t.equal((await call(s1, admin, 'GET', '/ext-authz/api/v1/works', P.block)).status, 429, '/ext-authz too');
  t.equal(fx.upstream.received.length, received, 'nothing reached the upstream');
  const plan = await call(s1, admin, 'PUT', `/api/v1/publishers/${P.block}/account/plan`);
  t.equal(plan.status, 200, 'a never-blocked route (choosing a plan) still passes …');
  t.equal(plan.headers['x-api-call-limit-exceeded'], '2', '… with the warning');

  for (let i = 1; i <= 4; i++) {
    const r = await call(s1, admin, 'GET', '/api/v1/works', P.warn);
    t.equal(r.status, 200, `warn: call ${i} passes`);
    t.equal(r.headers['x-api-call-limit-exceeded'], i > 2 ? '2' : undefined, i > 2 ? 'over the limit: the header' : 'under the limit: no header');
  }
  t.same((await eventually(() => counts(fx.redis, P.block, since), (v) => v.calls >= 3)).calls, 3, 'blocked calls are not counted (2 + the plan change)');
  t.same((await eventually(() => counts(fx.redis, P.warn, since), (v) => v.calls >= 4)).calls, 4, 'warned calls are');
  t.equal(await metric(s1, 'sidecar_metering_over_limit_total', { outcome: 'blocked' }), 2);
  t.equal(await metric(s1, 'sidecar_metering_over_limit_total', { outcome: 'warned' }), 3, 'the plan change and two warn calls');
});

t.test("a sidecar learns other sidecars' counts: from its first flush, and from every reload", async (t) => {
  const [s1, s2] = fx.sidecars as [Sidecar, Sidecar];
  const month = monthOfDay(utcDayOf(Date.now()));
  // P.learned: 10 calls this month counted elsewhere, limit 10
  await fx.redis.set(monthKey(prefix, P.learned, month), '10');
  await fx.redis.hset(limitsKey(prefix), { [P.learned]: encodeLimit({ callsPerMonth: 10, overLimit: 'block' }), [P.shared]: encodeLimit({ callsPerMonth: 3, overLimit: 'block' }) });
  await sleep(400);
  t.equal((await call(s1, admin, 'GET', '/api/v1/works', P.learned)).status, 200, 'first call: the month total is not known yet');
  await eventually(async () => (await call(s1, admin, 'GET', '/api/v1/works?probe', P.learned)).status, (s) => s === 429, 2000);
  t.equal((await call(s1, admin, 'GET', '/api/v1/works', P.learned)).status, 429, 'after its flush: blocked');

  // P.shared: both sidecars have counted it once; s1 uses the rest; s2 learns it on its next reload
  t.equal((await call(s2, admin, 'GET', '/api/v1/works', P.shared)).status, 200);
  t.equal((await call(s1, admin, 'GET', '/api/v1/works', P.shared)).status, 200);
  await sleep(400);
  t.equal((await call(s1, admin, 'GET', '/api/v1/works', P.shared)).status, 200, 'the third call of three');
  t.equal((await call(s1, admin, 'GET', '/api/v1/works', P.shared)).status, 429, 'the fourth: blocked at s1');
  await sleep(400);
  t.equal((await call(s2, admin, 'GET', '/api/v1/works', P.shared)).status, 429, 'and at s2, after its reload');
});

t.test('Redis down: counting goes on in process, limits keep their values; flushed when Redis returns', async (t) => {
  const port = await freePort();
  let redis = await startPrivateRedis(port);
  const url = `redis://127.0.0.1:${port}/0`;
  const own = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1, retryStrategy: () => 200 });
  own.on('error', () => undefined);
  await own.connect();
  await own.hset(limitsKey(prefix), { [P.outage]: encodeLimit({ callsPerMonth: 5, overLimit: 'block' }) });
  const s = await startSidecar({ ...fx.env, REDIS_URL: url, REVOCATION_MAX_STALENESS_MS: '60000' });
  t.teardown(async () => {
    await s.close();
    own.disconnect();
    await redis.stop();
  });
  const since = Date.now();
  for (let i = 0; i < 2; i++) t.equal((await call(s, admin, 'GET', '/api/v1/works', P.outage)).status, 200);
  t.equal((await eventually(() => counts(own, P.outage, since), (v) => v.calls >= 2)).calls, 2, 'flushed while Redis is up');

  await redis.stop();
  await sleep(300);
  for (let i = 0; i < 3; i++) t.equal((await call(s, admin, 'GET', '/api/v1/works', P.outage)).status, 200, `call ${i + 3} of 5 while Redis is down`);
  t.equal((await call(s, admin, 'GET', '/api/v1/works', P.outage)).status, 429, 'the limit still holds: 2 flushed + 3 in process');
  for (let i = 0; i < 4; i++) t.equal((await call(s, admin, 'GET', '/api/v1/works', P.unlimited)).status, 200, 'an unlimited publisher is never refused');
  await sleep(300);
  t.ok((await metric(s, 'sidecar_metering_flushes_total', { result: 'failed' })) >= 1, 'failed flush rounds are reported');
  t.equal(await metric(s, 'sidecar_metering_unflushed_calls'), 7, 'the unflushed calls are reported');
  t.ok((await metric(s, 'sidecar_metering_flush_lag_seconds')) >= 0.3, 'so is the lag');

  redis = await startPrivateRedis(port); // empty: the 2 flushed before are gone with it
  await own.connect().catch(() => undefined);
  const outage = await eventually(() => counts(own, P.outage, since).catch(() => ({ calls: -1, clients: {} })), (v) => v.calls >= 3, 8000);
  t.equal(outage.calls, 3, 'the calls counted during the outage arrive');
  // a batch cut during the outage is retried as it was; the calls after it follow in the next flush
  t.equal((await eventually(() => counts(own, P.unlimited, since), (v) => v.calls >= 4, 8000)).calls, 4, 'and the unlimited publisher’s');
  t.equal(await eventually(() => metric(s, 'sidecar_metering_unflushed_calls'), (v) => v === 0), 0, 'nothing left unflushed');
  t.ok((await metric(s, 'sidecar_metering_flush_lag_seconds')) < 1, 'the lag is back under a second');
});

t.test('a flush that timed out but was applied is not applied again by its retry', async (t) => {
  const port = await freePort();
  const redis = await startPrivateRedis(port);
  const url = `redis://127.0.0.1:${port}/0`;
  const own = new Redis(url);
  const s = await startSidecar({ ...fx.env, REDIS_URL: url, METERING_COMMAND_TIMEOUT_MS: '150', REVOCATION_MAX_STALENESS_MS: '60000' });
  t.teardown(async () => {
    await s.close();
    own.disconnect();
    await redis.stop();
  });
  const since = Date.now();
  for (let i = 0; i < 3; i++) t.equal((await call(s, admin, 'GET', '/api/v1/works', P.paused)).status, 200);
  t.equal((await eventually(() => counts(own, P.paused, since), (v) => v.calls >= 3)).calls, 3);
  // Redis holds every command for 1.5 s: the next flush times out at the sidecar (150 ms), is
  // retried as it is every 100 ms, and all of them run when the pause ends
  await own.call('CLIENT', 'PAUSE', '1500', 'ALL');
  for (let i = 0; i < 4; i++) t.equal((await call(s, admin, 'GET', '/api/v1/works', P.paused)).status, 200, 'calls pass while Redis stalls');
  // (within the pause: the calls above no longer wait for the rate limits' Redis, so count from here)
  const failed = await eventually(() => metric(s, 'sidecar_metering_flushes_total', { result: 'failed' }), (v) => v >= 2, 1200);
  t.ok(failed >= 2, `the flush timed out (and was retried): ${failed} failed flushes`);
  t.equal(await eventually(() => metric(s, 'sidecar_metering_unflushed_calls'), (v) => v === 0, 8000), 0, 'confirmed once Redis answers');
  await sleep(300);
  t.equal((await counts(own, P.paused, since)).calls, 7, 'applied once: 3 + 4');
});

t.test('close flushes the last counts', async (t) => {
  const s = await startSidecar({ ...fx.env, METERING_FLUSH_INTERVAL_MS: '600000' });
  const since = Date.now();
  for (let i = 0; i < 5; i++) t.equal((await call(s, admin, 'GET', '/api/v1/works', P.closing)).status, 200);
  t.equal((await counts(fx.redis, P.closing, since)).calls, 0, 'not flushed yet (the timer is 10 min)');
  await s.close();
  t.equal((await counts(fx.redis, P.closing, since)).calls, 5, 'flushed on close');
});

t.test('the counters keep UTC days and months apart, and stay within their bounds', async (t) => {
  const dropped: number[] = [];
  const meter = createMeter({ maxKeys: 2, maxClientsPerDay: 1, instance: 'unit', onDrop: () => dropped.push(1) });
  const [a, b, c, x, y] = [randomUUID(), randomUUID(), randomUUID(), randomUUID(), randomUUID()];
  const end = Date.UTC(2026, 10, 30, 23, 59, 59, 900); // 100 ms before December (UTC)
  meter.setLimits(new Map([[a, { callsPerMonth: 2, overLimit: 'block' as const }]]));
  t.equal(meter.record(a, undefined, end, true), 'ok');
  t.equal(meter.record(a, x, end, true), 'ok');
  t.equal(meter.record(a, undefined, end, true), 'block', 'November: the limit is reached');
  t.equal(meter.record(a, undefined, end, false), 'warn', 'a call that may not be blocked: counted, warned');
  t.equal(meter.record(a, undefined, end + 200, true), 'ok', 'December: a new month, a new limit');
  t.equal(meter.record(a, x, end + 300, true), 'ok');
  t.equal(meter.record(a, y, end + 300, false), 'warn', 'a second API client that day is not counted per client …');
  t.equal(meter.record(b, undefined, end + 400, true), 'ok', '… and a third key (publisher or unflushed day) not at all');
  t.equal(dropped.length, 2, 'both reported');
  const view = (list: ReturnType<typeof meter.cut>) => list.map((d) => [d.day, d.outstanding!.seq, d.outstanding!.calls]);
  const first = meter.cut(end + 500);
  t.same(view(first), [['2026-11-30', 1, 3], ['2026-12-01', 2, 3]], 'one batch per publisher-day, each its own seq');
  t.same(first.map((d) => Object.fromEntries(d.outstanding!.clients ?? [])), [{ [x]: 1 }, { [x]: 1 }], 'with its API clients');
  t.same(view(meter.cut(end + 600)), [['2026-11-30', 1, 3], ['2026-12-01', 2, 3]], 'unconfirmed batches are retried as they are');
  t.equal(meter.record(a, undefined, end + 700, false), 'warn');
  t.same(view(meter.cut(end + 800)), [['2026-11-30', 1, 3], ['2026-12-01', 2, 3]], 'new calls wait behind the unconfirmed batch of their day');
  for (const d of meter.cut(end + 900)) meter.acknowledge(d, d.day === '2026-12-01' ? 3 : 2);
  t.same(view(meter.cut(end + 1000)), [['2026-12-01', 3, 1]], 'confirmed: the waiting call goes out');
  t.equal(meter.record(c, undefined, end + 1100, true), 'ok', 'the November key is gone: room for another publisher');
  t.equal(dropped.length, 2);
  t.same(meter.stats(), { unflushed: 2, dropped: 2, keys: 2 });
});

t.test('metrics: flush rounds, lag, unflushed calls, limits age', async (t) => {
  const s = fx.sidecars[0]!;
  t.ok((await metric(s, 'sidecar_metering_flushes_total', { result: 'ok' })) > 0);
  t.equal(await metric(s, 'sidecar_metering_flushes_total', { result: 'failed' }), 0);
  t.ok((await metric(s, 'sidecar_metering_flush_lag_seconds')) < 1);
  t.ok((await metric(s, 'sidecar_metering_limits_age_seconds')) < 1);
  t.equal(await metric(s, 'sidecar_metering_dropped_total'), 0);
  t.ok((await metric(s, 'sidecar_metering_limit_reloads_total', { result: 'ok' })) > 0);
});

/**
 * Request rate limits at the sidecar (stages/rate-limit.ts; docs/CONTRACTS.md, "Rate limits")
 * against real Redis and OpenFGA: per subject, per publisher and per client IP, each on its own
 * (a limited subject does not limit another of the same publisher; a publisher's limit across its
 * subjects, spent only by authorized requests; the IP limit before authentication); per-rule limits
 * over the defaults in buckets of their own; the RateLimit fields (the most restrictive limit,
 * decreasing) and 429 + Retry-After (honoured: allowed again after it) on the proxy and /ext-authz;
 * two sidecars sharing the counters; Redis stopped (a private redis-server) → local limits, then
 * recovery; Redis slow → counted locally within the command timeout; a limited request neither
 * reaches the upstream nor is metered. Plus the text form, the route-rule schema and client keys.
 */
import t, { type Test } from 'tap';
import { randomUUID } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { dayKey, utcDayOf } from '../../policies/src/metering.ts';
import { formatRateLimit, parseRateLimit, rateLimitKey, ruleBucket } from '../../policies/src/rate-limits.ts';
import { parseRouteRules } from '../../policies/src/routes.ts';
import { loadConfig } from '../../sidecar/src/config.ts';
import { createRateLimits, ipKey } from '../../sidecar/src/stages/rate-limit.ts';
import { freePort, raw, startPrivateRedis, startSidecar, useSidecarFixture, type RawResponse, type Sidecar } from './helpers.ts';

const ROUTES = `version: 1
routes:
  - { method: GET, path: /docs/*, public: true }
  - { method: GET, path: /login, public: true, rate_limit: { ip: 3/min } }
  - { method: GET, path: /quick/*, public: true, rate_limit: { ip: 2/2s } }
  - { method: GET, path: /api/v1/users/me, authenticated: true }
  - { method: GET, path: /api/v1/works, relation: works_read, object: "publisher:{publisher}" }
  - { method: POST, path: /api/v1/works, relation: works_create, object: "publisher:{publisher}", rate_limit: { subject: 2/min } }
  - { method: GET, path: "/api/v1/publishers/{publisherId}", relation: publishers_read, object: "publisher:{publisherId}" }
`;

const NAMES = ['one', 'two', 'three', 'shared', 'rule', 'retry', 'down'] as const;
/** One publisher per test, so their counters are their own. */
const P = Object.fromEntries(NAMES.map((k) => [k, randomUUID()])) as Record<(typeof NAMES)[number], string>;
/** Subjects: editors of the publisher named in their key's prefix. */
const U = {
  a: randomUUID(), b: randomUUID(), // P.one
  c: randomUUID(), d: randomUUID(), e: randomUUID(), // P.two
  f: randomUUID(), // P.rule
  g: randomUUID(), // P.shared
  h: randomUUID(), // P.retry
  k: randomUUID(), l: randomUUID(), m: randomUUID(), // P.down
  stranger: randomUUID(), // no role anywhere
};
const members: [string, string][] = [
  [U.a, P.one], [U.b, P.one], [U.c, P.two], [U.d, P.two], [U.e, P.two], [U.f, P.rule], [U.g, P.shared], [U.h, P.retry],
  [U.k, P.down], [U.l, P.down], [U.m, P.down],
];
const prefix = `rltest-${randomUUID()}`;
const meterPrefix = `rlmeter-${randomUUID()}`;

const fx = useSidecarFixture(t, {
  sidecars: 2,
  tuples: members.map(([u, p]) => ({ user: `user:${u}`, relation: 'editor', object: `publisher:${p}` })),
  env: {
    RATE_LIMIT_KEY_PREFIX: prefix,
    RATE_LIMIT_IP: '8/min',
    RATE_LIMIT_SUBJECT: '4/min',
    RATE_LIMIT_PUBLISHER: '6/min',
    // the tests are one loopback peer: X-Forwarded-For gives each test client addresses of its own
    TRUSTED_PROXIES: '127.0.0.1',
    // a busy 2-core machine: never fall back to local counting by accident here
    RATE_LIMIT_COMMAND_TIMEOUT_MS: '1000',
    METERING_KEY_PREFIX: meterPrefix,
    METERING_FLUSH_INTERVAL_MS: '100',
  },
});
writeFileSync(fx.tmp.routesFile, ROUTES);

let ipCounter = 0;
/** A client address of its own (TEST-NET-3, RFC 5737). */
const newIp = () => `203.0.113.${++ipCounter}`;

const tokens = new Map<string, string>();
async function bearer(sub: string): Promise<string> {
  if (!tokens.has(sub)) tokens.set(sub, await fx.issuer.token(sub));
  return `Bearer ${tokens.get(sub)}`;
}

type CallOpts = { sub?: string; publisher?: string; ip?: string; method?: string };
async function call(s: Sidecar, path: string, o: CallOpts = {}): Promise<RawResponse> {
  const headers: Record<string, string> = {};
  if (o.sub) headers.authorization = await bearer(o.sub);
  if (o.publisher) headers['x-publisher-id'] = o.publisher;
  if (o.ip) headers['x-forwarded-for'] = o.ip;
  return raw(s.port, o.method ?? 'GET', path, headers, o.method === 'POST' ? Buffer.from('{}') : undefined);
}

/** The RateLimit fields of an answer as numbers (NaN when absent). */
const fields = (r: RawResponse) => ({
  limit: Number(r.headers['ratelimit-limit']),
  remaining: Number(r.headers['ratelimit-remaining']),
  reset: Number(r.headers['ratelimit-reset']),
});

/** One sample of `name` with every label in `labels` from a sidecar's admin /metrics (0 when absent). */
async function metric(s: Sidecar, name: string, labels: Record<string, string> = {}): Promise<number> {
  const text = (await raw(s.adminPort, 'GET', '/metrics')).text;
  const line = text.split('\n').find((l) => l.startsWith(`${name}{`) && Object.entries(labels).every(([k, v]) => l.includes(`${k}="${v}"`)));
  return line ? Number(line.split(' ').pop()) : 0;
}

/** The calls metered for `publisher` today (flushed every 100 ms), once two reads 300 ms apart agree. */
async function metered(publisher: string): Promise<number> {
  const read = async () => Number((await fx.redis.hget(dayKey(meterPrefix, publisher, utcDayOf(Date.now())), 'calls')) ?? 0);
  let last = -1;
  for (let i = 0; i < 30; i++) {
    const now = await read();
    if (now === last) return now;
    last = now;
    await sleep(300);
  }
  return last;
}

function isTooMany(t: Test, r: RawResponse, msg: string) {
  t.equal(r.status, 429, `${msg}: 429`);
  t.match(r.headers['content-type'], /^application\/problem\+json/, `${msg}: problem+json`);
  t.equal(r.json().type, 'https://errors.music-publishing.example/too-many-requests', `${msg}: too-many-requests`);
  const retry = Number(r.headers['retry-after']);
  t.ok(retry >= 1 && Number.isInteger(retry), `${msg}: Retry-After ${r.headers['retry-after']} s`);
  t.equal(fields(r).remaining, 0, `${msg}: RateLimit-Remaining 0`);
  t.equal(fields(r).reset, retry, `${msg}: RateLimit-Reset = Retry-After`);
}

// ---------------------------------------------------------------------------------------------
t.test('the text form of a limit', async (t) => {
  t.same(parseRateLimit('600/min'), { points: 600, seconds: 60 });
  t.same(parseRateLimit('20/s'), { points: 20, seconds: 1 });
  t.same(parseRateLimit('100/10s'), { points: 100, seconds: 10 });
  t.same(parseRateLimit(' 900/15min '), { points: 900, seconds: 900 });
  t.same(parseRateLimit('5000/h'), { points: 5000, seconds: 3600 });
  t.same(parseRateLimit('1/24h'), { points: 1, seconds: 86_400 });
  t.equal(parseRateLimit('off'), 'off');
  for (const bad of ['', '600', '600/', '0/min', '-1/min', '1.5/min', '600/day', '600/m', '600 per min', '1/25h', '1/0s', '1000000000/s', 'OFF']) {
    t.throws(() => parseRateLimit(bad), { message: /must be <requests>\/<window>/ }, `rejects ${JSON.stringify(bad)}`);
  }
  for (const s of ['600/min', '20/s', '100/10s', '900/15min', '5000/h', '7/90s', 'off']) t.equal(formatRateLimit(parseRateLimit(s)), s, `round trip ${s}`);
  t.equal(ruleBucket('GET', '/api/v1/works/{id}'), 'GET:/api/v1/works/:id', 'no brace of the path in a key');
  t.equal(rateLimitKey('rl', 'subject', 'abc', 'default'), 'rl:{subject:abc}:default', 'one hash tag per counted key');
});

t.test('route rules: rate_limit is validated strictly', async (t) => {
  const doc = (rule: Record<string, unknown>) => JSON.stringify({ version: 1, routes: [rule] });
  const works = { method: 'GET', path: '/w', relation: 'works_read', object: 'publisher:{publisher}' };
  t.same(parseRouteRules(doc({ ...works, rate_limit: { ip: '10/s', subject: '600/min', publisher: 'off' } }))[0]!.rate_limit, {
    ip: { points: 10, seconds: 1 },
    subject: { points: 600, seconds: 60 },
    publisher: 'off',
  });
  t.same(parseRouteRules(doc({ ...works }))[0], works, 'no rate_limit: the rule is unchanged');
  const invalid: [string, Record<string, unknown>, RegExp][] = [
    ['an unknown kind', { ...works, rate_limit: { user: '1/s' } }, /routes\[0\] \(GET \/w\): rate_limit: unknown kind "user"; the kinds are ip, subject, publisher/],
    ['a bad limit', { ...works, rate_limit: { ip: '10/day' } }, /routes\[0\].*rate_limit\.ip: rate limit "10\/day" must be <requests>\/<window>/],
    ['a number', { ...works, rate_limit: { ip: 10 } }, /rate_limit\.ip: a rate limit must be a string such as 600\/min, or off/],
    ['not a map', { ...works, rate_limit: '10/s' }, /rate_limit: must map ip, subject, publisher to limits/],
    ['an empty map', { ...works, rate_limit: {} }, /rate_limit: name at least one of ip, subject, publisher/],
    ['subject on a public rule', { method: 'GET', path: '/p', public: true, rate_limit: { subject: '1/s' } }, /a public rule has no subject or publisher to limit/],
    ['publisher on a public rule', { method: 'GET', path: '/p', public: true, rate_limit: { publisher: '1/s' } }, /a public rule has no subject or publisher/],
    ['publisher on an authenticated-only rule', { method: 'GET', path: '/me', authenticated: true, rate_limit: { publisher: '1/s' } }, /an authenticated-only rule has no publisher to limit/],
  ];
  for (const [name, rule, message] of invalid) t.throws(() => parseRouteRules(doc(rule), 'r.yaml'), { message }, name);
  t.doesNotThrow(() => parseRouteRules(doc({ method: 'GET', path: '/me', authenticated: true, rate_limit: { ip: '1/s', subject: 'off' } })));
});

t.test('configuration: defaults and clear errors', async (t) => {
  const c = loadConfig({});
  t.same(c.rateLimits.defaults, { ip: { points: 30_000, seconds: 60 }, subject: { points: 6000, seconds: 60 }, publisher: { points: 60_000, seconds: 60 } });
  t.same(c.rateLimits.trustedProxies, []);
  t.equal(loadConfig({ RATE_LIMIT_SUBJECT: 'off' }).rateLimits.defaults.subject, 'off');
  t.throws(() => loadConfig({ RATE_LIMIT_IP: 'lots' }), { message: /RATE_LIMIT_IP: rate limit "lots" must be/ });
  t.throws(() => loadConfig({ TRUSTED_PROXIES: '10.0.0.0/8, proxy.local' }), { message: /TRUSTED_PROXIES\.1: each entry must be an IP address or a CIDR block/ });
});

t.test('client keys: IPv4, mapped IPv4, IPv6 /64; X-Forwarded-For only from trusted proxies', async (t) => {
  t.equal(ipKey('192.0.2.7'), '192.0.2.7');
  t.equal(ipKey('::ffff:192.0.2.7'), '192.0.2.7', 'an IPv4-mapped address is the IPv4 client');
  t.equal(ipKey('2001:db8:1:2:3:4:5:6'), '2001:db8:1:2::/64');
  t.equal(ipKey('2001:db8:1:2::9'), '2001:db8:1:2::/64', 'one /64 is one client');
  t.equal(ipKey('2001:DB8::1'), '2001:db8:0:0::/64');
  t.equal(ipKey('::1'), '0:0:0:0::/64');
  t.equal(ipKey('64:ff9b::192.0.2.1'), '64:ff9b:0:0::/64', 'embedded IPv4');
  t.equal(ipKey('fe80::1%eth0'), 'fe80:0:0:0::/64', 'zone id dropped');
  t.equal(ipKey('not-an-ip'), undefined);
  t.equal(ipKey(undefined), undefined);

  const redis = new Redis({ lazyConnect: true });
  const limits = createRateLimits({ redis, prefix: 'x', defaults: { ip: 'off', subject: 'off', publisher: 'off' }, trustedProxies: ['127.0.0.1', '10.0.0.0/8', '::1'] });
  const xff = (v: string) => ({ 'x-forwarded-for': v });
  t.equal(limits.clientAddress('192.0.2.1', xff('198.51.100.9')), '192.0.2.1', 'an untrusted peer: its X-Forwarded-For is ignored');
  t.equal(limits.clientAddress('127.0.0.1', xff('198.51.100.9')), '198.51.100.9', 'a trusted peer names the client');
  t.equal(limits.clientAddress('::ffff:127.0.0.1', xff('198.51.100.9')), '198.51.100.9', 'also as an IPv4-mapped peer');
  t.equal(limits.clientAddress('127.0.0.1', xff('6.6.6.6, 198.51.100.9, 10.1.2.3')), '198.51.100.9', 'the rightmost address no trusted proxy added (a spoofed first entry is ignored)');
  t.equal(limits.clientAddress('127.0.0.1', { 'x-forwarded-for': ['6.6.6.6', '198.51.100.9'] }), '198.51.100.9', 'repeated fields read as one list');
  t.equal(limits.clientAddress('127.0.0.1', xff('10.0.0.1, 10.0.0.2')), '10.0.0.1', 'only proxies: the leftmost');
  t.equal(limits.clientAddress('127.0.0.1', xff('198.51.100.9, garbage')), '127.0.0.1', 'garbage: the last trusted hop');
  t.equal(limits.clientAddress('127.0.0.1', {}), '127.0.0.1', 'no X-Forwarded-For: the peer');
  t.equal(limits.clientAddress('::1', xff('2001:db8::5')), '2001:db8::5', 'IPv6 proxies');
  t.throws(() => createRateLimits({ redis, prefix: 'x', defaults: { ip: 'off', subject: 'off', publisher: 'off' }, trustedProxies: ['proxy'] }), { message: /not an IP address or CIDR block: proxy/ });
  redis.disconnect();
});

// ---------------------------------------------------------------------------------------------
t.test('per subject: subject A over its limit does not limit subject B of the same publisher', async (t) => {
  const [s] = fx.sidecars as [Sidecar];
  const seen = fx.upstream.received.length;
  const before = await metric(s, 'sidecar_rate_limited_total', { kind: 'subject' });
  const ipA = newIp();
  let lastReset = Infinity;
  for (let i = 0; i < 4; i++) {
    const r = await call(s, '/api/v1/works', { sub: U.a, publisher: P.one, ip: ipA });
    t.equal(r.status, 200, `A #${i + 1} allowed`);
    // ip 8, subject 4, publisher 6: the subject's limit is the most restrictive
    const f = fields(r);
    t.same({ limit: f.limit, remaining: f.remaining }, { limit: 4, remaining: 3 - i }, `A #${i + 1}: RateLimit-Limit 4, RateLimit-Remaining ${3 - i}`);
    t.ok(f.reset > 0 && f.reset <= 60 && f.reset <= lastReset, `RateLimit-Reset ${f.reset} s: within the window, not growing`);
    lastReset = f.reset;
  }
  const over = await call(s, '/api/v1/works', { sub: U.a, publisher: P.one, ip: ipA });
  isTooMany(t, over, 'A #5');
  t.equal(fields(over).limit, 4);
  t.ok(Number(over.headers['retry-after']) <= 60, 'Retry-After within the minute window');
  t.match(over.json().detail, /subject/);
  t.equal(await metric(s, 'sidecar_rate_limited_total', { kind: 'subject' }), before + 1, 'sidecar_rate_limited_total{kind="subject"}');

  const b = await call(s, '/api/v1/works', { sub: U.b, publisher: P.one, ip: newIp() });
  t.equal(b.status, 200, 'B of the same publisher is allowed');
  // B: subject 3 left, the publisher (A's 4 allowed + B's 1 of 6) 1 left: now the publisher's is the tightest
  t.same({ limit: fields(b).limit, remaining: fields(b).remaining }, { limit: 6, remaining: 1 }, "B's answer shows the publisher's limit, the most restrictive");
  t.equal(fx.upstream.received.length - seen, 5, 'the upstream saw the 5 allowed requests, not the limited one');
  t.equal(await metered(P.one), 5, 'the limited request was not metered');
});

t.test('per publisher: the limit holds across its subjects, and only authorized requests spend it', async (t) => {
  const [s] = fx.sidecars as [Sidecar];
  const seen = fx.upstream.received.length;
  // a stranger naming P.two is refused by authorization and does not spend P.two's budget
  for (let i = 0; i < 3; i++) t.equal((await call(s, '/api/v1/works', { sub: U.stranger, publisher: P.two, ip: newIp() })).status, 403, 'stranger: 403');
  t.equal((await call(s, '/api/v1/works', { sub: U.c, publisher: P.two, ip: newIp() })).status, 200, 'C');
  t.equal((await call(s, '/api/v1/works', { sub: U.c, publisher: P.two, ip: newIp() })).status, 200, 'C');
  const path = await call(s, `/api/v1/publishers/${P.two}`, { sub: U.c, ip: newIp() });
  t.equal(path.status, 200, 'C, the publisher named by the path (no context header)');
  for (let i = 0; i < 3; i++) t.equal((await call(s, '/api/v1/works', { sub: U.d, publisher: P.two, ip: newIp() })).status, 200, `D #${i + 1}`);
  const e = await call(s, '/api/v1/works', { sub: U.e, publisher: P.two, ip: newIp() });
  isTooMany(t, e, 'E, under its own subject limit, over the publisher limit (6)');
  t.equal(fields(e).limit, 6);
  t.match(e.json().detail, /publisher/);
  t.equal((await call(s, '/api/v1/works', { sub: U.e, publisher: P.one, ip: newIp() })).status, 403, 'E elsewhere: decided as usual (no role at P.one), not limited');
  t.equal(fx.upstream.received.length - seen, 6, 'the upstream saw the 6 allowed requests');
  t.equal(await metered(P.two), 6, 'the limited request was not metered');
});

t.test('per client IP: limited before authentication, on every route', async (t) => {
  const [s] = fx.sidecars as [Sidecar];
  const seen = fx.upstream.received.length;
  const ip = newIp();
  for (let i = 0; i < 8; i++) {
    const r = await call(s, '/api/v1/works', { publisher: P.three, ip });
    t.equal(r.status, 401, `unauthenticated #${i + 1}: 401`);
    t.same({ limit: fields(r).limit, remaining: fields(r).remaining }, { limit: 8, remaining: 7 - i }, 'the IP limit on a 401');
  }
  isTooMany(t, await call(s, '/api/v1/works', { publisher: P.three, ip }), 'unauthenticated #9: limited before the token is looked at');
  isTooMany(t, await call(s, '/api/v1/works', { sub: U.a, publisher: P.one, ip }), 'a valid token from that address: limited too');
  isTooMany(t, await call(s, '/docs/x', { ip }), 'a public route from that address');
  t.equal((await call(s, '/api/v1/works', { publisher: P.three, ip: newIp() })).status, 401, 'another address: not limited');
  t.equal((await call(s, '/docs/x', { ip: `${ip}, 127.0.0.1` })).status, 429, 'the same client behind a second trusted proxy hop');
  t.equal(fx.upstream.received.length - seen, 0, 'nothing reached the upstream');
});

t.test('per client IP: X-Forwarded-For is ignored without trusted proxies', async (t) => {
  const s = await startSidecar({ ...fx.env, TRUSTED_PROXIES: '', RATE_LIMIT_KEY_PREFIX: `rltest-peer-${randomUUID()}`, RATE_LIMIT_IP: '3/min' });
  t.teardown(() => s.close());
  for (let i = 0; i < 3; i++) t.equal((await call(s, '/docs/x', { ip: newIp() })).status, 200, `#${i + 1}: a new X-Forwarded-For each time`);
  isTooMany(t, await call(s, '/docs/x', { ip: newIp() }), '#4: all counted against the TCP peer');
});

t.test('per-rule limits override the defaults, in buckets of their own', async (t) => {
  const [s] = fx.sidecars as [Sidecar];
  const ip = newIp();
  for (let i = 0; i < 3; i++) {
    const r = await call(s, '/login', { ip });
    t.equal(r.status, 200, `/login #${i + 1}`);
    t.same({ limit: fields(r).limit, remaining: fields(r).remaining }, { limit: 3, remaining: 2 - i }, "the rule's own ip limit (3/min), not the default (8)");
  }
  isTooMany(t, await call(s, '/login', { ip }), '/login #4');
  const docs = await call(s, '/docs/x', { ip });
  t.equal(docs.status, 200, 'the same address on a rule with the default limit: its own bucket');
  t.same({ limit: fields(docs).limit, remaining: fields(docs).remaining }, { limit: 8, remaining: 7 }, 'the default bucket was not spent by /login');

  const seen = fx.upstream.received.length;
  for (let i = 0; i < 2; i++) {
    const r = await call(s, '/api/v1/works', { method: 'POST', sub: U.f, publisher: P.rule, ip: newIp() });
    t.equal(r.status, 200, `POST #${i + 1}`);
    t.same({ limit: fields(r).limit, remaining: fields(r).remaining }, { limit: 2, remaining: 1 - i }, 'the rule’s subject limit (2/min)');
  }
  isTooMany(t, await call(s, '/api/v1/works', { method: 'POST', sub: U.f, publisher: P.rule, ip: newIp() }), 'POST #3');
  const get = await call(s, '/api/v1/works', { sub: U.f, publisher: P.rule, ip: newIp() });
  t.equal(get.status, 200, 'GET by the same subject: the default bucket');
  t.equal(fields(get).remaining, 3, 'subject: 3 of 4 left in the default bucket');
  t.equal(fx.upstream.received.length - seen, 3, 'the limited POST did not reach the upstream');
});

t.test('Retry-After is honoured: after it, allowed again', async (t) => {
  const [s] = fx.sidecars as [Sidecar];
  const ip = newIp();
  t.equal((await call(s, '/quick/1', { ip })).status, 200);
  t.equal((await call(s, '/quick/2', { ip })).status, 200);
  const over = await call(s, '/quick/3', { ip });
  isTooMany(t, over, 'third within the 2 s window');
  const retry = Number(over.headers['retry-after']);
  t.ok(retry <= 2, `Retry-After ${retry} s ≤ the window`);
  t.equal((await call(s, '/quick/4', { ip })).status, 429, 'still limited before Retry-After');
  await sleep(retry * 1000 + 50);
  const again = await call(s, '/quick/5', { ip });
  t.equal(again.status, 200, 'allowed after Retry-After');
  t.same({ limit: fields(again).limit, remaining: fields(again).remaining }, { limit: 2, remaining: 1 }, 'a new window');
});

t.test('two sidecars share the counters; /ext-authz answers the same', async (t) => {
  const [s1, s2] = fx.sidecars as [Sidecar, Sidecar];
  const seen = fx.upstream.received.length;
  const remaining: number[] = [];
  for (const [s, path] of [[s1, '/api/v1/works'], [s2, '/ext-authz/api/v1/works'], [s1, '/api/v1/works'], [s2, '/api/v1/works']] as const) {
    const r = await call(s, path, { sub: U.g, publisher: P.shared, ip: newIp() });
    t.equal(r.status, 200, `${s === s1 ? 'sidecar 1' : 'sidecar 2'} ${path}`);
    remaining.push(fields(r).remaining);
  }
  t.same(remaining, [3, 2, 1, 0], 'one count across both sidecars and both entry points');
  const ext = await call(s1, '/ext-authz/api/v1/works', { sub: U.g, publisher: P.shared, ip: newIp() });
  isTooMany(t, ext, '/ext-authz on sidecar 1');
  t.equal(ext.headers['x-identity-assertion'], undefined, 'no assertion on a refusal');
  isTooMany(t, await call(s2, '/api/v1/works', { sub: U.g, publisher: P.shared, ip: newIp() }), 'the proxy on sidecar 2');
  t.equal(fx.upstream.received.length - seen, 3, 'the upstream saw the three proxied allowed requests (ext-authz forwards nothing)');
  const keys = await fx.redis.keys(`${prefix}:{subject:*}:default`);
  t.ok(keys.length >= 1, `the counters live in Redis with one hash tag per key (${keys[0]})`);
});

// ---------------------------------------------------------------------------------------------
/** Poll `probe` every 100 ms until true or `ms` pass. */
async function until(ms: number, probe: () => Promise<boolean>): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await probe()) return true;
    await sleep(100);
  }
  return false;
}

t.test('Redis stopped → local limits still enforce (never unlimited); Redis back → shared counters again', async (t) => {
  const port = await freePort();
  let redis = await startPrivateRedis(port);
  const pfx = `rltest-down-${randomUUID()}`;
  const env = {
    ...fx.env,
    REDIS_URL: `redis://127.0.0.1:${port}/0`,
    RATE_LIMIT_KEY_PREFIX: pfx,
    RATE_LIMIT_SUBJECT: '3/min',
    RATE_LIMIT_IP: 'off',
    RATE_LIMIT_PUBLISHER: 'off',
    // the outage outlasts the revocation view's default bound (5 s): not what this test is about
    REVOCATION_MAX_STALENESS_MS: '600000',
  };
  const s1 = await startSidecar(env);
  const s2 = await startSidecar(env);
  const probe = new Redis({ port, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => 100 });
  probe.on('error', () => undefined);
  t.teardown(async () => {
    probe.disconnect();
    await s1.close();
    await s2.close();
    await redis.stop();
  });
  await probe.connect();
  const works = (s: Sidecar, sub: string) => call(s, '/api/v1/works', { sub, publisher: P.down });

  // up: one count across both sidecars
  t.same([(await works(s1, U.k)).status, (await works(s2, U.k)).status, (await works(s1, U.k)).status], [200, 200, 200], 'up: 3 allowed across both');
  isTooMany(t, await works(s2, U.k), 'up: the 4th on the other sidecar');

  await redis.stop();
  const localBefore = await metric(s1, 'sidecar_rate_limit_local_total', { kind: 'subject' });
  const started = Date.now();
  const down = [];
  for (let i = 0; i < 3; i++) down.push((await works(s1, U.l)).status);
  t.same(down, [200, 200, 200], 'down: allowed up to the limit, counted in process');
  isTooMany(t, await works(s1, U.l), 'down: the 4th is refused — local limits, never unlimited');
  t.ok(Date.now() - started < 4000, `down: 4 requests in ${Date.now() - started} ms (no wait for Redis)`);
  t.ok((await metric(s1, 'sidecar_rate_limit_local_total', { kind: 'subject' })) >= localBefore + 4, 'sidecar_rate_limit_local_total{kind="subject"} counts them');
  const other = [];
  for (let i = 0; i < 3; i++) other.push((await works(s2, U.l)).status);
  t.same(other, [200, 200, 200], 'down: the other sidecar counts on its own (limits per process)');
  isTooMany(t, await works(s2, U.l), 'down: and refuses past the limit too');

  redis = await startPrivateRedis(port);
  // back: each sidecar counts in Redis again (a fresh subject per probe: unknown users are counted, then 403)
  const counting = async (s: Sidecar) =>
    until(15_000, async () => {
      const keys = () => probe.keys(`${pfx}:*`).then((k) => k.length, () => NaN);
      const before = await keys();
      await works(s, randomUUID());
      return (await keys()) > before;
    });
  t.ok(await counting(s1), 'sidecar 1 counts in Redis again');
  t.ok(await counting(s2), 'sidecar 2 counts in Redis again');
  t.same([(await works(s1, U.m)).status, (await works(s2, U.m)).status, (await works(s1, U.m)).status], [200, 200, 200], 'back: 3 allowed across both');
  isTooMany(t, await works(s2, U.m), 'back: shared counters again');
});

t.test('Redis slow → counted in process within the command timeout; limits still enforced', async (t) => {
  const port = await freePort();
  const redis = await startPrivateRedis(port);
  const timeoutMs = 200;
  const s = await startSidecar({
    ...fx.env,
    REDIS_URL: `redis://127.0.0.1:${port}/0`,
    RATE_LIMIT_KEY_PREFIX: `rltest-slow-${randomUUID()}`,
    TRUSTED_PROXIES: '',
    RATE_LIMIT_IP: '3/min',
    RATE_LIMIT_COMMAND_TIMEOUT_MS: String(timeoutMs),
  });
  const blocker = new Redis({ port, host: '127.0.0.1' });
  t.teardown(async () => {
    blocker.disconnect();
    await s.close();
    await redis.stop();
  });
  t.equal((await call(s, '/docs/a')).status, 200, 'Redis fast: counted there (1 of 3)');
  // A script that keeps Redis busy for 3 s: every other client waits (it does not answer BUSY
  // before busy-reply-threshold, 5 s).
  const busy = blocker.eval(
    "local s = redis.call('TIME'); local stop = s[1] * 1000000 + s[2] + ARGV[1] * 1000; while true do local n = redis.call('TIME'); if n[1] * 1000000 + n[2] >= stop then return 1 end end",
    0,
    3000,
  );
  await sleep(200);
  const timed = async (path: string) => {
    const t0 = performance.now();
    const r = await call(s, path);
    return { status: r.status, ms: performance.now() - t0 };
  };
  const first = await timed('/docs/b');
  const rest = [await timed('/docs/c'), await timed('/docs/d'), await timed('/docs/e')];
  t.equal(first.status, 200, 'slow Redis: the first request is counted locally (1 of 3 in process)');
  t.ok(first.ms < timeoutMs + 500, `it waited for Redis at most the command timeout (${first.ms.toFixed(0)} ms; Redis is busy for 3000 ms)`);
  t.same(rest.map((r) => r.status), [200, 200, 429], 'the local limit (3) still holds');
  const median = rest.map((r) => r.ms).sort((a, b) => a - b)[1]!;
  t.ok(median < timeoutMs, `the next requests do not ask the slow Redis at all (median ${median.toFixed(0)} ms < ${timeoutMs} ms)`);
  t.ok((await metric(s, 'sidecar_rate_limit_local_total', { kind: 'ip' })) >= 4, 'counted locally');
  t.equal(await busy, 1, 'the busy script ended');
});

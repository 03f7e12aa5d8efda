/**
 * Rate-limit leases (stages/rate-limit-leases.ts) through the rate-limit stage against the real
 * Redis: a busy key costs one Redis command per lease, not per request; the sidecars together
 * never admit more than the limit, and when each keeps asking they admit exactly the limit; small
 * limits (and the last requests of any limit) are counted one by one; concurrent requests of a key
 * share one reservation; a lease dies with its window.
 */
import t from 'tap';
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseRouteRules } from '../../policies/src/routes.ts';
import { createRedisClient } from '../../policies/src/redis.ts';
import { loadConfig } from '../../sidecar/src/config.ts';
import { LEASE_DIVISOR, TokenLeases } from '../../sidecar/src/stages/rate-limit-leases.ts';
import { createRateLimits, rateLimitStage, type RateLimits, type RateLimitVerdict } from '../../sidecar/src/stages/rate-limit.ts';
import { ProblemError } from '../../sidecar/src/problem.ts';

const config = loadConfig(process.env);
const redis = createRedisClient(config.redis, { lazyConnect: true, commandTimeout: 2000 });
t.teardown(() => redis.disconnect());
const prefix = `rllease-${randomUUID()}`;

const rules = parseRouteRules(`version: 1
routes:
  - { method: GET, path: /api/v1/works, relation: works_read, object: "publisher:{publisher}", rate_limit: { publisher: 6000/min } }
  - { method: GET, path: /small, relation: works_read, object: "publisher:{publisher}", rate_limit: { publisher: 5/min } }
  - { method: GET, path: /mid, relation: works_read, object: "publisher:{publisher}", rate_limit: { publisher: 500/min } }
  - { method: GET, path: /short, relation: works_read, object: "publisher:{publisher}", rate_limit: { publisher: 3200/s } }
`);
const [works, small, mid, short] = rules.map((rule) => ({ rule, params: {} })) as [never, never, never, never];

/** One sidecar's limits: its own leases on the shared Redis; counts its reservations. */
function sidecar(maxLease = 64) {
  let reservations = 0;
  const limits = createRateLimits({
    redis,
    prefix,
    defaults: { ip: 'off', subject: 'off', publisher: 'off' },
    trustedProxies: [],
    maxLease,
    onReserve: () => reservations++,
  });
  return { limits, reservations: () => reservations };
}

/** One request of `publisher` on `match`: its verdict, or 'limited'. */
async function request(limits: RateLimits, match: never, publisher: string): Promise<RateLimitVerdict | 'limited'> {
  try {
    return (await rateLimitStage(limits, match, { kind: 'publisher', contextPublisher: publisher }, undefined, () => undefined))!;
  } catch (err) {
    if (err instanceof ProblemError && err.status === 429) return 'limited';
    throw err;
  }
}

/** The shared counter of `publisher` on `path` in Redis. */
async function counter(publisher: string): Promise<number> {
  const keys = await redis.keys(`${prefix}:{publisher:${publisher}}:*`);
  return keys.length === 1 ? Number(await redis.get(keys[0]!)) : NaN;
}

await redis.connect().catch(() => undefined);

t.test('lease sizes: up to the maximum far from the limit, one by one near it', async (t) => {
  const leases = new TokenLeases({ maxLease: 64 });
  t.equal(leases.leaseSize(6000), 64, 'far from the limit: the maximum');
  t.equal(leases.leaseSize(1000), Math.floor(1000 / LEASE_DIVISOR), `1/${LEASE_DIVISOR} of what is left`);
  t.equal(leases.leaseSize(LEASE_DIVISOR * 2 - 1), 1);
  t.equal(leases.leaseSize(5), 1, 'a small limit: every request counted in Redis');
  t.equal(leases.leaseSize(0), 1);
  t.equal(new TokenLeases({ maxLease: 1 }).leaseSize(1e6), 1, 'maxLease 1: no leases');
  t.throws(() => new TokenLeases({ maxLease: 0 }), { message: /maxLease must be a positive integer/ });
  t.equal(loadConfig({}).rateLimits.maxLease, 64, 'RATE_LIMIT_LEASE_MAX defaults to 64');
  t.throws(() => loadConfig({ RATE_LIMIT_LEASE_MAX: '0' }), { message: /RATE_LIMIT_LEASE_MAX/ });
});

t.test('a busy key: one Redis command per lease; RateLimit-Remaining counts down by one', async (t) => {
  const s = sidecar();
  const p = randomUUID();
  const remaining: number[] = [];
  for (let i = 0; i < 1000; i++) {
    const v = await request(s.limits, works, p);
    if (v === 'limited') throw new Error(`request ${i + 1} limited`);
    remaining.push(v.remaining);
  }
  t.same(remaining, Array.from({ length: 1000 }, (_, i) => 5999 - i), 'remaining = 6000 − requests so far, every answer');
  t.ok(s.reservations() <= Math.ceil(1000 / 64) + 1, `1,000 requests → ${s.reservations()} Redis commands (leases of up to 64)`);
  const c = await counter(p);
  t.ok(c >= 1000 && c < 1000 + 64, `the shared counter (${c}) holds every request spent, plus at most one unspent lease`);
});

t.test('two sidecars asking in turn admit exactly the limit, then both refuse', async (t) => {
  const a = sidecar();
  const b = sidecar();
  const p = randomUUID();
  let allowed = 0;
  let limited = 0;
  for (let i = 0; i < 600; i++) {
    const v = await request(i % 2 ? b.limits : a.limits, mid, p);
    if (v === 'limited') limited++;
    else allowed++;
  }
  t.equal(allowed, 500, 'exactly the limit (500) admitted: none over, none lost in a lease');
  t.equal(limited, 100, 'the rest refused');
  t.same([await request(a.limits, mid, p), await request(b.limits, mid, p)], ['limited', 'limited'], 'both sidecars refuse now');
  t.ok(a.reservations() + b.reservations() < 500, `${a.reservations() + b.reservations()} Redis commands for 602 requests`);
});

t.test('no sidecar admits past the limit, whatever the others leased', async (t) => {
  const fleet = [sidecar(), sidecar(), sidecar()];
  const p = randomUUID();
  // one sidecar leases and goes quiet; the others drain the key
  t.not(await request(fleet[0]!.limits, mid, p), 'limited');
  let allowed = 1;
  for (let i = 0; i < 700; i++) if ((await request(fleet[1 + (i % 2)]!.limits, mid, p)) !== 'limited') allowed++;
  t.ok(allowed <= 500, `the busy sidecars and the quiet one admitted ${allowed} ≤ 500`);
  t.ok(allowed >= 500 - 64, `what the quiet sidecar leased and left unspent is lost (admitted ${allowed}, at most one lease short)`);
  let quiet = 0;
  while ((await request(fleet[0]!.limits, mid, p)) !== 'limited') quiet++;
  t.equal(allowed + quiet, 500, 'the quiet sidecar spends its lease: all together exactly the limit');
});

t.test('a small limit is counted in Redis request by request, exactly across sidecars', async (t) => {
  const a = sidecar();
  const b = sidecar();
  const p = randomUUID();
  const got: (RateLimitVerdict | 'limited')[] = [];
  for (let i = 0; i < 7; i++) got.push(await request(i % 2 ? b.limits : a.limits, small, p));
  t.same(got.map((v) => (v === 'limited' ? v : v.remaining)), [4, 3, 2, 1, 0, 'limited', 'limited'], 'one count across both, exact');
  t.equal(a.reservations() + b.reservations(), 7, 'one Redis command per request (leases of 1)');
  t.equal(await counter(p), 7, 'the counter in Redis: five admitted, two refused');
});

t.test('concurrent requests of a key share the reservation in flight', async (t) => {
  const s = sidecar();
  const p = randomUUID();
  const got = await Promise.all(Array.from({ length: 200 }, () => request(s.limits, works, p)));
  t.equal(got.filter((v) => v !== 'limited').length, 200, 'all 200 admitted');
  t.equal(s.reservations(), Math.ceil(200 / 64), `200 at once → ${Math.ceil(200 / 64)} leases, not 200 commands`);
  const seen = new Set(got.map((v) => (v === 'limited' ? -1 : v.remaining)));
  t.equal(seen.size, 200, 'each request got a token of its own (200 distinct RateLimit-Remaining values)');
});

t.test('a lease dies with its window', async (t) => {
  const s = sidecar();
  const p = randomUUID();
  const first = await request(s.limits, short, p);
  t.same(first !== 'limited' && first.remaining, 3200 - 1, 'first window');
  t.equal(s.reservations(), 1);
  await sleep(1100);
  const second = await request(s.limits, short, p);
  t.equal(s.reservations(), 2, 'the window ended: the unspent tokens are gone, a new lease is reserved');
  t.same(second !== 'limited' && second.remaining, 3200 - 1, 'a new window, counted from its start');
});

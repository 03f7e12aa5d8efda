/**
 * Session revocation at the sidecar, against a real Redis: a revocation published by the issuer
 * reaches every sidecar through pub/sub and the next request with that session's token is 401
 * (no Redis round trip per request — the view is in process); a sidecar that starts later reads the
 * set; tokens without `sid` from a session issuer are refused; with Redis gone, session tokens are
 * still served for REVOCATION_MAX_STALENESS_MS, then refused with 503 until Redis is back; tokens of
 * an issuer without revocable sessions are unaffected throughout.
 */
import t from 'tap';
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { REVOKED_SESSIONS_KEY, SESSION_REVOKED_CHANNEL, encodeRevocation } from '../../policies/src/session-revocations.ts';
import { ISSUER, AUDIENCE, freePort, raw, startPrivateRedis, startSidecar, useSidecarFixture, type Sidecar } from './helpers.ts';

const viewer = randomUUID();
const publisher = randomUUID();
const fx = useSidecarFixture(t, { sidecars: 2, tuples: [{ user: `user:${viewer}`, relation: 'viewer', object: `publisher:${publisher}` }] });

const get = async (s: Sidecar, token: string) =>
  (await raw(s.port, 'GET', '/api/v1/works', { authorization: `Bearer ${token}`, 'x-publisher-id': publisher })).status;

/** What the issuer does on logout: add to the set, announce on the channel. */
async function revoke(redis: Redis, sid: string): Promise<void> {
  const until = Date.now() + 15 * 60_000;
  await redis.zadd(REVOKED_SESSIONS_KEY, until, sid);
  await redis.publish(SESSION_REVOKED_CHANNEL, encodeRevocation({ sid, until }));
}

t.test('a published revocation is refused by every sidecar at once', async (t) => {
  const sid = randomUUID();
  const token = await fx.issuer.token(viewer, { sid });
  for (const s of fx.sidecars) t.equal(await get(s, token), 200, 'allowed before');
  await revoke(fx.redis, sid);
  const deadline = Date.now() + 1000;
  const seen = await Promise.all(
    fx.sidecars.map(async (s) => {
      for (;;) {
        const status = await get(s, token);
        if (status === 401 || Date.now() > deadline) return status;
        await sleep(10);
      }
    }),
  );
  t.same(seen, [401, 401], 'both sidecars refuse it within 1 s');
  const res = await raw(fx.sidecar.port, 'GET', '/api/v1/works', { authorization: `Bearer ${token}`, 'x-publisher-id': publisher });
  t.match(String(res.headers['www-authenticate']), /error="invalid_token"/);
  t.equal(res.json().detail, 'The session has ended; sign in again.');
  t.equal(await get(fx.sidecar, await fx.issuer.token(viewer)), 200, 'another session of the same user is unaffected');
});

t.test('a sidecar that starts after the revocation reads it from the set', async (t) => {
  const sid = randomUUID();
  await revoke(fx.redis, sid);
  const late = await startSidecar(fx.env);
  t.teardown(() => late.close());
  t.equal(await get(late, await fx.issuer.token(viewer, { sid })), 401);
});

t.test("a session issuer's token without sid is refused", async (t) => {
  t.equal(await get(fx.sidecar, await fx.issuer.token(viewer, { sid: null })), 401);
});

t.test('Redis gone: served within the staleness bound, then 503, then recovered; issuers without sessions unaffected', async (t) => {
  const port = await freePort();
  let redis = await startPrivateRedis(port);
  const redisUrl = `redis://127.0.0.1:${port}/0`;
  const noSessions = JSON.stringify([{ issuer: ISSUER, audience: AUDIENCE, jwks_uri: fx.issuer.jwksUrl, sessions: false }]);
  const s = await startSidecar({ ...fx.env, REDIS_URL: redisUrl, REVOCATION_MAX_STALENESS_MS: '1500' });
  const plain = await startSidecar({ ...fx.env, REDIS_URL: redisUrl, JWT_ISSUERS: noSessions });
  t.teardown(async () => {
    await s.close();
    await plain.close();
    await redis.stop();
  });
  const token = await fx.issuer.token(viewer);
  t.equal(await get(s, token), 200, 'fresh view');
  await redis.stop();
  const stoppedAt = Date.now();
  t.equal(await get(s, token), 200, 'just after Redis went away: still within the bound');
  await sleep(Math.max(0, 1700 - (Date.now() - stoppedAt)));
  const stale = await raw(s.port, 'GET', '/api/v1/works', { authorization: `Bearer ${token}`, 'x-publisher-id': publisher });
  t.equal(stale.status, 503, 'beyond the bound: refused, fail closed');
  t.equal(stale.json().type, 'https://errors.music-publishing.example/pdp-unavailable');
  t.equal(stale.headers['retry-after'], '1');
  t.equal(await get(plain, await fx.issuer.token(viewer, { sid: null })), 200, 'an issuer without revocable sessions decides without the view');
  const ready = (await raw(s.port, 'GET', '/readyz')).json();
  t.equal(ready.checks.session_revocations, 'fail', '/readyz says why');

  redis = await startPrivateRedis(port);
  const deadline = Date.now() + 10_000;
  let status = 0;
  while (Date.now() < deadline && (status = await get(s, token)) !== 200) await sleep(100);
  t.equal(status, 200, 'Redis back: the view is fresh again without a restart');
});

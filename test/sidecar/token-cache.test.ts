/**
 * The verified-token cache (sidecar/src/identity/token-cache.ts and its use in authenticate.ts):
 * unit semantics with a fake clock (an entry ends at the token's exp or after the max TTL, whichever
 * comes first; a past exp is never stored; TTL 0 turns it off), then through real sidecars against
 * real OpenFGA + Redis: a repeated token is a cache hit; an invalid token is never cached; a
 * cached token is re-verified after its exp and rejected once past exp + clock tolerance; a revoked
 * decision is denied at once for a cached token; a JWKS rotation that removes the key ends its
 * cached tokens at once.
 */
import t from 'tap';
import { createServer } from 'node:http';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { createTokenCache } from '../../sidecar/src/identity/token-cache.ts';
import { createIssuer, raw, startSidecar, tempDir, useSidecarFixture, type Sidecar } from './helpers.ts';

t.test('unit: an entry ends at exp or after the max TTL; past exp is never stored; TTL 0 is off', async (t) => {
  let now = 1_000_000;
  const cache = createTokenCache<string>({ maxTtlMs: 60_000, maxEntries: 10, now: () => now });
  const entry = (expMs: number) => ({ value: 'id', key: {}, header: { alg: 'ES256' }, expMs });
  cache.set('a', entry(now + 5_000));
  t.equal(cache.get('a')?.value, 'id', 'cached');
  now += 4_999;
  t.ok(cache.get('a'), 'still valid 1 ms before exp');
  now += 1;
  t.equal(cache.get('a'), undefined, 'gone at exp');
  cache.set('b', entry(now + 3_600_000));
  now += 60_000;
  t.equal(cache.get('b'), undefined, 'gone after the max TTL even though exp is later');
  cache.set('c', entry(now));
  t.equal(cache.get('c'), undefined, 'an expired token is not stored');
  const off = createTokenCache<string>({ maxTtlMs: 0, maxEntries: 10, now: () => now });
  off.set('d', entry(now + 5_000));
  t.equal(off.get('d'), undefined, 'TTL 0: nothing cached');
  const small = createTokenCache<string>({ maxTtlMs: 60_000, maxEntries: 2, now: () => now });
  for (const k of ['x', 'y', 'z']) small.set(k, entry(now + 5_000));
  t.equal(small.size, 2, 'bounded by maxEntries');
  t.equal(cache.keyOf('tok'), cache.keyOf('tok'));
  t.not(cache.keyOf('tok'), 'tok', 'keyed by a hash, not the token');
});

const viewer = randomUUID();
const publisher = randomUUID();

const fx = useSidecarFixture(t, { tuples: [{ user: `user:${viewer}`, relation: 'viewer', object: `publisher:${publisher}` }] });

/** `sidecar_token_cache_total{result}` of a sidecar. */
async function tokenCache(s: Sidecar, result: 'hit' | 'miss'): Promise<number> {
  const text = await (await fetch(`${s.adminUrl}/metrics`)).text();
  return Number(new RegExp(`^sidecar_token_cache_total\\{result="${result}"\\} (\\d+)`, 'm').exec(text)?.[1] ?? NaN);
}
const get = (s: Sidecar, token: string) => raw(s.port, 'GET', '/api/v1/works', { authorization: `Bearer ${token}`, 'x-publisher-id': publisher });

t.test('the same token twice: verified once, then served from the cache', async (t) => {
  const token = await fx.issuer.token(viewer);
  const [hits, misses] = [await tokenCache(fx.sidecar, 'hit'), await tokenCache(fx.sidecar, 'miss')];
  t.equal((await get(fx.sidecar, token)).status, 200);
  t.equal((await get(fx.sidecar, token)).status, 200);
  t.equal(await tokenCache(fx.sidecar, 'miss'), misses + 1, 'one full verification');
  t.equal(await tokenCache(fx.sidecar, 'hit'), hits + 1, 'one hit');
});

t.test('an invalid token is never cached', async (t) => {
  const good = await fx.issuer.token(viewer);
  const other = await fx.issuer.token(viewer);
  const forged = `${good.slice(0, good.lastIndexOf('.'))}${other.slice(other.lastIndexOf('.'))}`; // another token's signature
  const hits = await tokenCache(fx.sidecar, 'hit');
  for (let i = 0; i < 3; i++) t.equal((await get(fx.sidecar, forged)).status, 401, `rejected (${i + 1})`);
  t.equal(await tokenCache(fx.sidecar, 'hit'), hits, 'no hit for the forged token');
  const wrongAudience = await fx.issuer.token(viewer, { aud: 'someone-else' });
  t.equal((await get(fx.sidecar, wrongAudience)).status, 401);
  t.equal((await get(fx.sidecar, wrongAudience)).status, 401, 'still rejected');
  t.equal(await tokenCache(fx.sidecar, 'hit'), hits, 'no hit for a token with bad claims');
});

t.test('a cached token is re-verified after its exp and rejected past exp + clock tolerance', async (t) => {
  const token = await fx.issuer.token(viewer, { expSeconds: 1 });
  const expMs = JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()).exp * 1000;
  t.equal((await get(fx.sidecar, token)).status, 200);
  t.equal((await get(fx.sidecar, token)).status, 200, 'cached');
  await sleep(Math.max(0, expMs - Date.now()) + 50);
  const hits = await tokenCache(fx.sidecar, 'hit');
  const res = await get(fx.sidecar, token);
  t.equal(await tokenCache(fx.sidecar, 'hit'), hits, 'past exp: not served from the cache');
  if (Date.now() < expMs + 5000) t.equal(res.status, 200, 'jose still accepts within its 5 s clock tolerance');
  await sleep(Math.max(0, expMs + 5000 - Date.now()) + 1100);
  const late = await get(fx.sidecar, token);
  t.equal(late.status, 401, 'rejected once past exp + tolerance');
  t.match(String(late.headers['www-authenticate']), /invalid_token/);
});

t.test('a revoked decision is denied at once for a cached token', async (t) => {
  const u = randomUUID();
  const tuple = { user: `user:${u}`, relation: 'viewer', object: `publisher:${publisher}` };
  await fx.writer.write({ writes: [tuple] });
  const token = await fx.issuer.token(u);
  t.equal((await get(fx.sidecar, token)).status, 200);
  t.equal((await get(fx.sidecar, token)).status, 200);
  const hits = await tokenCache(fx.sidecar, 'hit');
  await fx.writer.write({ deletes: [tuple] });
  t.equal((await get(fx.sidecar, token)).status, 403, 'denied right after the revocation');
  t.equal(await tokenCache(fx.sidecar, 'hit'), hits + 1, 'the token itself came from the cache');
});

t.test('JWKS rotation: a cached token whose key left the set is rejected at once', async (t) => {
  const next = await createIssuer();
  t.teardown(() => next.close());
  // One JWKS endpoint whose content the issuer rotates: fx.issuer's key now, next's key later.
  let served = fx.issuer.jwks;
  const jwksServer = createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify(served));
  });
  await new Promise<void>((r) => jwksServer.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => jwksServer.close(() => r())));
  const s = await startSidecar({
    OPENFGA_STORE_NAME: fx.store.storeName,
    UPSTREAM_URL: fx.upstream.url,
    ROUTES_FILE: fx.tmp.routesFile,
    JWT_JWKS_URL: `http://127.0.0.1:${(jwksServer.address() as { port: number }).port}/jwks.json`,
    JWT_JWKS_COOLDOWN_MS: '0',
  });
  t.teardown(() => s.close());

  const old = await fx.issuer.token(viewer);
  t.equal((await get(s, old)).status, 200);
  t.equal((await get(s, old)).status, 200);
  t.equal(await tokenCache(s, 'hit'), 1, 'old-key token cached');
  served = next.jwks; // the issuer rotates: old key removed
  t.equal((await get(s, await next.token(viewer))).status, 200, 'a new-key token makes the sidecar reload the set');
  t.equal((await get(s, old)).status, 401, 'the cached old-key token is rejected');
});

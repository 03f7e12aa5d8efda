/**
 * Dependency failures and streaming, with private services we can stop: OpenFGA (a private
 * `openfga run` against the shared PostgreSQL datastore) down → 503 pdp-unavailable (fail closed),
 * back → recovers; Redis (a private redis-server) down → decisions still correct (allow and deny),
 * readyz degraded; upstream down → 502; slow → 504; a 5 MiB body streams; over the limit → 413.
 */
import t from 'tap';
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { decisions, freePort, raw, startPrivateOpenFga, startPrivateRedis, startSidecar, startUpstream, useSidecarFixture } from './helpers.ts';

const viewer = randomUUID();
const stranger = randomUUID();
const publisher = randomUUID();

// No sidecar here: each test starts its own with the dependency it breaks (and its own upstream).
const fx = useSidecarFixture(t, { sidecars: 0, tuples: [{ user: `user:${viewer}`, relation: 'viewer', object: `publisher:${publisher}` }] });

const call = async (port: number, userId: string, path = '/api/v1/works') =>
  raw(port, 'GET', path, { authorization: `Bearer ${await fx.issuer.token(userId)}`, 'x-publisher-id': publisher });

t.test('OpenFGA down → 503 pdp-unavailable, never cached; back → recovers', async (t) => {
  const fgaPort = await freePort();
  let fga = await startPrivateOpenFga(fgaPort);
  const upstream = await startUpstream();
  const s = await startSidecar({ ...fx.env, OPENFGA_API_URL: `http://127.0.0.1:${fgaPort}`, UPSTREAM_URL: upstream.url, OPENFGA_TIMEOUT_MS: '500' });
  t.teardown(async () => {
    await s.close();
    await upstream.close();
    await fga.stop();
  });
  t.equal((await call(s.port, viewer)).status, 200, 'allowed while OpenFGA is up');
  await fga.stop();
  const before = upstream.received.length;
  const started = Date.now();
  const down = await call(s.port, stranger);
  t.equal(down.status, 503, 'uncached decision fails closed');
  t.equal(down.json().type, 'https://errors.music-publishing.example/pdp-unavailable');
  t.ok(Date.now() - started < 3000, `bounded latency (${Date.now() - started} ms)`);
  t.equal((await call(s.port, stranger, '/api/v1/works?again')).status, 503, 'error not cached as a decision');
  t.equal(upstream.received.length, before, 'upstream saw nothing');
  const ready = await raw(s.port, 'GET', '/readyz');
  t.equal(ready.status, 503);
  t.equal(ready.json().checks.openfga, 'fail');

  fga = await startPrivateOpenFga(fgaPort);
  t.equal((await call(s.port, stranger)).status, 403, 'deny decided again');
  t.equal((await call(s.port, viewer, '/api/v1/works?x=1')).status, 200, 'allow decided again');
  t.equal((await raw(s.port, 'GET', '/readyz')).status, 200);
});

t.test('Redis down → decisions stay correct without the cache; readyz degraded', async (t) => {
  const redisPort = await freePort();
  const redis = await startPrivateRedis(redisPort);
  const upstream = await startUpstream();
  const s = await startSidecar({ ...fx.env, REDIS_URL: `redis://127.0.0.1:${redisPort}/0`, UPSTREAM_URL: upstream.url });
  t.teardown(async () => {
    await s.close();
    await upstream.close();
    await redis.stop();
  });
  t.equal((await call(s.port, viewer)).status, 200);
  t.equal((await call(s.port, viewer)).status, 200);
  t.ok((await decisions(s.adminUrl, 'lru')) >= 1, 'cache used while Redis is up');
  await redis.stop();
  await sleep(100);
  const pdp = await decisions(s.adminUrl, 'pdp');
  const lru = await decisions(s.adminUrl, 'lru');
  t.equal((await call(s.port, viewer)).status, 200, 'allow still allowed');
  t.equal((await call(s.port, stranger)).status, 403, 'deny still denied');
  t.equal((await call(s.port, viewer)).status, 200, 'again');
  t.equal(await decisions(s.adminUrl, 'lru'), lru, 'LRU bypassed (epochs unknown)');
  t.equal(await decisions(s.adminUrl, 'pdp'), pdp + 3, 'every decision from OpenFGA');
  const ready = await raw(s.port, 'GET', '/readyz');
  t.equal(ready.status, 200, 'ready: Redis is only a cache');
  t.equal(ready.json().status, 'degraded');
  t.equal(ready.json().checks.redis, 'degraded');
});

t.test('upstream failures: down → 502, slow → 504', async (t) => {
  const deadPort = await freePort();
  const s = await startSidecar({ ...fx.env, UPSTREAM_URL: `http://127.0.0.1:${deadPort}`, UPSTREAM_HEADERS_TIMEOUT_MS: '300' });
  t.teardown(() => s.close());
  const down = await call(s.port, viewer);
  t.equal(down.status, 502);
  t.equal(down.json().type, 'https://errors.music-publishing.example/upstream-unavailable');
  const ready = await raw(s.port, 'GET', '/readyz');
  t.equal(ready.status, 503);
  t.equal(ready.json().checks.upstream, 'fail');

  const upstream = await startUpstream();
  const s2 = await startSidecar({ ...fx.env, UPSTREAM_URL: upstream.url, UPSTREAM_HEADERS_TIMEOUT_MS: '300' });
  t.teardown(async () => {
    await s2.close();
    await upstream.close();
  });
  const slow = await raw(s2.port, 'GET', '/slow/1500');
  t.equal(slow.status, 504);
  t.equal(slow.json().type, 'https://errors.music-publishing.example/upstream-timeout');
  t.equal((await raw(s2.port, 'GET', '/slow/10')).status, 200, 'fast enough passes');
});

t.test('request bodies are received whole, then forwarded with Content-Length; the limit answers 413', async (t) => {
  const upstream = await startUpstream();
  await fx.store.fga.write({ writes: [{ user: `user:${viewer}`, relation: 'editor', object: `publisher:${publisher}` }] });
  const s = await startSidecar({ ...fx.env, UPSTREAM_URL: upstream.url, PROXY_BODY_LIMIT_BYTES: String(6 * 1024 * 1024) });
  t.teardown(async () => {
    await s.close();
    await upstream.close();
  });
  const headers = async () => ({ authorization: `Bearer ${await fx.issuer.token(viewer)}`, 'x-publisher-id': publisher, 'content-type': 'application/octet-stream' });
  const FIVE_MIB = 5 * 1024 * 1024;
  async function* chunks(total: number) {
    const chunk = Buffer.alloc(64 * 1024, 7);
    for (let sent = 0; sent < total; sent += chunk.length) yield chunk.subarray(0, Math.min(chunk.length, total - sent));
  }
  const chunked = await raw(s.port, 'POST', '/api/v1/works', await headers(), chunks(FIVE_MIB));
  t.equal(chunked.status, 200);
  t.equal(chunked.json().bytes, FIVE_MIB, 'upstream received 5 MiB (chunked)');
  t.equal(upstream.received.at(-1)!.headers['content-length'], String(FIVE_MIB), 'a chunked body goes upstream with its length (received whole first)');
  t.notOk(upstream.received.at(-1)!.headers['transfer-encoding'], '… not chunked');

  const sized = await raw(s.port, 'POST', '/api/v1/works', { ...(await headers()), 'content-length': String(FIVE_MIB) }, Buffer.alloc(FIVE_MIB, 1));
  t.equal(sized.status, 200);
  t.equal(sized.json().bytes, FIVE_MIB, 'upstream received 5 MiB (content-length)');

  const before = upstream.received.length;
  const tooBig = await raw(s.port, 'POST', '/api/v1/works', { ...(await headers()), 'content-length': String(7 * 1024 * 1024) }, Buffer.alloc(7 * 1024 * 1024));
  t.equal(tooBig.status, 413);
  t.equal(tooBig.json().type, 'https://errors.music-publishing.example/payload-too-large');
  t.equal(upstream.received.length, before, 'declared too-large body never forwarded');

  const deniedBig = await raw(s.port, 'POST', '/api/v1/works', { authorization: `Bearer ${await fx.issuer.token(stranger)}`, 'x-publisher-id': publisher, 'content-length': String(FIVE_MIB) }, Buffer.alloc(FIVE_MIB));
  t.equal(deniedBig.status, 403, 'denied before the body is read');
});

/**
 * Fault matrix, the JWKS endpoints behind a fault proxy (README "Failure behaviour"):
 * - the sidecar → the token issuer's JWKS (JWT_JWKS_URL): keys not yet known and the JWKS down
 *   (refused), slow (replies 1 s late, beyond JWT_JWKS_TIMEOUT_MS) or partitioned (silent) → 503
 *   `pdp-unavailable` within JWT_JWKS_TIMEOUT_MS + 100 ms, also for a forged token (never 200);
 *   keys known → degraded but correct: valid tokens 200, a bad signature 401, until the keys are
 *   older than JWT_JWKS_CACHE_MAX_AGE_MS → 503 (fail closed); back → 200 without a restart.
 * - the catalog API → the sidecars' JWKS (SIDECAR_JWKS_URL, identity assertions): the same faults →
 *   503 within JWKS_TIMEOUT_MS + 100 ms, never 200; keys known → served; back → 200.
 */
import t from 'tap';
import { createServer } from 'node:http';
import { randomUUID } from 'node:crypto';
import { SignJWT, generateKeyPair } from 'jose';
import { AUDIENCE, ISSUER, raw, startSidecar, useSidecarFixture } from '../sidecar/helpers.ts';
import { assertion, bindingOf, buildTestApp, makeKey, useSuite } from '../catalog-api/helpers.ts';
import { DMP, DMP_VIEWER, TYPE } from '../support/demo-ids.ts';
import { SLACK_MS, baselineMs, proxyFor, timed, watch } from './helpers.ts';
import type { FaultMode } from '../support/fault-proxy.ts';

const viewer = randomUUID();
const publisher = randomUUID();
const fx = useSidecarFixture(t, { sidecars: 0, tuples: [{ user: `user:${viewer}`, relation: 'viewer', object: `publisher:${publisher}` }] });
const suite = useSuite(t, 'faults_jwks');
const TIMEOUT_MS = 300;
const FAULTS: [string, FaultMode][] = [
  ['down (connection refused)', 'refuse'],
  ['slow (replies 1 s late)', { delayMs: 1000 }],
  ['partitioned (silent)', 'blackhole'],
];

/** A token of the fixture's issuer (its `kid`) signed with another key: a forgery. */
async function forged(sub: string): Promise<string> {
  const { privateKey } = await generateKeyPair('ES256');
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ sid: randomUUID(), scope: 'catalog' })
    .setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid: fx.issuer.kid })
    .setIssuer(ISSUER)
    .setAudience(AUDIENCE)
    .setSubject(sub)
    .setIssuedAt(now)
    .setExpirationTime(now + 600)
    .setJti(randomUUID())
    .sign(privateKey);
}

t.test("sidecar → issuer JWKS: down, slow, partitioned; keys unknown → 503, known → served until their max age; back → 200", async (t) => {
  const MAX_AGE_MS = 2000;
  const { proxy, url } = await proxyFor(t, fx.issuer.jwksUrl, 80);
  const s = await startSidecar({ ...fx.env, JWT_JWKS_URL: url, JWT_JWKS_TIMEOUT_MS: String(TIMEOUT_MS), JWT_JWKS_CACHE_MAX_AGE_MS: String(MAX_AGE_MS) });
  t.teardown(() => s.close());
  const call = (token: string) => raw(s.port, 'GET', '/api/v1/works', { authorization: `Bearer ${token}`, 'x-publisher-id': publisher });
  const token = await fx.issuer.token(viewer);

  for (const [label, mode] of FAULTS) {
    // keys unknown: this sidecar has not fetched them since its start or since they expired
    await proxy.set(mode);
    await new Promise((r) => setTimeout(r, MAX_AGE_MS)); // whatever was fetched before is too old now
    const bound = TIMEOUT_MS + SLACK_MS + 50; // + 50: one request's own work (verify, decide, forward)
    const r = await timed(() => call(token));
    t.equal(r.value.status, 503, `${label}, keys unknown: a valid token → 503`);
    t.equal(r.value.json().type, TYPE('pdp-unavailable'), `${label}: pdp-unavailable`);
    t.ok(r.ms <= bound, `${label}: answered in ${r.ms.toFixed(0)} ms (≤ JWT_JWKS_TIMEOUT_MS + 100 ms + 50 ms)`);
    t.equal((await call(await forged(viewer))).status, 503, `${label}: a forged token → 503, never 200`);

    await proxy.set('pass');
    const back = await watch(5000, async () => (await call(token)).status, (x) => x === 200);
    t.equal(back.at(-1), 200, `${label}: back → 200 (${back.length} probes), without a restart`);

    // keys known (just fetched): the same fault is survived until they are MAX_AGE_MS old
    await proxy.set(mode);
    t.equal((await call(await fx.issuer.token(viewer))).status, 200, `${label}, keys known: a valid token → 200 (degraded but correct)`);
    t.equal((await call(await forged(viewer))).status, 401, `${label}, keys known: a forged token → 401`);
    await new Promise((r) => setTimeout(r, MAX_AGE_MS + 100));
    const old = await timed(() => call(token));
    t.equal(old.value.status, 503, `${label}: keys older than JWT_JWKS_CACHE_MAX_AGE_MS → 503 (fail closed)`);
    t.ok(old.ms <= bound, `${label}: answered in ${old.ms.toFixed(0)} ms`);
    await proxy.set('pass');
    t.equal((await watch(5000, async () => (await call(token)).status, (x) => x === 200)).at(-1), 200, `${label}: back → 200`);
  }
});

t.test('catalog API → sidecar JWKS (identity assertions): down, slow, partitioned → 503 within the bound; back → 200', async (t) => {
  const key = await makeKey();
  const server = createServer((_req, res) => {
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ keys: [key.jwk] }));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => (server.closeAllConnections(), server.close(() => r()))));
  const { proxy, url } = await proxyFor(t, `http://127.0.0.1:${(server.address() as { port: number }).port}/.well-known/jwks.json`, 80);
  // a fresh app per fault: an app that knows the keys does not fetch them again (jose caches them for 10 min)
  const start = async () => {
    const api = await buildTestApp(suite.db, { getKey: undefined }, { SIDECAR_JWKS_URL: url, JWKS_TIMEOUT_MS: String(TIMEOUT_MS) });
    t.teardown(() => api.close());
    return api;
  };
  const list = async (api: Awaited<ReturnType<typeof start>>, signer = key) => {
    const a = await assertion(signer, { sub: DMP_VIEWER, publisherId: DMP, ...bindingOf('GET', '/api/v1/works') });
    return api.app.inject({ url: '/api/v1/works', headers: { 'x-identity-assertion': a } });
  };
  const warm = await start();
  t.equal((await list(warm)).statusCode, 200, 'healthy');
  const normal = await baselineMs(3, () => list(warm));
  for (const [label, mode] of FAULTS) {
    const cold = await start();
    await proxy.set(mode);
    const r = await timed(() => list(cold));
    t.equal(r.value.statusCode, 503, `${label}, keys unknown: → 503`);
    t.ok(r.ms <= TIMEOUT_MS + SLACK_MS + normal, `${label}: answered in ${r.ms.toFixed(0)} ms (≤ JWKS_TIMEOUT_MS + 100 ms over ${normal.toFixed(0)} ms)`);
    t.equal((await list(cold, await makeKey())).statusCode, 503, `${label}: an assertion signed by a stranger's key → 503, never 200`);
    t.equal((await list(warm)).statusCode, 200, `${label}, keys known: served`);
    t.equal((await list(warm, await makeKey())).statusCode, 401, `${label}, keys known: a stranger's key → 401`);
    await proxy.set('pass');
    const back = await watch(5000, async () => (await list(cold)).statusCode, (x) => x === 200);
    t.equal(back.at(-1), 200, `${label}: back → 200 (${back.length} probes), without a restart`);
  }
});

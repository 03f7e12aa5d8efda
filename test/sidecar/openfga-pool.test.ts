/**
 * Several OpenFGA instances (issue 11 §1; pdp/openfga.ts): two private `openfga run` servers on
 * the shared PostgreSQL datastore behind one sidecar (`OPENFGA_API_URL` = both, comma-separated),
 * the decision cache off so every request is a Check.
 * - Checks spread over both instances (sidecar_openfga_checks_total per instance).
 * - One killed mid-run (SIGKILL, under load): no request fails beyond the ones in flight on it,
 *   each answered within one attempt and its retry (2 × OPENFGA_TIMEOUT_MS + 100 ms, + slack),
 *   none allowed wrongly; it is taken out (healthy gauge 0), /readyz stays 200.
 * - It comes back on the same port → the health check puts it back and it is used again.
 * - A partitioned instance (a fault proxy that accepts and stays silent) costs the Check that meets
 *   it one attempt's timeout, then it is out of the rotation: the next Checks go to the other.
 */
import t from 'tap';
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { OPENFGA_API_URL, freePort, raw, startPrivateOpenFga, startSidecar, useSidecarFixture, type Child } from './helpers.ts';
import { proxyFor } from '../faults/helpers.ts';
import { loadConfig } from '../../sidecar/src/config.ts';

const viewer = randomUUID();
const publisher = randomUUID();
const fx = useSidecarFixture(t, { sidecars: 0, tuples: [{ user: `user:${viewer}`, relation: 'viewer', object: `publisher:${publisher}` }] });

// The kill test's attempt timeout: a killed instance refuses at once, so it only bounds the slow
// answers of a loaded machine (OpenFGA's p99 here reaches a second); the partition test waits for
// its timeout, so it uses the default.
const KILL_TIMEOUT_MS = 3000;
const TIMEOUT_MS = 1000;
const SLACK_MS = 300; // two cores shared by the whole test run

/** One metric sample's value from Prometheus text, by name and label substring (0 when absent). */
function sample(text: string, name: string, labels: string[]): number {
  const line = text.split('\n').find((l) => l.startsWith(`${name}{`) && labels.every((x) => l.includes(x)));
  return line ? Number(line.split(' ').pop()) : 0;
}

t.test('two OpenFGA instances: spread, one killed mid-run → no wrong answer, bounded failures; back → used again', async (t) => {
  const ports = [await freePort(), await freePort()];
  const fga: Child[] = await Promise.all(ports.map((p) => startPrivateOpenFga(p)));
  const urls = ports.map((p) => `http://127.0.0.1:${p}`);
  const s = await startSidecar({
    ...fx.env,
    OPENFGA_API_URL: urls.join(','),
    OPENFGA_TIMEOUT_MS: String(KILL_TIMEOUT_MS),
    OPENFGA_HEALTH_INTERVAL_MS: '200',
    DECISION_CACHE_TTL_MS: '0',
  });
  t.teardown(async () => {
    await s.close();
    for (const f of fga) await f.stop();
  });
  const metrics = async () => (await fetch(`${s.adminUrl}/metrics`)).text();
  const checks = async (i: number) => sample(await metrics(), 'sidecar_openfga_checks_total', [`instance="${urls[i]}"`, 'result="ok"']);
  const healthy = async (i: number) => sample(await metrics(), 'sidecar_openfga_instance_healthy', [`instance="${urls[i]}"`]);
  const viewerToken = await fx.issuer.token(viewer);
  const strangerToken = await fx.issuer.token(randomUUID());
  /** One request: a member (must be 200) or a stranger (must be 403); 503 is the only other answer allowed. */
  const one = async (member: boolean) => {
    const started = performance.now();
    const r = await raw(s.port, 'GET', '/api/v1/works', { authorization: `Bearer ${member ? viewerToken : strangerToken}`, 'x-publisher-id': publisher });
    return { member, status: r.status, ms: performance.now() - started };
  };
  /** `workers` concurrent loops of requests (alternating member / stranger) until `stop()`. */
  const load = (workers: number) => {
    let running = true;
    const results: Awaited<ReturnType<typeof one>>[] = [];
    const done = Promise.all(
      Array.from({ length: workers }, async (_, w) => {
        for (let n = w; running; n++) results.push(await one(n % 2 === 0));
      }),
    );
    return { results, stop: async () => ((running = false), await done, results) };
  };
  const wrong = (rs: Awaited<ReturnType<typeof one>>[]) => rs.filter((r) => (r.member ? r.status !== 200 && r.status !== 503 : r.status !== 403 && r.status !== 503));

  // a cold instance's first Check loads the model from the datastore (seconds on a loaded
  // machine, beyond the timeout): warm both directly first, as a deployment's readiness would
  // (OpenFGA may answer its own 3 s request timeout meanwhile: ask until it answers, ≤ 20 s)
  const warmUp = async (u: string) => {
    const body = JSON.stringify({ tuple_key: { user: `user:${viewer}`, relation: 'works_read', object: `publisher:${publisher}` }, context: { current_time: new Date().toISOString(), client_ip: '127.0.0.1' } });
    let status = 0;
    for (const until = Date.now() + 20_000; status !== 200 && Date.now() < until; ) {
      status = await fetch(`${u}/stores/${fx.store.storeId}/check`, { method: 'POST', headers: { 'content-type': 'application/json' }, body }).then((r) => r.status, () => 0);
    }
    t.equal(status, 200, `${u} answers a Check directly (warm)`);
  };
  for (const u of urls) await warmUp(u);

  // 1. both instances serve
  const warm = load(4);
  while (warm.results.length < 40) await sleep(50);
  const warmResults = await warm.stop();
  t.same(wrong(warmResults), [], `${warmResults.length} requests: members allowed, strangers denied`);
  t.equal(warmResults.filter((r) => r.status === 503).length, 0, 'no 503 while both are up');
  const [a0, b0] = [await checks(0), await checks(1)];
  t.ok(a0 >= warmResults.length / 4 && b0 >= warmResults.length / 4, `Checks spread over both instances (${a0} / ${b0})`);

  // 2. kill the second instance under load
  const run = load(4);
  await sleep(500);
  const inFlight = 4; // at most one request per worker can be on the killed instance
  await fga[1]!.stop();
  const killedAt = run.results.length;
  await sleep(1500);
  const during = await run.stop();
  const after = during.slice(killedAt);
  t.same(wrong(during), [], `${during.length} requests: never a wrong allow or deny (only 200/403 or 503)`);
  const failed = during.filter((r) => r.status === 503);
  t.ok(failed.length <= inFlight, `at most the requests in flight on it failed (${failed.length} ≤ ${inFlight})`);
  const bound = 2 * KILL_TIMEOUT_MS + 100 + SLACK_MS;
  const slowest = Math.max(...after.map((r) => r.ms));
  t.ok(slowest <= bound, `each answered within one attempt and its retry (${slowest.toFixed(0)} ms ≤ ${bound} ms)`);
  t.ok(after.length >= 10, `requests kept being answered after the kill (${after.length})`);
  t.equal(await healthy(1), 0, 'the killed instance is taken out (healthy gauge 0)');
  t.equal(await healthy(0), 1, 'the other stays in');
  const ready = await raw(s.port, 'GET', '/readyz');
  t.equal(ready.status, 200, '/readyz: ready while one instance is healthy');
  t.equal(ready.json().checks.openfga, 'ok');

  // 3. it comes back → put back by the health check and used again
  // (its gRPC port is a new free one: another process may take it in between, so try twice)
  fga[1] = await startPrivateOpenFga(ports[1]!).catch(() => startPrivateOpenFga(ports[1]!));
  await warmUp(urls[1]!);
  const deadline = Date.now() + 5000;
  while ((await healthy(1)) !== 1 && Date.now() < deadline) await sleep(50);
  t.equal(await healthy(1), 1, 'back → healthy again (health check)');
  const b1 = await checks(1);
  const again = load(2);
  await sleep(600);
  const againResults = await again.stop();
  t.same(wrong(againResults), [], 'still right');
  t.equal(againResults.filter((r) => r.status === 503).length, 0, 'no 503 once back');
  t.ok((await checks(1)) > b1, `the instance that came back answers Checks again (${(await checks(1)) - b1} more)`);

  // 4. both down → 503 pdp-unavailable within the bound, /readyz 503
  await fga[0]!.stop();
  await fga[1]!.stop();
  const down = await one(false);
  t.equal(down.status, 503, 'both down: a Check → 503 (fail closed)');
  t.ok(down.ms <= bound, `within the bound (${down.ms.toFixed(0)} ms)`);
  t.equal((await raw(s.port, 'GET', '/readyz')).status, 503, 'both down: /readyz 503');
});

t.test('a partitioned instance costs one attempt timeout, then is out of the rotation', async (t) => {
  const { proxy, url } = await proxyFor(t, OPENFGA_API_URL, 8080);
  const s = await startSidecar({
    ...fx.env,
    OPENFGA_API_URLS: `${url},${OPENFGA_API_URL}`,
    OPENFGA_TIMEOUT_MS: String(TIMEOUT_MS),
    OPENFGA_HEALTH_INTERVAL_MS: '200',
    DECISION_CACHE_TTL_MS: '0',
  });
  t.teardown(() => s.close());
  const token = await fx.issuer.token(viewer);
  const get = async () => {
    const started = performance.now();
    const r = await raw(s.port, 'GET', '/api/v1/works', { authorization: `Bearer ${token}`, 'x-publisher-id': publisher });
    return { status: r.status, ms: performance.now() - started };
  };
  const healthyRuns = [];
  for (let i = 0; i < 4; i++) healthyRuns.push(await get());
  t.same(healthyRuns.map((r) => r.status), [200, 200, 200, 200], 'healthy: allowed');
  const normal = Math.max(...healthyRuns.map((r) => r.ms)); // a Check's time on this machine now
  await proxy.set('blackhole');
  const runs = [];
  for (let i = 0; i < 6; i++) runs.push(await get());
  t.same(runs.map((r) => r.status), [200, 200, 200, 200, 200, 200], 'partitioned: every Check still answered (retried on the other instance)');
  const worst = Math.max(...runs.map((r) => r.ms));
  t.ok(worst <= TIMEOUT_MS + normal + SLACK_MS, `the worst costs at most one attempt timeout over a normal Check (${worst.toFixed(0)} ms ≤ ${TIMEOUT_MS} + ${normal.toFixed(0)} + ${SLACK_MS} ms)`);
  const fast = runs.filter((r) => r.ms < TIMEOUT_MS).length;
  t.ok(fast >= 5, `after the first, the partitioned instance is out: ${fast} of 6 answered without waiting for it`);
});

t.test('config: one URL, a list, OPENFGA_API_URLS over OPENFGA_API_URL; a bad entry is refused', async (t) => {
  t.same(loadConfig({ OPENFGA_API_URL: 'http://127.0.0.1:8080' }).openfga.apiUrls, ['http://127.0.0.1:8080'], 'one URL: one instance');
  const list = loadConfig({ OPENFGA_API_URL: 'http://a.local:8080, http://b.local:8080' }).openfga;
  t.same(list.apiUrls, ['http://a.local:8080', 'http://b.local:8080'], 'a comma-separated list');
  t.equal(list.apiUrl, 'http://a.local:8080', 'the first serves the store and model look-ups');
  t.same(loadConfig({ OPENFGA_API_URL: 'http://x.local', OPENFGA_API_URLS: 'http://c.local,http://d.local' }).openfga.apiUrls, ['http://c.local', 'http://d.local'], 'OPENFGA_API_URLS wins');
  t.equal(loadConfig({}).openfga.healthIntervalMs, 1000, 'health check every 1000 ms by default');
  t.throws(() => loadConfig({ OPENFGA_API_URL: 'http://a.local,ftp://b.local' }), /OPENFGA_API_URL/, 'a non-http entry → refused, naming the variable');
  t.throws(() => loadConfig({ OPENFGA_API_URLS: ' , ' }), /OPENFGA_API_URLS/, 'an empty list → refused');
});

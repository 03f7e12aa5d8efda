/**
 * Fault matrix, OpenFGA (README "Failure behaviour"): a fault proxy in front of the shared OpenFGA.
 * - The sidecar's decisions (PDP): down (refused), slow (replies 1 s late, beyond
 *   OPENFGA_TIMEOUT_MS) and partitioned (silent) → 503 `pdp-unavailable` within one attempt and its
 *   retry (2 × OPENFGA_TIMEOUT_MS + 100 ms) + 100 ms; a request that must be denied is never
 *   allowed; decisions cached before the fault are still served (they are valid: nothing changed);
 *   back → decided again without a restart. (A stopped private OpenFGA: test/sidecar/failures.test.ts.)
 * - The catalog API's outbox relay: the same faults (slow: beyond its 2 s write timeout,
 *   outbox/writer.ts) → writes still answer 201 within
 *   OUTBOX_FLUSH_TIMEOUT_MS + 100 ms of a normal write, their tuples wait in the outbox; back → they
 *   reach OpenFGA, exactly the set the database implies.
 */
import t from 'tap';
import { randomUUID } from 'node:crypto';
import { userEpochKey } from '../../policies/src/epochs.ts';
import { bumpEpochs } from '../../policies/src/epoch-push.ts';
import { OPENFGA_API_URL, createTestStore, raw, startSidecar, useSidecarFixture, type TestStore } from '../sidecar/helpers.ts';
import { buildTestApp, useSuite } from '../catalog-api/helpers.ts';
import { DMP, DMP_EDITOR, TYPE } from '../support/demo-ids.ts';
import { SLACK_MS, baselineMs, median, proxyFor, timed, watch } from './helpers.ts';
import type { FaultMode } from '../support/fault-proxy.ts';

const viewer = randomUUID();
const publisher = randomUUID();
const fx = useSidecarFixture(t, { sidecars: 0, tuples: [{ user: `user:${viewer}`, relation: 'viewer', object: `publisher:${publisher}` }] });
const suite = useSuite(t, 'faults_fga');

const FAULTS: [string, FaultMode][] = [
  ['down (connection refused)', 'refuse'],
  ['slow (replies 1 s late)', { delayMs: 1000 }],
  ['partitioned (silent)', 'blackhole'],
];

t.test('sidecar: OpenFGA down, slow, partitioned → 503 within the bound, never an allow it did not decide; back → recovered', async (t) => {
  const TIMEOUT_MS = 300;
  const { proxy, url } = await proxyFor(t, OPENFGA_API_URL, 8080);
  const s = await startSidecar({ ...fx.env, OPENFGA_API_URL: url, OPENFGA_TIMEOUT_MS: String(TIMEOUT_MS) });
  t.teardown(() => s.close());
  const get = async (userId: string, path = '/api/v1/works') => raw(s.port, 'GET', path, { authorization: `Bearer ${await fx.issuer.token(userId)}`, 'x-publisher-id': publisher });
  const token = await fx.issuer.token(viewer);
  const cachedGet = () => raw(s.port, 'GET', '/api/v1/works', { authorization: `Bearer ${token}`, 'x-publisher-id': publisher });
  t.equal((await cachedGet()).status, 200, 'allowed (and now cached)');
  // an uncached decision's normal time (a bumped epoch sends it to OpenFGA)
  const uncached = async () => {
    await bumpEpochs(fx.redis, fx.store.storeId, [userEpochKey(fx.store.storeId, viewer)]); // INCR + push to the epoch views
    return get(viewer);
  };
  const normal = await baselineMs(5, uncached);
  t.equal((await cachedGet()).status, 200, 'cached again');
  const bound = 2 * TIMEOUT_MS + 100 + SLACK_MS + normal;

  for (const [label, mode] of FAULTS) {
    await proxy.set(mode);
    const runs = [];
    t.equal((await cachedGet()).status, 200, `${label}: a decision cached before the fault is still served (nothing changed meanwhile)`);
    // strangers never seen before: nothing cached, so OpenFGA must decide
    for (let i = 0; i < 3; i++) runs.push(await timed(() => get(randomUUID())));
    t.same(runs.map((r) => r.value.status), [503, 503, 503], `${label}: an uncached decision → 503`);
    t.equal(runs[0]!.value.json().type, TYPE('pdp-unavailable'));
    t.equal(runs[0]!.value.headers['retry-after'], '1', `${label}: with Retry-After`);
    const ms = median(runs.map((r) => r.ms));
    t.ok(ms <= bound, `${label}: ${ms.toFixed(0)} ms ≤ 2 × OPENFGA_TIMEOUT_MS + 100 ms + 100 ms over ${normal.toFixed(0)} ms`);
    const fresh = await uncached();
    t.equal(fresh.status, 503, `${label}: a member's uncached decision → 503 too (no default allow)`);
    const ready = await raw(s.port, 'GET', '/readyz');
    t.equal(ready.status, 503, `${label}: /readyz → 503`);

    await proxy.set('pass');
    const back = await watch(10_000, async () => (await get(randomUUID())).status, (x) => x === 403);
    t.equal(back.at(-1), 403, `${label}: back → the stranger is denied by OpenFGA again (${back.length} probes), without a restart`);
    t.same([...new Set(back)].filter((x) => x !== 403 && x !== 503), [], `${label}: never allowed meanwhile`);
    t.equal((await uncached()).status, 200, `${label}: back → a member's uncached decision is allowed again`);
    t.equal((await cachedGet()).status, 200, `${label}: (cached again for the next fault)`);
  }
});

t.test('catalog API relay: OpenFGA down, slow, partitioned → writes answer 201 within the bound, tuples wait; back → exactly the expected tuples', async (t) => {
  const FLUSH_TIMEOUT_MS = 1000;
  const store: TestStore = await createTestStore();
  t.teardown(() => store.remove());
  const { proxy, url } = await proxyFor(t, OPENFGA_API_URL, 8080);
  const api = await buildTestApp(suite.db, { relationshipSink: undefined }, {
    OUTBOX_RELAY: 'true',
    OPENFGA_API_URL: url,
    OPENFGA_STORE_NAME: store.storeName,
    OUTBOX_INTERVAL_MS: '200',
    OUTBOX_FLUSH_TIMEOUT_MS: String(FLUSH_TIMEOUT_MS),
  });
  t.teardown(() => api.close());
  const create = (title: string) => api.as(DMP_EDITOR, DMP, { method: 'POST', url: '/api/v1/works', payload: { title } });
  /** The tuples OpenFGA holds on `work:<id>`, as `relation@user` strings. */
  const tuplesOf = async (id: string) => ((await store.fga.read({ object: `work:${id}` })).tuples ?? []).map((x) => `${x.key.relation}@${x.key.user}`).sort();
  /** What the database implies for a work (policies/src/relationships.ts via the outbox triggers). */
  const expectedOf = async (id: string) => {
    const row = (await suite.su.query('select publisher_id, owner_user_id, department_id, deleted_at from works where id = $1', [id])).rows[0];
    if (!row || row.deleted_at) return [];
    return [`publisher@publisher:${row.publisher_id}`, ...(row.owner_user_id ? [`owner@user:${row.owner_user_id}`] : []), ...(row.department_id ? [`department@department:${row.department_id}`] : [])].sort();
  };
  const pending = async () => Number((await suite.su.query('select count(*) from authz_outbox where delivered_at is null')).rows[0].count);

  // the seed's tuples first (a few thousand rows): the timer delivers them
  t.equal((await watch(120_000, pending, (n) => n === 0)).at(-1), 0, 'the seed backlog is delivered');
  const first = await create(`healthy ${randomUUID()}`);
  t.equal(first.statusCode, 201, 'healthy: a write');
  t.same(await tuplesOf(first.json().id), await expectedOf(first.json().id), "healthy: the work's tuples are in OpenFGA before the answer");
  const normal = await baselineMs(3, () => create(`baseline ${randomUUID()}`));
  const bound = FLUSH_TIMEOUT_MS + SLACK_MS + normal;

  const relayFaults: [string, FaultMode][] = [FAULTS[0]!, ['slow (replies 2.5 s late, beyond the write timeout)', { delayMs: 2500 }], FAULTS[2]!];
  for (const [label, mode] of relayFaults) {
    await proxy.set(mode);
    const ids: string[] = [];
    const times: number[] = [];
    for (let i = 0; i < 3; i++) {
      const r = await timed(() => create(`${label} ${i} ${randomUUID()}`));
      t.equal(r.value.statusCode, 201, `${label}: write ${i} → 201 (committed; its tuples wait in the outbox)`);
      times.push(r.ms);
      ids.push(r.value.json().id);
    }
    const ms = median(times);
    t.ok(ms <= bound, `${label}: answered in ${ms.toFixed(0)} ms (median; ≤ OUTBOX_FLUSH_TIMEOUT_MS + 100 ms over ${normal.toFixed(0)} ms)`);
    t.ok((await pending()) >= 3, `${label}: the tuples are pending in the outbox`);
    if (mode === 'refuse') t.same(await tuplesOf(ids[0]!), [], `${label}: … not in OpenFGA`);

    await proxy.set('pass');
    const drained = await watch(15_000, pending, (n) => n === 0);
    t.equal(drained.at(-1), 0, `${label}: back → the outbox drains by itself (relay timer), without a restart`);
    for (const id of ids) t.same(await tuplesOf(id), await expectedOf(id), `${label}: work ${id.slice(0, 8)}: OpenFGA holds exactly the tuples the database implies`);
  }
});

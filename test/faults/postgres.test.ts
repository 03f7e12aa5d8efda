/**
 * Fault matrix, PostgreSQL (README "Failure behaviour"): a fault proxy between the catalog API (both
 * of its pools) and the shared PostgreSQL — down (refused), slow (every reply 2 s late, beyond the
 * client-side bound DB_STATEMENT_TIMEOUT_MS + 500 ms), partitioned (silent) and back.
 * Expected: 503 problem+json (`upstream-unavailable`, or `upstream-timeout` for an unanswered
 * statement) within that bound + 100 ms — reads, writes, sign-in and /readyz; a write answered 503
 * is never committed later (not even when the partition heals and the held bytes arrive); a request
 * that must be denied is never allowed; recovery without a restart.
 */
import t from 'tap';
import { randomUUID } from 'node:crypto';
import { DEMO_PASSWORD } from '../../migrations/seed/demo.ts';
import { buildTestApp, postLogin, useSuite } from '../catalog-api/helpers.ts';
import { DMP, DMP_EDITOR, DMP_VIEWER, TYPE } from '../support/demo-ids.ts';
import { SLACK_MS, baselineMs, timed, watch } from './helpers.ts';
import { startFaultProxy, type FaultMode } from '../support/fault-proxy.ts';

const suite = useSuite(t, 'faults_pg');
const STATEMENT_TIMEOUT_MS = 1000;
/** The client-side bound of one statement (db/orm.ts: query_timeout) and of a new connection. */
const QUERY_BOUND_MS = STATEMENT_TIMEOUT_MS + 500;
const CONNECT_TIMEOUT_MS = 1000;

t.test('PostgreSQL down, slow, partitioned, back: 503 within the bound, nothing committed late, recovered', async (t) => {
  const u = new URL(suite.db.appUrl);
  const proxy = await startFaultProxy({ host: u.hostname, port: Number(u.port || 5432) });
  t.teardown(() => proxy.close());
  const via = (url: string) => {
    const x = new URL(url);
    x.host = proxy.address;
    return x.toString();
  };
  const api = await buildTestApp(suite.db, {}, {
    DATABASE_URL: via(suite.db.appUrl),
    AUTH_DATABASE_URL: via(suite.db.authUrl),
    DB_STATEMENT_TIMEOUT_MS: String(STATEMENT_TIMEOUT_MS),
    DB_CONNECT_TIMEOUT_MS: String(CONNECT_TIMEOUT_MS),
  });
  t.teardown(() => api.close());
  const list = () => api.as(DMP_VIEWER, DMP, { method: 'GET', url: '/api/v1/works?limit=1' });
  const create = (asUser: string, title: string) => api.as(asUser, DMP, { method: 'POST', url: '/api/v1/works', payload: { title } });

  t.equal((await list()).statusCode, 200, 'healthy: a read');
  const normal = await baselineMs(5, list);
  const normalWrite = await baselineMs(3, () => create(DMP_EDITOR, `baseline ${randomUUID()}`));
  const committed = async (title: string) => Number((await suite.su.query('select count(*) from works where title = $1', [title])).rows[0].count);

  const cases: [string, FaultMode, number][] = [
    ['down (connection refused)', 'refuse', normal + SLACK_MS],
    ['slow (replies 2 s late)', { delayMs: 2000 }, Math.max(QUERY_BOUND_MS, CONNECT_TIMEOUT_MS) + normal + SLACK_MS],
    ['partitioned (silent)', 'blackhole', Math.max(QUERY_BOUND_MS, CONNECT_TIMEOUT_MS) + normal + SLACK_MS],
  ];
  for (const [label, mode, bound] of cases) {
    await proxy.set(mode);
    const title = `fault ${label} ${randomUUID()}`;
    const read = await timed(list);
    t.equal(read.value.statusCode, 503, `${label}: a read → 503`);
    t.match(read.value.headers['content-type'], /^application\/problem\+json/);
    t.match(read.value.json().type, new RegExp(`^(${TYPE('upstream-unavailable')}|${TYPE('upstream-timeout')})$`), `${label}: ${read.value.json().type}`);
    t.ok(read.ms <= bound, `${label}: answered in ${read.ms.toFixed(0)} ms (≤ ${bound.toFixed(0)} ms)`);
    const write = await timed(() => create(DMP_EDITOR, title));
    t.equal(write.value.statusCode, 503, `${label}: a write → 503`);
    const writeBound = bound - normal + normalWrite;
    t.ok(write.ms <= writeBound, `${label}: the write answered in ${write.ms.toFixed(0)} ms (≤ ${writeBound.toFixed(0)} ms)`);
    const denied = await create(DMP_VIEWER, `${title} (viewer)`);
    t.equal(denied.statusCode, 503, `${label}: a write the viewer may not make → 503, not 201`);
    const login = await timed(() => postLogin(api, 'viewer@dmp.example', DEMO_PASSWORD));
    t.equal(login.value.status, 503, `${label}: sign-in → 503`);
    t.ok(login.ms <= bound + 250, `${label}: sign-in answered in ${login.ms.toFixed(0)} ms (≤ bound + the argon2 work)`);
    const ready = await timed(() => api.app.inject({ url: '/readyz' }));
    t.equal(ready.value.statusCode, 503, `${label}: /readyz → 503`);
    t.ok(ready.ms <= bound, `${label}: /readyz answered in ${ready.ms.toFixed(0)} ms`);

    await proxy.set('pass');
    const back = await watch(10_000, async () => (await list()).statusCode, (s) => s === 200);
    t.equal(back.at(-1), 200, `${label}: back → 200 after ${back.length} probes, without a restart`);
    // every pooled connection used once more: a late COMMIT of the 503'd write would show now
    await Promise.all(Array.from({ length: 12 }, () => list()));
    t.equal(await committed(title), 0, `${label}: the write answered 503 was not committed`);
    t.equal(await committed(`${title} (viewer)`), 0, `${label}: nor the viewer's`);
    t.equal((await create(DMP_VIEWER, `${title} (viewer, after)`)).statusCode, 403, `${label}: the viewer is denied again`);
    t.equal((await create(DMP_EDITOR, `${title} (after)`)).statusCode, 201, `${label}: the editor writes again`);
    t.equal((await postLogin(api, 'viewer@dmp.example', DEMO_PASSWORD)).status, 200, `${label}: sign-in works again`);
  }
});

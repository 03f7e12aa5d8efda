/**
 * Fault matrix, the upstream (the catalog API, here a recording upstream) behind a fault proxy
 * (README "Failure behaviour"): down (refused) → 502 `upstream-unavailable` at once; slow (replies
 * 2 s late, beyond UPSTREAM_HEADERS_TIMEOUT_MS) and partitioned (silent) → 504 `upstream-timeout`
 * within UPSTREAM_HEADERS_TIMEOUT_MS + 1 s + 100 ms (undici's timer resolution, see below); a request that must be denied is denied (403) and
 * never reaches the upstream; back → 200 without a restart. Only behaviour is tested here: the
 * forwarding code (stages/forward.ts and its admission) has its own suites in test/sidecar/.
 */
import t from 'tap';
import { randomUUID } from 'node:crypto';
import { raw, startSidecar, startUpstream, useSidecarFixture } from '../sidecar/helpers.ts';
import { TYPE } from '../support/demo-ids.ts';
import { SLACK_MS, baselineMs, proxyFor, timed, watch } from './helpers.ts';
import type { FaultMode } from '../support/fault-proxy.ts';

const viewer = randomUUID();
const publisher = randomUUID();
const fx = useSidecarFixture(t, { sidecars: 0, tuples: [{ user: `user:${viewer}`, relation: 'viewer', object: `publisher:${publisher}` }] });

t.test('upstream down, slow, partitioned → 502 / 504 within the bound, denials still 403; back → 200', async (t) => {
  const HEADERS_TIMEOUT_MS = 500;
  const upstream = await startUpstream();
  t.teardown(() => upstream.close());
  const { proxy, url } = await proxyFor(t, upstream.url, 80);
  const s = await startSidecar({ ...fx.env, UPSTREAM_URL: url, UPSTREAM_HEADERS_TIMEOUT_MS: String(HEADERS_TIMEOUT_MS), UPSTREAM_CONNECT_TIMEOUT_MS: String(HEADERS_TIMEOUT_MS) });
  t.teardown(() => s.close());
  const token = await fx.issuer.token(viewer);
  const get = () => raw(s.port, 'GET', '/api/v1/works', { authorization: `Bearer ${token}`, 'x-publisher-id': publisher });
  const marker = randomUUID();
  const denied = async () => raw(s.port, 'GET', `/api/v1/works?denied=${marker}`, { authorization: `Bearer ${await fx.issuer.token(randomUUID())}`, 'x-publisher-id': publisher });
  t.equal((await get()).status, 200, 'healthy');
  const normal = await baselineMs(5, get);

  // forward.ts bounds the wait for response headers with its own timer (undici's checks on coarse ticks)
  const late = normal + HEADERS_TIMEOUT_MS + SLACK_MS;
  const cases: [string, FaultMode, number, string, number][] = [
    ['down (connection refused)', 'refuse', 502, 'upstream-unavailable', normal + SLACK_MS],
    ['slow (replies 2 s late)', { delayMs: 2000 }, 504, 'upstream-timeout', late],
    ['partitioned (silent)', 'blackhole', 504, 'upstream-timeout', late],
  ];
  for (const [label, mode, status, kind, bound] of cases) {
    await proxy.set(mode);
    const r = await timed(get);
    t.equal(r.value.status, status, `${label}: → ${status}`);
    t.equal(r.value.json().type, TYPE(kind), `${label}: ${kind}`);
    t.ok(r.ms <= bound, `${label}: answered in ${r.ms.toFixed(0)} ms (≤ ${bound.toFixed(0)} ms)`);
    t.equal((await denied()).status, 403, `${label}: a stranger is denied`);

    await proxy.set('pass');
    const back = await watch(5000, async () => (await get()).status, (x) => x === 200);
    t.equal(back.at(-1), 200, `${label}: back → 200 (${back.length} probes), without a restart`);
  }
  t.notOk(upstream.received.some((r) => r.url.includes(marker)), 'the upstream never saw a denied request');
});

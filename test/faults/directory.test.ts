/**
 * Fault matrix, the directory server (the demo Samba AD DC over LDAPS) behind a fault proxy
 * (README "Failure behaviour"): down (refused), slow (replies 1.5 s late, beyond the configured
 * connect/operation timeouts) and partitioned (silent) → an Active Directory sign-in answers 503
 * `directory-unavailable` within connect + operation timeout + 100 ms — a wrong password too, never
 * 200 — while internal sign-in works; back → AD sign-in 200 without a restart. (The directory
 * stopped or silent without the proxy: test/catalog-api/directory.test.ts.)
 */
import t from 'tap';
import { DEMO_PASSWORD } from '../../migrations/seed/demo.ts';
import { postLogin, useSuite } from '../catalog-api/helpers.ts';
import { resetDirectory } from '../support/directory.ts';
import { DMP, TYPE } from '../support/demo-ids.ts';
import { SLACK_MS, baselineMs, proxyFor, timed, watch } from './helpers.ts';
import type { FaultMode } from '../support/fault-proxy.ts';

const suite = useSuite(t, 'faults_dir');
t.before(() => resetDirectory());

t.test('directory down, slow, partitioned → 503 directory-unavailable within its timeouts + 100 ms; internal sign-in unaffected; back → 200', async (t) => {
  const CONNECT_MS = 500;
  const OPERATION_MS = 500;
  const original = (await suite.su.query('select url from directory_configs where publisher_id = $1', [DMP])).rows[0].url as string;
  const { proxy, url } = await proxyFor(t, original, 636);
  await suite.su.query('update directory_configs set url = $2, connect_timeout_ms = $3, operation_timeout_ms = $4 where publisher_id = $1', [DMP, url, CONNECT_MS, OPERATION_MS]);
  const ad = () => postLogin(suite.ta, 'ad.viewer@dmp.example', DEMO_PASSWORD);
  t.equal((await ad()).status, 200, `healthy: an AD user signs in through the proxy (${url})`);
  const normal = await baselineMs(3, ad);
  const bound = CONNECT_MS + OPERATION_MS + SLACK_MS;

  const cases: [string, FaultMode][] = [
    ['down (connection refused)', 'refuse'],
    ['slow (replies 1.5 s late)', { delayMs: 1500 }],
    ['partitioned (silent)', 'blackhole'],
  ];
  for (const [label, mode] of cases) {
    await proxy.set(mode);
    const r = await timed(ad);
    t.equal(r.value.status, 503, `${label}: AD sign-in → 503`);
    t.equal(r.value.body.type, TYPE('directory-unavailable'));
    t.ok(r.value.headers['retry-after'], `${label}: with Retry-After`);
    t.ok(r.ms <= bound, `${label}: answered in ${r.ms.toFixed(0)} ms (≤ connect + operation timeout + 100 ms; ${normal.toFixed(0)} ms normally)`);
    const wrong = await postLogin(suite.ta, 'ad.viewer@dmp.example', 'not-the-password-1');
    t.equal(wrong.status, 503, `${label}: a wrong password → 503, never 200`);
    const internal = await postLogin(suite.ta, 'viewer@dmp.example', DEMO_PASSWORD);
    t.equal(internal.status, 200, `${label}: internal sign-in unaffected`);

    await proxy.set('pass');
    const back = await watch(5000, async () => (await ad()).status, (s) => s === 200);
    t.equal(back.at(-1), 200, `${label}: back → AD sign-in 200 (${back.length} probes), without a restart`);
    t.equal((await postLogin(suite.ta, 'ad.viewer@dmp.example', 'not-the-password-1')).status, 401, `${label}: a wrong password → 401 again`);
  }
});

/**
 * OpenFGA's check caches behind the sidecar (pdp/decision-cache.ts, epoch-view.ts
 * `recentlyChanged`; policies/src/openfga-caches.ts): a private OpenFGA with its check query and
 * iterator caches on (TTL 3 s, request timeout 1 s here, so that the bypass is 4 s).
 * - After a revocation (tuple deleted + epochs bumped by the RelationshipWriter) the next decision
 *   is asked with HIGHER_CONSISTENCY and denied, although OpenFGA's cache still holds the allow —
 *   shown by a control sidecar with OPENFGA_CACHE_BYPASS_MS=0, which gets the stale allow.
 * - Once the decision's epochs have been still for the bypass time, Checks go back to
 *   MINIMIZE_LATENCY (OpenFGA's caches), and answer right.
 * - The same with the decision cache off (DECISION_CACHE_TTL_MS=0).
 */
import t, { type Test } from 'tap';
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort, raw, startPrivateOpenFga, startSidecar, useSidecarFixture, type Sidecar } from './helpers.ts';

const TTL_S = 3;
const REQUEST_TIMEOUT_S = 1;
const BYPASS_MS = (TTL_S + REQUEST_TIMEOUT_S) * 1000;
const publisher = randomUUID();
const fx = useSidecarFixture(t, { sidecars: 0 });

const port = await freePort();
const fgaUrl = `http://127.0.0.1:${port}`;
t.before(async () => {
  const fga = await startPrivateOpenFga(port, {
    OPENFGA_CHECK_QUERY_CACHE_TTL: `${TTL_S}s`,
    OPENFGA_CHECK_ITERATOR_CACHE_TTL: `${TTL_S}s`,
    OPENFGA_REQUEST_TIMEOUT: `${REQUEST_TIMEOUT_S}s`,
  });
  t.teardown(() => fga.stop());
});

/** A sidecar on the private OpenFGA (the fixture's store: the same datastore). */
async function sidecar(env: Record<string, string>): Promise<Sidecar> {
  const s = await startSidecar({ ...fx.env, OPENFGA_API_URL: fgaUrl, OPENFGA_CACHE_BYPASS_MS: String(BYPASS_MS), ...env });
  t.teardown(() => s.close());
  return s;
}

/** `sidecar_openfga_check_consistency_total{consistency}` of `s`. */
async function checks(s: Sidecar, consistency: 'higher_consistency' | 'minimize_latency'): Promise<number> {
  const text = await (await fetch(`${s.adminUrl}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`sidecar_openfga_check_consistency_total{consistency="${consistency}"}`));
  return line ? Number(line.split(' ').pop()) : NaN;
}

const call = async (s: Sidecar, user: string) =>
  (await raw(s.port, 'GET', '/api/v1/works', { authorization: `Bearer ${await fx.issuer.token(user)}`, 'x-publisher-id': publisher })).status;

/**
 * Grant `user`, let a first decision through (HIGHER_CONSISTENCY: the epochs are new to the view),
 * wait out the bypass and the decision cache, then decide again from OpenFGA's caches (which now
 * hold the allow); then revoke (delete + bump) and return the next answer.
 */
async function revokeAfterCachedAllow(t: Test, s: Sidecar, user: string, label: string): Promise<number> {
  const tuple = { user: `user:${user}`, relation: 'viewer', object: `publisher:${publisher}` };
  await fx.writer.write({ writes: [tuple] });
  t.equal(await call(s, user), 200, `${label}: allowed`);
  await sleep(BYPASS_MS + 300);
  const minimize = await checks(s, 'minimize_latency');
  t.equal(await call(s, user), 200, `${label}: allowed again`);
  t.equal(await checks(s, 'minimize_latency'), minimize + 1, `${label}: asked with MINIMIZE_LATENCY once the epochs were still for ${BYPASS_MS} ms (OpenFGA caches the allow)`);
  await fx.writer.write({ deletes: [tuple] });
  await sleep(100); // the bump's push
  return call(s, user);
}

/** A sidecar and a control with the bypass off (`ttl`: DECISION_CACHE_TTL_MS), each through one revocation. */
async function sidecarAndControl(t: Test, ttl: string) {
  const s = await sidecar({ DECISION_CACHE_TTL_MS: ttl });
  const control = await sidecar({ DECISION_CACHE_TTL_MS: ttl, OPENFGA_CACHE_BYPASS_MS: '0' });
  const [u, v] = [randomUUID(), randomUUID()];
  const [controlAnswer, answer] = await Promise.all([revokeAfterCachedAllow(t, control, v, 'control'), revokeAfterCachedAllow(t, s, u, 'sidecar')]);
  t.equal(controlAnswer, 200, 'control (OPENFGA_CACHE_BYPASS_MS=0): the stale allow from OpenFGA’s cache — the caches are on');
  t.equal(answer, 403, 'the sidecar: denied right after the revocation');
  return { s, control, u };
}

t.test('after a revocation the decision bypasses OpenFGA’s caches: denied, not the cached allow', async (t) => {
  const { s, control, u } = await sidecarAndControl(t, '500');
  t.equal(await checks(control, 'higher_consistency'), 0, 'control: never HIGHER_CONSISTENCY');
  const higher = await checks(s, 'higher_consistency');
  t.ok(higher >= 2, `the sidecar asked with HIGHER_CONSISTENCY after the bump (${higher} such Checks: the first decision and the one after the revocation)`);
  await sleep(BYPASS_MS + 300);
  const minimize = await checks(s, 'minimize_latency');
  t.equal(await call(s, u), 403, 'still denied once the bypass is over');
  t.equal(await checks(s, 'minimize_latency'), minimize + 1, 'back to MINIMIZE_LATENCY (OpenFGA’s entry from before the change has expired)');
});

t.test('the same with the decision cache off (every request a Check)', async (t) => {
  await sidecarAndControl(t, '0');
});

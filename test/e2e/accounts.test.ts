/**
 * Accounts through the assembled stack (two sidecars, OpenFGA, the catalog API with its trial
 * sweep, PostgreSQL RLS): a trial that ends without a plan makes the publisher read-only at both
 * sidecars and through /ext-authz — writes 403 `publisher-read-only`, reads 200 — and choosing a
 * plan lifts it everywhere, each within a second of the change.
 */
import t from 'tap';
import pg from 'pg';
import { apiClient } from '../support/api-client.ts';
import { PUBLISHER_IDS } from './policy.ts';
import { env, startStack, tokenFor, type Stack } from './stack.ts';
import { within } from '../support/http.ts';

const TYPE = (kind: string) => `https://errors.music-publishing.example/${kind}`;
const SPIRIT = PUBLISHER_IDS.spirit;
/** The trial sweep's period here; the sidecars follow within it plus one outbox delivery. */
const SWEEP_MS = 200;

let stack: Stack;
const su = new pg.Client({ connectionString: env('PG_ADMIN_URL').replace(/\/[^/]*$/, `/${new URL(env('DATABASE_URL')).pathname.slice(1)}`) });
t.before(async () => {
  stack = await startStack({ sidecars: 2, env: { TRIAL_SWEEP_INTERVAL_MS: String(SWEEP_MS) } });
  await su.connect();
});
t.teardown(async () => {
  await su.query(`update accounts set status = 'active', trial_ends_at = null, read_only_since = null where publisher_id = $1`, [SPIRIT]).catch(() => undefined);
  await su.end();
  await stack?.stop();
});

const sidecars = () => stack.sidecars.map((s) => s.url) as [string, string];


/** The decision an Envoy-fronted service gets for `method path` as `token` at Spirit. */
async function extAuthz(token: string, method: string, path: string, i: 0 | 1): Promise<number> {
  const res = await fetch(`${sidecars()[i]}/ext-authz${path}`, { method, headers: { authorization: `Bearer ${token}`, 'x-publisher-id': SPIRIT } });
  await res.arrayBuffer();
  return res.status;
}

t.test('trial expiry → read-only at both sidecars and /ext-authz; choosing a plan lifts it', async (t) => {
  const editor = await tokenFor('multi@example.com'); // editor at Spirit
  const owner = await tokenFor('owner@spirit.example'); // admin at Spirit
  const create = (i: 0 | 1, title: string) => apiClient(sidecars()[i], editor, SPIRIT).POST('/api/v1/works', { body: { title } });
  const list = (i: 0 | 1) => apiClient(sidecars()[i], editor, SPIRIT).GET('/api/v1/works', { params: { query: { limit: 1 } } });
  for (const i of [0, 1] as const) t.equal((await create(i, `Trial ${i}`)).response.status, 201, `sidecar ${i}: writes work`);

  await su.query(`update accounts set status = 'trial', trial_ends_at = now() - interval '1 second', read_only_since = null where publisher_id = $1`, [SPIRIT]);
  // The catalog API refuses at once (its request context reads the clock); the sidecars follow
  // within the sweep period plus one outbox delivery — /ext-authz shows the sidecar's own decision.
  t.equal((await create(0, 'Late')).response.status, 403, 'the catalog API refuses at once');
  for (const i of [0, 1] as const) {
    const took = await within(SWEEP_MS + 1000, 403, () => extAuthz(editor, 'POST', '/api/v1/works', i));
    t.ok(took >= 0, `sidecar ${i}: /ext-authz refuses writes ${took} ms after the trial ended`);
    t.equal(await extAuthz(editor, 'GET', '/api/v1/works', i), 200, `sidecar ${i}: /ext-authz allows the read`);
    const refused = await create(i, 'Late again');
    t.equal(refused.response.status, 403);
    t.equal((refused.error as { type?: string } | undefined)?.type, TYPE('publisher-read-only'), `sidecar ${i}: the problem says why`);
    t.match(refused.response.headers.get('content-type'), /^application\/problem\+json/);
    t.equal((await list(i)).response.status, 200, `sidecar ${i}: reads still work`);
  }
  const account = await apiClient(sidecars()[1], owner).GET('/api/v1/publishers/{publisherId}/account', { params: { path: { publisherId: SPIRIT } } });
  t.match(account.data, { status: 'trial', read_only: true });

  const chosen = await apiClient(sidecars()[0], owner).PUT('/api/v1/publishers/{publisherId}/account/plan', { params: { path: { publisherId: SPIRIT } }, body: { plan_type: 'professional', billing_cycle: 'monthly' } });
  t.equal(chosen.response.status, 200, 'the admin chooses a plan while read-only');
  for (const i of [0, 1] as const) {
    const took = await within(1000, 201, async () => (await create(i, `Planned ${i}`)).response.status);
    t.ok(took >= 0, `sidecar ${i}: writes work again after ${took} ms`);
    t.equal(await extAuthz(editor, 'POST', '/api/v1/works', i), 200, `sidecar ${i}: /ext-authz agrees`);
  }
});

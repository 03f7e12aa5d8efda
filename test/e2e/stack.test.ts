/**
 * End-to-end behaviour of the assembled stack beyond the role matrix: the acceptance call,
 * identity straight to the catalog API, the decision cache, and revocation across sidecar processes.
 */
import t from 'tap';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { createAssertionSigner } from '../../sidecar/src/identity/assertion.ts';
import { DATA_DIR, startStack, tokenFor, type Stack } from './stack.ts';
import { PUBLISHER_IDS } from './policy.ts';
import { decisions } from '../support/http.ts';
import { USERS } from '../../migrations/seed/demo.ts';

let stack: Stack;
t.before(async () => {
  stack = await startStack({ sidecars: 2 });
});
t.teardown(() => stack?.stop());

const userId = (email: string): string => USERS.find((u) => u.email === email)!.id;

async function get(base: string, path: string, email: string | null, publisher?: string): Promise<Response> {
  const headers: Record<string, string> = {};
  if (email) headers.authorization = `Bearer ${await tokenFor(email)}`;
  if (publisher) headers['x-publisher-id'] = publisher;
  return fetch(`${base}${path}`, { headers });
}

t.test('acceptance: viewer@dmp lists DMP works; the same call for Songtrust is 403', async (t) => {
  const base = stack.sidecars[0]!.url;
  const dmp = await get(base, '/api/v1/works', 'viewer@dmp.example', PUBLISHER_IDS.dmp);
  t.equal(dmp.status, 200);
  const body = (await dmp.json()) as { items: { publisher_id: string }[] };
  t.ok(body.items.length > 0 && body.items.every((w) => w.publisher_id === PUBLISHER_IDS.dmp));
  const st = await get(base, '/api/v1/works', 'viewer@dmp.example', PUBLISHER_IDS.songtrust);
  t.equal(st.status, 403);
  t.match(st.headers.get('content-type'), /application\/problem\+json/);
});

t.test('users/me lists the caller with memberships', async (t) => {
  const res = await get(stack.sidecars[0]!.url, '/api/v1/users/me', 'multi@example.com');
  t.equal(res.status, 200);
  const me = (await res.json()) as { email: string; memberships: { slug: string; role: string }[] };
  t.equal(me.email, 'multi@example.com');
  t.same(
    me.memberships.map((m) => `${m.slug}:${m.role}`).sort(),
    ['dmp:viewer', 'spirit:editor'],
  );
});

t.test('the catalog API trusts only a valid identity assertion', async (t) => {
  const api = stack.api.url;
  const noAssertion = await fetch(`${api}/api/v1/works`, { headers: { 'x-publisher-id': PUBLISHER_IDS.dmp, 'x-user-id': userId('admin@dmp.example') } });
  t.equal(noAssertion.status, 401, 'plain identity headers are not trusted');

  // The sidecar's own signer with the sidecars' key: what the API would receive from a sidecar.
  const signer = await createAssertionSigner({
    keyFile: join(DATA_DIR, 'sidecar-signing-key.pem'),
    issuer: 'urn:music-publishing:sidecar',
    audience: 'catalog-api',
    warn: (m) => t.fail(m),
  });
  const assertion = (sub: string, publisherId: string, method: string, path: string, query = '') =>
    signer.sign({ sub, publisherId, scope: 'catalog', requestId: randomUUID(), method, path, query });

  // A DMP admin asks, in DMP's context, for a Songtrust work: RLS hides it.
  const songtrustWorks = await get(stack.sidecars[0]!.url, '/api/v1/works?limit=1', 'sysadmin@example.com', PUBLISHER_IDS.songtrust);
  const foreignId = ((await songtrustWorks.json()) as { items: { id: string }[] }).items[0]!.id;
  const res = await fetch(`${api}/api/v1/works/${foreignId}`, {
    headers: { 'x-identity-assertion': await assertion(userId('admin@dmp.example'), PUBLISHER_IDS.dmp, 'GET', `/api/v1/works/${foreignId}`) },
  });
  t.equal(res.status, 404, "publisher A's assertion cannot read B's row");
  const listAssertion = await assertion(userId('admin@dmp.example'), PUBLISHER_IDS.dmp, 'GET', '/api/v1/works', 'limit=1');
  const own = await fetch(`${api}/api/v1/works?limit=1`, { headers: { 'x-identity-assertion': listAssertion } });
  t.equal(own.status, 200, 'an assertion for the list reads its own publisher');
  const replay = await fetch(`${api}/api/v1/songwriters?limit=1`, { headers: { 'x-identity-assertion': listAssertion } });
  t.equal(replay.status, 401, 'the same assertion replayed against another route is refused');
  const again = await fetch(`${api}/api/v1/works?limit=1`, { headers: { 'x-identity-assertion': listAssertion } });
  t.equal(again.status, 401, 'and against the same request: each assertion is accepted once');
  t.match(((await again.json()) as { detail: string }).detail, /already used/);
});

t.test('the second identical request is decided from the cache', async (t) => {
  const base = stack.sidecars[0]!.url;
  const path = `/api/v1/works?limit=1&probe=${randomUUID()}`;
  await get(base, path, 'editor@dmp.example', PUBLISHER_IDS.dmp);
  const admin = stack.sidecars[0]!.adminUrl!; // /metrics is on the admin listener only
  const pdpBefore = await decisions(admin, 'pdp');
  const lruBefore = await decisions(admin, 'lru');
  const res = await get(base, path, 'editor@dmp.example', PUBLISHER_IDS.dmp);
  t.equal(res.status, 200);
  t.equal(await decisions(admin, 'pdp'), pdpBefore, 'no OpenFGA check');
  t.equal(await decisions(admin, 'lru'), lruBefore + 1, 'served from the in-process cache');
  t.equal((await fetch(`${base}/metrics`)).status, 404, 'the public port has no /metrics (no route rule)');
});

t.test('removing a membership denies the next request on every sidecar', async (t) => {
  const [a, b] = stack.sidecars as [Stack['sidecars'][0], Stack['sidecars'][0]];
  const editor = userId('editor@dmp.example');
  for (const s of [a, b]) {
    t.equal((await get(s.url, '/api/v1/works?limit=1', 'editor@dmp.example', PUBLISHER_IDS.dmp)).status, 200, `allowed on ${s.url}`);
    t.equal((await get(s.url, '/api/v1/works?limit=1', 'editor@dmp.example', PUBLISHER_IDS.dmp)).status, 200, `cached on ${s.url}`);
  }
  const del = await fetch(`${a.url}/api/v1/publishers/${PUBLISHER_IDS.dmp}/users/${editor}`, {
    method: 'DELETE',
    headers: { authorization: `Bearer ${await tokenFor('admin@dmp.example')}` },
  });
  t.equal(del.status, 204, 'admin removes the editor');
  t.equal((await get(b.url, '/api/v1/works?limit=1', 'editor@dmp.example', PUBLISHER_IDS.dmp)).status, 403, 'denied on the other sidecar');
  t.equal((await get(a.url, '/api/v1/works?limit=1', 'editor@dmp.example', PUBLISHER_IDS.dmp)).status, 403, 'denied on the first sidecar');

  // Adding someone directly is a system admin's call (everyone else invites).
  const put = await fetch(`${a.url}/api/v1/users/${editor}/publishers`, {
    method: 'POST',
    headers: { authorization: `Bearer ${await tokenFor('sysadmin@example.com')}`, 'content-type': 'application/json' },
    body: JSON.stringify({ publisher_id: PUBLISHER_IDS.dmp, role: 'editor' }),
  });
  t.equal(put.status, 201, 'membership restored');
  t.equal((await get(b.url, '/api/v1/works?limit=1', 'editor@dmp.example', PUBLISHER_IDS.dmp)).status, 200, 'allowed again');
});

t.test("removing a creator's membership revokes the rows they own", async (t) => {
  const base = stack.sidecars[0]!.url;
  const creator = userId('creator1@songtrust.example');
  const list = await get(base, '/api/v1/works?limit=1', 'creator1@songtrust.example', PUBLISHER_IDS.songtrust);
  const own = ((await list.json()) as { items: { id: string; owner_user_id: string }[] }).items[0]!;
  t.equal(own.owner_user_id, creator, 'a work creator1 owns');
  const path = `/api/v1/works/${own.id}`;
  t.equal((await get(base, path, 'creator1@songtrust.example', PUBLISHER_IDS.songtrust)).status, 200, 'readable while a creator');

  const asSysadmin = async (method: string, url: string, body?: unknown) =>
    fetch(`${base}${url}`, {
      method,
      headers: { authorization: `Bearer ${await tokenFor('sysadmin@example.com')}`, ...(body ? { 'content-type': 'application/json' } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
  t.equal((await asSysadmin('DELETE', `/api/v1/publishers/${PUBLISHER_IDS.songtrust}/users/${creator}`)).status, 204, 'the system admin removes creator1 from Songtrust');
  t.equal((await get(base, path, 'creator1@songtrust.example', PUBLISHER_IDS.songtrust)).status, 403, 'their own work is no longer readable');
  t.equal((await asSysadmin('POST', `/api/v1/users/${creator}/publishers`, { publisher_id: PUBLISHER_IDS.songtrust, role: 'creator' })).status, 201, 'membership restored');
  t.equal((await get(base, path, 'creator1@songtrust.example', PUBLISHER_IDS.songtrust)).status, 200, 'readable again');
});

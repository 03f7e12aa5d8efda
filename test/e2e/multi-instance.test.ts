/**
 * Issue 11 §1, the multi-instance test: a 3-master Redis Cluster, two OpenFGA instances on one
 * PostgreSQL, three sidecars and two catalog APIs as real processes (test/e2e/cluster-stack.ts).
 *
 * - the isolation matrix (test/e2e/matrix-cases.ts, the table of test/e2e/matrix.test.ts), each
 *   request through a sidecar picked at random;
 * - a membership removed through catalog API #2 is denied by all three sidecars within 1 s
 *   (measured; the times are printed as a comment);
 * - a steady mixed load through random sidecars while one Redis master is killed (its replica takes
 *   over) and then one OpenFGA instance: every request is answered, each answer is the expected one
 *   or a 503 whose problem type is one of README "Failure behaviour" (`pdp-unavailable`,
 *   `upstream-unavailable`, `upstream-timeout`), and a request that must be denied is never 2xx.
 *   After the faults every case gets its expected answer again through every sidecar.
 *
 * The sidecars keep their default decision cache (30 s): the revocation is seen through the epoch
 * bump, not an expiry; the load reads many distinct works, so most of its decisions are not cached
 * yet and reach Redis and OpenFGA while they fail.
 */
import t from 'tap';
import pg from 'pg';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { startClusterStack, type ClusterStack } from './cluster-stack.ts';
import { call, createRow, matrixFixtures, userMatrix, type Fixtures, type MatrixTarget } from './matrix-cases.ts';
import { PUBLISHER_IDS, SEEDED, type PublisherSlug } from './policy.ts';
import { env, tokenFor } from './stack.ts';

const TYPE = 'https://errors.music-publishing.example/';
/** The 503s README "Failure behaviour" documents for a Redis or OpenFGA fault (sidecar and catalog API). */
const DOCUMENTED_503 = new Set(['pdp-unavailable', 'upstream-unavailable', 'upstream-timeout'].map((k) => TYPE + k));

let stack: ClusterStack;
let fixtures: Fixtures;
const picks = [0, 0, 0];
const randomTarget: MatrixTarget = {
  base: () => {
    const s = stack.randomSidecar();
    picks[stack.sidecars.indexOf(s)]!++;
    return s.url;
  },
};
const su = new pg.Client({ connectionString: env('PG_ADMIN_URL').replace(/\/[^/]*$/, `/${new URL(env('DATABASE_URL')).pathname.slice(1)}`) });

t.before(async () => {
  // the durations go to the log: a start that fails on a slower machine says how close it came
  const started = Date.now();
  stack = await startClusterStack();
  t.comment(`the scaled-out stack started in ${Date.now() - started} ms`);
  await su.connect();
  const fixturesAt = Date.now();
  fixtures = await matrixFixtures(randomTarget);
  t.comment(`matrix fixtures made in ${Date.now() - fixturesAt} ms`);
});
t.teardown(async () => {
  await su.end().catch(() => undefined);
  await stack?.stop();
});

t.test("the harness's reaper ends the children of a test process killed with SIGKILL", async (t) => {
  const script = `import { spawn } from 'node:child_process';
    import { startReaper } from ${JSON.stringify(new URL('../support/reaper.ts', import.meta.url).href)};
    const reaper = startReaper();
    const child = spawn('sleep', ['60'], { stdio: 'ignore' });
    reaper.scan();
    setTimeout(() => console.log(child.pid), 300);
    setInterval(() => {}, 1000);`;
  const parent = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  const pid = Number(await new Promise<string>((r) => parent.stdout.once('data', (d) => r(String(d).trim()))));
  t.ok(pid > 0 && existsSync(`/proc/${pid}`), `the test process started a child (${pid})`);
  parent.kill('SIGKILL');
  const deadline = Date.now() + 3000;
  while (existsSync(`/proc/${pid}`) && Date.now() < deadline) await sleep(50);
  t.notOk(existsSync(`/proc/${pid}`), 'the child is gone once its parent died');
});

t.test('the isolation matrix, each request through a random one of the three sidecars', { jobs: 5 }, async (t) => {
  for (const email of Object.keys(SEEDED)) t.test(email, (t) => userMatrix(t, randomTarget, fixtures, email));
  t.teardown(() => {
    t.comment(`requests per sidecar: ${picks.join(' / ')}`);
  });
});

/** A request through the sidecar `base` as `email` (token from the real sign-in flow). @returns the status */
async function status(base: string, email: string, method: string, path: string, publisher: PublisherSlug, body?: unknown): Promise<number> {
  return (await call({ base: () => base }, email, method, path, publisher, body)).status;
}

t.test('a membership removed through catalog API #2 is denied by all three sidecars within 1 s', async (t) => {
  const sys = 'sysadmin@example.com';
  const viewer = 'viewer@dmp.example';
  const { rows } = await su.query<{ id: string }>(`select id from users where email = $1`, [viewer]);
  const userId = rows[0]!.id;
  const viaApi = (i: number) => stack.sidecarOf(i).url;
  const works = (base: string) => status(base, viewer, 'GET', '/api/v1/works?limit=1', 'spirit');
  // an earlier run that failed half-way may have left the membership
  await status(viaApi(0), sys, 'DELETE', `/api/v1/users/${userId}/publishers/${PUBLISHER_IDS.spirit}`, 'spirit');
  const added = await call({ base: () => viaApi(0) }, sys, 'POST', `/api/v1/users/${userId}/publishers`, 'spirit', { publisher_id: PUBLISHER_IDS.spirit, role: 'viewer' });
  t.equal(added.status, 201, `the system admin adds ${viewer} to Spirit through API #1 (${JSON.stringify(added.body).slice(0, 200)})`);
  for (const s of stack.sidecars) {
    const deadline = Date.now() + 5000;
    let got = await call({ base: () => s.url }, viewer, 'GET', '/api/v1/works?limit=1', 'spirit');
    while (got.status !== 200 && Date.now() < deadline) {
      await sleep(50);
      got = await call({ base: () => s.url }, viewer, 'GET', '/api/v1/works?limit=1', 'spirit');
    }
    t.equal(got.status, 200, `${s.url}: the new viewer lists Spirit's works (and the allow is cached)${got.status !== 200 ? `: ${JSON.stringify(got.body)}` : ''}`);
  }
  const removed = await status(viaApi(1), sys, 'DELETE', `/api/v1/users/${userId}/publishers/${PUBLISHER_IDS.spirit}`, 'spirit');
  t.equal(removed, 204, 'removed through API #2');
  const started = Date.now();
  const took = await Promise.all(
    stack.sidecars.map(async (s) => {
      for (;;) {
        if ((await works(s.url)) === 403) return Date.now() - started;
        if (Date.now() - started > 3000) return Infinity;
        await sleep(20);
      }
    }),
  );
  t.comment(`revocation seen by the three sidecars after ${took.join(' / ')} ms`);
  took.forEach((ms, i) => t.ok(ms <= 1000, `sidecar #${i}: denied within 1 s (${ms} ms)`));
});

type Case = { name: string; email: string; method: string; path: string; publisher: PublisherSlug; expected: number; body?: unknown };

t.test('a Redis master and an OpenFGA instance killed mid-load: only documented 503s, no deny ever allowed', async (t) => {
  const fx = fixtures;
  const dmpWork = await createRow(randomTarget, fx, 'admin@dmp.example', 'dmp', 'works');
  const spiritWork = await createRow(randomTarget, fx, 'owner@spirit.example', 'spirit', 'works');
  const c1Work = fx.workFor.get('creator1@songtrust.example|songtrust')!;
  const c2Work = fx.workFor.get('creator2@songtrust.example|songtrust')!;
  const cases: Case[] = [
    { name: 'admin lists DMP works', email: 'admin@dmp.example', method: 'GET', path: '/api/v1/works?limit=1', publisher: 'dmp', expected: 200 },
    { name: 'viewer reads a DMP work', email: 'viewer@dmp.example', method: 'GET', path: `/api/v1/works/${dmpWork}`, publisher: 'dmp', expected: 200 },
    { name: 'multi lists Spirit songwriters', email: 'multi@example.com', method: 'GET', path: '/api/v1/songwriters?limit=1', publisher: 'spirit', expected: 200 },
    { name: 'creator1 reads own work', email: 'creator1@songtrust.example', method: 'GET', path: `/api/v1/works/${c1Work}`, publisher: 'songtrust', expected: 200 },
    { name: 'editor creates a DMP work', email: 'editor@dmp.example', method: 'POST', path: '/api/v1/works', publisher: 'dmp', expected: 201, body: { title: 'Load', language: 'en' } },
    { name: 'owner lists Spirit recordings', email: 'owner@spirit.example', method: 'GET', path: '/api/v1/recordings?limit=1', publisher: 'spirit', expected: 200 },
    { name: 'viewer lists Sheer works', email: 'viewer@dmp.example', method: 'GET', path: '/api/v1/works?limit=1', publisher: 'sheer', expected: 403 },
    { name: 'viewer creates a DMP work', email: 'viewer@dmp.example', method: 'POST', path: '/api/v1/works', publisher: 'dmp', expected: 403, body: { title: 'Nope', language: 'en' } },
    { name: "creator1 reads creator2's work", email: 'creator1@songtrust.example', method: 'GET', path: `/api/v1/works/${c2Work}`, publisher: 'songtrust', expected: 403 },
    { name: 'Spirit owner reads a DMP work', email: 'owner@spirit.example', method: 'GET', path: `/api/v1/works/${dmpWork}`, publisher: 'dmp', expected: 403 },
    { name: 'editor deletes a DMP work', email: 'editor@dmp.example', method: 'DELETE', path: `/api/v1/works/${dmpWork}`, publisher: 'dmp', expected: 403 },
    { name: 'multi deletes a Spirit work', email: 'multi@example.com', method: 'DELETE', path: `/api/v1/works/${spiritWork}`, publisher: 'spirit', expected: 403 },
  ];
  // distinct objects: decisions not cached yet, so the load keeps reaching Redis and OpenFGA
  const dmpWorks: string[] = [];
  for (let i = 0; i < 4; i++) dmpWorks.push(...(await Promise.all(Array.from({ length: 6 }, () => createRow(randomTarget, fx, 'admin@dmp.example', 'dmp', 'works')))));
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(Math.random() * xs.length)]!;
  const dmpReaders = ['admin@dmp.example', 'manager@dmp.example', 'editor@dmp.example', 'viewer@dmp.example', 'multi@example.com'];
  const strangers = ['owner@spirit.example', 'creator1@songtrust.example', 'creator2@songtrust.example'];
  const next = (): Case => {
    const r = Math.random();
    if (r < 0.25) return { name: 'a DMP member reads a DMP work', email: pick(dmpReaders), method: 'GET', path: `/api/v1/works/${pick(dmpWorks)}`, publisher: 'dmp', expected: 200 };
    if (r < 0.5) return { name: 'a stranger reads a DMP work', email: pick(strangers), method: 'GET', path: `/api/v1/works/${pick(dmpWorks)}`, publisher: 'dmp', expected: 403 };
    return pick(cases);
  };
  for (const c of [...cases, ...dmpReaders.map((email) => ({ email })), ...strangers.map((email) => ({ email }))]) await tokenFor(c.email);
  for (const c of cases) t.equal((await call(randomTarget, c.email, c.method, c.path, c.publisher, c.body)).status, c.expected, `before the faults: ${c.name}`);

  // the decision keys, epochs and active model of the store share one hash tag: kill the master of that slot
  const stores = (await (await fetch(`${stack.openfga[1]!.url}/stores?page_size=100`)).json()) as { stores: { id: string; name: string }[] };
  const storeId = stores.stores.find((s) => s.name === env('OPENFGA_STORE_NAME'))!.id;

  type Outcome = { c: Case; status: number; type?: string; error?: string; at: number };
  const outcomes: Outcome[] = [];
  const started = Date.now();
  let faultsDone = false;
  let redisKilledAt = Infinity;
  let fgaKilledAt = Infinity;
  const events: string[] = [];
  const faults = (async () => {
    await sleep(1500);
    redisKilledAt = Date.now() - started;
    const { killed, promoted } = await stack.redis!.killMaster(`authz:{${storeId}}:active-model`);
    events.push(`${redisKilledAt} ms: Redis master ${killed} killed, ${Date.now() - started} ms: ${promoted} took over`);
    await sleep(500);
    await stack.killOpenFga(0);
    fgaKilledAt = Date.now() - started;
    events.push(`${fgaKilledAt} ms: OpenFGA #0 killed`);
    await sleep(2500);
    faultsDone = true;
  })();
  const worker = async () => {
    while (!faultsDone || outcomes.length < 300) {
      const c = next();
      const at = Date.now() - started;
      try {
        const res = await fetch(`${stack.randomSidecar().url}${c.path}`, {
          method: c.method,
          headers: { authorization: `Bearer ${await tokenFor(c.email)}`, 'x-publisher-id': PUBLISHER_IDS[c.publisher], ...(c.body ? { 'content-type': 'application/json' } : {}) },
          body: c.body ? JSON.stringify(c.body) : undefined,
          signal: AbortSignal.timeout(10_000),
        });
        const text = await res.text();
        let type: string | undefined;
        try {
          type = JSON.parse(text)?.type;
        } catch {
          /* not JSON */
        }
        outcomes.push({ c, status: res.status, ...(type ? { type } : {}), at });
      } catch (err) {
        outcomes.push({ c, status: 0, error: (err as Error).message, at });
      }
    }
  };
  await Promise.all([faults, worker(), worker(), worker(), worker()]);
  const ms = Date.now() - started;

  const lost = outcomes.filter((o) => o.status === 0);
  const unexpected = outcomes.filter((o) => o.status !== 0 && o.status !== o.c.expected && !(o.status === 503 && DOCUMENTED_503.has(o.type ?? '')));
  const allowedDenies = outcomes.filter((o) => o.c.expected >= 400 && o.status >= 200 && o.status < 300);
  const by503 = new Map<string, number>();
  for (const o of outcomes.filter((o) => o.status === 503)) {
    const key = `${o.type?.replace(TYPE, '')} (${o.c.expected < 400 ? 'allow' : 'deny'} case)`;
    by503.set(key, (by503.get(key) ?? 0) + 1);
  }
  t.comment(events.join('; '));
  t.comment(`${outcomes.length} requests in ${ms} ms; 503s: ${[...by503].map(([k, n]) => `${n} × ${k}`).join(', ') || 'none'}`);
  t.ok(outcomes.length >= 300, `a few hundred requests (${outcomes.length})`);
  t.ok(outcomes.filter((o) => o.c.expected >= 400).length >= 100, 'many of them must be denied');
  t.same(lost.map((o) => `${o.at} ms ${o.c.name}: ${o.error}`), [], 'every request is answered');
  t.same(unexpected.map((o) => `${o.at} ms ${o.c.name}: ${o.status} ${o.type ?? ''}`), [], 'every answer is the expected one or a documented 503');
  t.same(allowedDenies.map((o) => `${o.at} ms ${o.c.name}: ${o.status}`), [], 'no request that must be denied is allowed');
  t.ok(outcomes.filter((o) => o.at < redisKilledAt).length >= 20 && outcomes.filter((o) => o.at > fgaKilledAt).length >= 20, 'the load runs before, during and after the faults');
  t.ok(outcomes.some((o) => o.at > ms - 1000 && o.status === o.c.expected && o.c.expected < 400), 'requests are allowed again at the end of the run');

  // recovery: every case through every sidecar gets its expected answer again (one OpenFGA, the promoted replica)
  for (const s of stack.sidecars) {
    for (const c of cases) {
      const deadline = Date.now() + 10_000;
      let got = await status(s.url, c.email, c.method, c.path, c.publisher, c.body);
      while (got !== c.expected && Date.now() < deadline) {
        await sleep(100);
        got = await status(s.url, c.email, c.method, c.path, c.publisher, c.body);
      }
      t.equal(got, c.expected, `after the faults, ${s.url}: ${c.name} → ${c.expected}`);
    }
  }
});

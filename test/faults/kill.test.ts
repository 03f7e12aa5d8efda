/**
 * Fault matrix, kill -9 mid-load (README "Failure behaviour"), on the whole stack as processes
 * (test/e2e/stack.ts): editors create and admins delete works through two sidecars while a viewer
 * tries to create works and a stranger to list them; meanwhile one process is SIGKILLed:
 * - a sidecar: its clients see their connections cut; a new sidecar takes its place;
 * - the catalog API (and the outbox relay inside it, possibly mid-batch): the sidecars answer 502
 *   until it is started again;
 * - the authz outbox relay run on its own (`node catalog-api/src/outbox/drain.ts`, the API's relay
 *   off), killed in the middle of a backlog, then run again.
 * Each time: no request that must be denied is allowed, and once the outbox is drained OpenFGA holds
 * exactly the tuples the database implies for every work the load touched — nothing lost (a
 * committed row without its tuples), nothing extra (tuples of a deleted or rolled-back row).
 * The domain-event relay SIGKILLed mid-batch: test/catalog-api/events.test.ts.
 */
import t, { type Test } from 'tap';
import pg from 'pg';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { randomUUID } from 'node:crypto';
import { OpenFgaClient } from '@openfga/sdk';
import { resolveStore } from '../../policies/src/model.ts';
import { ROOT, env, startStack, tokenFor, type Stack } from '../e2e/stack.ts';
import { waitHttp } from '../support/http.ts';
import { DMP } from '../support/demo-ids.ts';

let stack: Stack;
/** a superuser client on the stack's database (checks only) */
let owner: pg.Client;
let fga: OpenFgaClient;
/** The catalog API processes this suite started in place of the stack's. */
const apis: ChildProcess[] = [];
t.before(async () => {
  stack = await startStack({ sidecars: 2 });
  // a superuser on the stack's database: works has FORCE ROW LEVEL SECURITY, even for its owner
  const su = new URL(env('PG_ADMIN_URL'));
  su.pathname = new URL(env('DATABASE_URL')).pathname;
  owner = new pg.Client({ connectionString: su.toString() });
  await owner.connect();
  const apiUrl = process.env.OPENFGA_API_URL ?? 'http://127.0.0.1:8080';
  fga = new OpenFgaClient({ apiUrl, storeId: await resolveStore(apiUrl, process.env.OPENFGA_STORE_NAME ?? 'music-publishing') });
});
t.teardown(async () => {
  for (const c of apis) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await owner?.end();
  await stack?.stop();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const killed = async (child: ChildProcess) => {
  const exited = once(child, 'exit');
  child.kill('SIGKILL');
  await exited;
};

/** Start a catalog API process on the stack's API port (as stack.ts does; `extra` adds settings). */
async function startApi(extra: Record<string, string> = {}): Promise<ChildProcess> {
  const api = new URL(stack.api.url);
  const issuer = stack.sidecars[0]!.url;
  const child = spawn(process.execPath, ['catalog-api/src/main.ts'], {
    cwd: ROOT,
    env: {
      ...process.env,
      LOG_LEVEL: 'warn',
      CATALOG_HOST: '127.0.0.1',
      CATALOG_PORT: api.port,
      SIDECAR_JWKS_URL: `${issuer}/.well-known/jwks.json`,
      JWT_ISSUER: issuer,
      APP_BASE_URL: issuer,
      SMTP_URL: 'smtp://127.0.0.1:9', // no mail in this suite
      SIGN_IN_RATE_LIMIT_PER_MINUTE: '100000',
      ...extra,
    },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  child.stderr!.resume();
  apis.push(child);
  await waitHttp(`${stack.api.url}/healthz`, 30_000);
  return child;
}

/** The API process serving now (the stack's, or the last one this suite started). */
const currentApi = (): ChildProcess => apis.at(-1) ?? stack.api.child;

type LoadResult = { statuses: Map<string, number>; violations: string[]; created: number };

/**
 * Run the load until `stopAt` (ms since the epoch) against the sidecars `bases()` names at each
 * request: 4 workers; each round an editor creates a work titled `<tag> …` (an admin deletes every
 * other one), a viewer tries to create one (must never be 2xx) and a Songtrust creator lists DMP's
 * works (must never be 2xx). Network errors and 5xx count as outcomes, not failures.
 */
async function load(tag: string, stopAt: number, bases: () => string[]): Promise<LoadResult> {
  const [editor, admin, viewer, stranger] = (await Promise.all(['editor@dmp.example', 'admin@dmp.example', 'viewer@dmp.example', 'creator1@songtrust.example'].map(tokenFor))) as [string, string, string, string];
  const statuses = new Map<string, number>();
  const violations: string[] = [];
  let created = 0;
  const count = (k: string) => statuses.set(k, (statuses.get(k) ?? 0) + 1);
  const call = async (base: string, method: string, path: string, token: string, body?: unknown) => {
    try {
      const res = await fetch(`${base}${path}`, {
        method,
        headers: { authorization: `Bearer ${token}`, 'x-publisher-id': DMP, ...(body ? { 'content-type': 'application/json' } : {}) },
        body: body ? JSON.stringify(body) : undefined,
        signal: AbortSignal.timeout(10_000),
      });
      const text = await res.text();
      return { status: res.status, json: () => JSON.parse(text) };
    } catch {
      return { status: 0, json: () => ({}) };
    }
  };
  const worker = async (w: number) => {
    for (let i = 0; Date.now() < stopAt; i++) {
      const list = bases();
      const base = list[(w + i) % list.length]!;
      const made = await call(base, 'POST', '/api/v1/works', editor, { title: `${tag} w${w} #${i}` });
      count(`create ${made.status}`);
      if (made.status === 201) {
        created++;
        if (i % 2 === 0) count(`delete ${(await call(base, 'DELETE', `/api/v1/works/${made.json().id}`, admin)).status}`);
      }
      const denied = await call(base, 'POST', '/api/v1/works', viewer, { title: `${tag} viewer w${w} #${i}` });
      if (denied.status >= 200 && denied.status < 300) violations.push(`viewer create → ${denied.status}`);
      const foreign = await call(base, 'GET', '/api/v1/works?limit=1', stranger);
      if (foreign.status >= 200 && foreign.status < 300) violations.push(`stranger list → ${foreign.status}`);
    }
  };
  await Promise.all([0, 1, 2, 3].map(worker));
  return { statuses, violations, created };
}

/** Wait for the outbox to drain, then compare OpenFGA with the database for every work titled `<tag> …`. */
async function compare(t: Test, tag: string): Promise<void> {
  const deadline = Date.now() + 60_000;
  let pending = -1;
  while (Date.now() < deadline && (pending = Number((await owner.query('select count(*) from authz_outbox where delivered_at is null')).rows[0].count)) > 0) await sleep(200);
  t.equal(pending, 0, 'the outbox drained');
  const rows = (await owner.query(`select id, publisher_id, owner_user_id, department_id, deleted_at from works where title like $1 || ' %'`, [tag])).rows;
  t.ok(rows.length >= 10, `${rows.length} works of the load (${rows.filter((r) => r.deleted_at).length} deleted)`);
  const lost: string[] = [];
  const extra: string[] = [];
  for (const r of rows) {
    const want = r.deleted_at
      ? []
      : [`publisher@publisher:${r.publisher_id}`, ...(r.owner_user_id ? [`owner@user:${r.owner_user_id}`] : []), ...(r.department_id ? [`department@department:${r.department_id}`] : [])];
    const have = ((await fga.read({ object: `work:${r.id}` })).tuples ?? []).map((x) => `${x.key.relation}@${x.key.user}`);
    for (const w of want) if (!have.includes(w)) lost.push(`work:${r.id}#${w}`);
    for (const h of have) if (!want.includes(h)) extra.push(`work:${r.id}#${h}`);
  }
  t.same(lost, [], 'no relationship write lost');
  t.same(extra, [], 'no tuple the database does not imply (nothing resurrected or duplicated)');
  const viewerRows = Number((await owner.query(`select count(*) from works where title like $1 || ' viewer %'`, [tag])).rows[0].count);
  t.equal(viewerRows, 0, "none of the viewer's refused writes is in the database");
}

const report = (t: Test, r: LoadResult) => t.comment(`outcomes: ${[...r.statuses].map(([k, v]) => `${k}×${v}`).join(', ')}`);

t.test('SIGKILL of a sidecar mid-load', async (t) => {
  const tag = `kill-sidecar-${randomUUID().slice(0, 8)}`;
  const victim = stack.sidecars[1]!;
  const live = [stack.sidecars[0]!.url, victim.url];
  const stopAt = Date.now() + 7000;
  const running = load(tag, stopAt, () => live);
  await sleep(2000);
  await killed(victim.child);
  await sleep(1000);
  const replacement = await stack.addSidecar();
  live[1] = replacement.url;
  const r = await running;
  report(t, r);
  t.same(r.violations, [], 'no request that must be denied was allowed');
  t.ok(r.created > 10, `${r.created} works created`);
  t.ok((r.statuses.get('create 0') ?? 0) > 0, "requests to the killed sidecar failed (the kill hit the load)");
  await compare(t, tag);
});

t.test('SIGKILL of the catalog API (and its outbox relay) mid-load', async (t) => {
  const tag = `kill-api-${randomUUID().slice(0, 8)}`;
  const bases = () => stack.sidecars.filter((s) => s.child.exitCode === null && s.child.signalCode === null).map((s) => s.url);
  const stopAt = Date.now() + 9000;
  const running = load(tag, stopAt, bases);
  await sleep(2500);
  await killed(currentApi());
  await sleep(1500);
  await startApi();
  const r = await running;
  report(t, r);
  t.same(r.violations, [], 'no request that must be denied was allowed');
  t.ok((r.statuses.get('create 502') ?? 0) > 0, 'the sidecars answered 502 while the API was gone');
  t.ok(r.created > 10, `${r.created} works created`);
  await compare(t, tag);
});

t.test('SIGKILL of the outbox relay (run on its own) mid-backlog', async (t) => {
  const tag = `kill-relay-${randomUUID().slice(0, 8)}`;
  await killed(currentApi());
  await startApi({ OUTBOX_RELAY: 'false' });
  const bases = () => stack.sidecars.filter((s) => s.child.exitCode === null && s.child.signalCode === null).map((s) => s.url);
  const r = await load(tag, Date.now() + 5000, bases);
  report(t, r);
  t.same(r.violations, [], 'no request that must be denied was allowed');
  const pending = async () => Number((await owner.query('select count(*) from authz_outbox where delivered_at is null')).rows[0].count);
  const backlog = await pending();
  t.ok(backlog >= 30, `a backlog of ${backlog} rows (the API's relay is off; the admin's deletes are refused meanwhile: the new works' tuples are not in OpenFGA yet)`);
  const drain = () => spawn(process.execPath, ['catalog-api/src/outbox/drain.ts'], { cwd: ROOT, env: { ...process.env, OUTBOX_BATCH_SIZE: '10' }, stdio: 'ignore' });
  const first = drain();
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline && (await pending()) > backlog - 20) await sleep(5);
  await killed(first);
  const left = await pending();
  t.ok(left > 0 && left < backlog, `killed mid-backlog: ${backlog - left} rows delivered, ${left} pending`);
  const second = drain();
  const [code] = await once(second, 'exit');
  t.equal(code, 0, 'the relay run again delivers the rest');
  await compare(t, tag);
  await killed(currentApi());
  await startApi(); // the relay on again, for whatever runs after
});

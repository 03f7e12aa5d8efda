/**
 * API-call metering through the assembled stack (docs/CONTRACTS.md, "Metering"): sidecar processes
 * counting into the real Redis, the catalog API's roll-up (`npm run metering`, as a child process)
 * writing `account_usage` in PostgreSQL, read back through GET …/account/usage.
 *
 * - N calls through two sidecars → exactly N, in the usage row and in the API, however often the
 *   roll-up runs and when a sidecar's flush is replayed;
 * - a sidecar killed with SIGKILL loses at most the calls of its last flush interval (1 s); one
 *   stopped with SIGTERM loses none;
 * - the monthly limit: block → 429 `api-call-limit-exceeded` with Retry-After, warn → the header,
 *   under the limit → no header (limits published by the roll-up, re-read by the sidecar);
 * - an API client's calls are counted per client;
 * - storage and seats measured into the usage row.
 * Runs on a database of its own (migrated and seeded by the stack), so its counts are its own.
 */
import t from 'tap';
import pg from 'pg';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { dayKey, meteringScripts, nextMonthStartMs, utcDayOf } from '../../policies/src/metering.ts';
import { createTestDb, type TestDb } from '../migrations/db.ts';
import { apiClient } from '../support/api-client.ts';
import { PUBLISHER_IDS } from './policy.ts';
import { ROOT, env, postJson, startStack, tokenFor, type Proc, type Stack } from './stack.ts';

const TYPE = (kind: string) => `https://errors.music-publishing.example/${kind}`;
const FLUSH_MS = 1000;
/** Timer scheduling slack allowed on top of the flush interval in the crash bound. */
const SLACK_MS = 250;
const prefix = `e2e-metering-${randomUUID()}`;
const { dmp: DMP, spirit: SPIRIT } = PUBLISHER_IDS;
const started = Date.now();

let db: TestDb;
let stack: Stack;
let su: pg.Client;
let redis: Redis;
t.before(async () => {
  db = await createTestDb('e2emetering');
  // the stack (and every child it starts) works on this database
  Object.assign(process.env, { DATABASE_OWNER_URL: db.ownerUrl, DATABASE_URL: db.appUrl, AUTH_DATABASE_URL: db.authUrl, JOBS_DATABASE_URL: db.jobsUrl });
  stack = await startStack({
    sidecars: 2,
    env: { METERING_KEY_PREFIX: prefix, METERING_FLUSH_INTERVAL_MS: String(FLUSH_MS), METERING_LIMITS_RELOAD_MS: '200', METERING_ROLLUP_INTERVAL_MS: '0', METERING_MEASURE_INTERVAL_MS: '0' },
  });
  su = new pg.Client({ connectionString: db.adminUrl });
  await su.connect();
  redis = new Redis(env('REDIS_URL'));
});
t.teardown(async () => {
  await stack?.stop();
  redis?.disconnect();
  await su?.end();
  await db?.drop();
});

/** `npm run metering -- <command>` as a child process. @returns its output. @throws on a non-zero exit */
async function metering(command: 'rollup' | 'measure'): Promise<string> {
  const child = spawn(process.execPath, ['catalog-api/src/modules/metering/cli.ts', command], { cwd: ROOT, env: { ...process.env, METERING_KEY_PREFIX: prefix, LOG_LEVEL: 'warn' } });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (out += d));
  const [code] = (await once(child, 'exit')) as [number];
  if (code !== 0) throw new Error(`metering ${command} exited ${code}: ${out}`);
  return out;
}

/** Calls of `publisher` in Redis since the test file started (the UTC days it ran in). */
async function redisCalls(publisher: string): Promise<{ calls: number; hash: Record<string, string> }> {
  let calls = 0;
  let hash: Record<string, string> = {};
  for (const d of new Set([utcDayOf(started), utcDayOf(Date.now())])) {
    hash = await redis.hgetall(dayKey(prefix, publisher, d));
    calls += Number(hash.calls ?? 0);
  }
  return { calls, hash };
}

/** The `account_usage` API calls of `publisher` (the UTC days this file ran in). */
async function rowCalls(publisher: string): Promise<number> {
  const r = await su.query(`select coalesce(sum(api_calls), 0)::int as n from account_usage where publisher_id = $1 and day = any($2::date[])`, [publisher, [...new Set([utcDayOf(started), utcDayOf(Date.now())])]]);
  return r.rows[0].n;
}

async function until<T>(read: () => Promise<T>, ok: (v: T) => boolean, ms = 10_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await read();
    if (ok(v) || Date.now() > deadline) return v;
    await sleep(100);
  }
}

const get = async (base: string, path: string, token: string, publisher?: string) =>
  fetch(`${base}${path}`, { headers: { authorization: `Bearer ${token}`, ...(publisher ? { 'x-publisher-id': publisher } : {}) } });

t.test('N calls through two sidecars → usage N, however often the roll-up runs or a flush is replayed', async (t) => {
  const owner = await tokenFor('owner@spirit.example');
  const N = 40;
  for (let i = 0; i < N; i++) {
    const r = await get(stack.sidecars[i % 2]!.url, '/api/v1/works?limit=1', owner, SPIRIT);
    t.equal(r.status, 200);
    await r.arrayBuffer();
  }
  t.equal((await until(() => redisCalls(SPIRIT), (v) => v.calls >= N)).calls, N, 'both sidecars flushed');
  t.match(await metering('rollup'), /publisher-days written/);
  t.equal(await rowCalls(SPIRIT), N, 'the usage row says N');
  await metering('rollup');
  t.equal(await rowCalls(SPIRIT), N, 'rolled up twice: still N');

  // replay a flush a sidecar made (its instance and seq are in the day hash): not applied again
  const { hash } = await redisCalls(SPIRIT);
  const [field, seq] = Object.entries(hash).find(([k]) => k.startsWith('seq:'))!;
  const replay = await meteringScripts(redis).flush(prefix, { publisherId: SPIRIT, day: utcDayOf(Date.now()), instance: field.slice(4), seq: Number(seq), calls: 1000, clients: null });
  t.equal(replay.applied, false, 'the replayed flush is refused');
  await metering('rollup');
  t.equal(await rowCalls(SPIRIT), N, 'still N after the replay and another roll-up');

  const usage = await apiClient(stack.sidecars[1]!.url, owner).GET('/api/v1/publishers/{publisherId}/account/usage', { params: { path: { publisherId: SPIRIT } } });
  t.equal(usage.response.status, 200);
  const todays = usage.data!.days.filter((d) => d.day === utcDayOf(started) || d.day === utcDayOf(Date.now()));
  t.equal(todays.reduce((s, d) => s + d.api_calls, 0), N, 'GET …/account/usage says N');
});

/** Call `s` in a loop for `ms`; the times (ms) at which each 200 arrived. */
async function hammer(s: Proc, token: string, publisher: string, ms: number): Promise<number[]> {
  const answered: number[] = [];
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const r = await get(s.url, '/api/v1/works?limit=1', token, publisher);
    await r.arrayBuffer();
    if (r.status === 200) answered.push(Date.now());
  }
  return answered;
}

t.test('SIGKILL between flushes loses at most one flush interval of calls; SIGTERM loses none', async (t) => {
  const admin = await tokenFor('admin@dmp.example');
  await sleep(FLUSH_MS + 500); // earlier calls' flushes have settled
  const before = (await redisCalls(DMP)).calls;
  const victim = await stack.addSidecar();
  const answered = await hammer(victim, admin, DMP, 2600);
  victim.child.kill('SIGKILL');
  const killedAt = Date.now();
  await once(victim.child, 'exit').catch(() => undefined);
  await sleep(500);
  const counted = (await redisCalls(DMP)).calls - before;
  const lost = answered.length - counted;
  const bound = answered.filter((at) => at >= killedAt - FLUSH_MS - SLACK_MS).length;
  t.ok(counted > 0, `the periodic flushes arrived (${counted} of ${answered.length})`);
  t.ok(lost >= 0, `never more than was allowed (lost ${lost})`);
  t.ok(lost <= bound, `lost ${lost} ≤ the ${bound} calls answered in the last ${FLUSH_MS} ms (+${SLACK_MS} ms timer slack) before the kill`);

  const graceful = await stack.addSidecar();
  const before2 = (await redisCalls(DMP)).calls;
  const answered2 = await hammer(graceful, admin, DMP, 700);
  await graceful.stop(); // SIGTERM: the last counts are flushed on close
  t.equal((await redisCalls(DMP)).calls - before2, answered2.length, `SIGTERM: all ${answered2.length} calls counted`);

  await metering('rollup');
  t.equal(await rowCalls(DMP), (await redisCalls(DMP)).calls, 'the usage row follows Redis');
});

t.test('an API client’s calls are counted per client', async (t) => {
  const admin = await tokenFor('admin@dmp.example');
  const reg = await apiClient(stack.sidecars[0]!.url, admin).POST('/api/v1/publishers/{publisherId}/api-clients', { params: { path: { publisherId: DMP } }, body: { name: `metered-${randomUUID().slice(0, 8)}` } });
  t.equal(reg.response.status, 201);
  const { client_id, client_secret } = reg.data!;
  const token = await postJson('/api/v1/auth/token', { grant_type: 'client_credentials', client_id, client_secret });
  t.equal(token.status, 200);
  const K = 7;
  for (let i = 0; i < K; i++) {
    const r = await get(stack.sidecars[i % 2]!.url, '/api/v1/works?limit=1', token.json.access_token, DMP);
    t.equal(r.status, 200);
    await r.arrayBuffer();
  }
  await until(async () => Number((await redisCalls(DMP)).hash[`client:${client_id}`] ?? 0), (n) => n >= K);
  await metering('rollup');
  const rows = (await su.query(`select client_id, api_calls::int from api_client_usage where publisher_id = $1 and client_id = $2`, [DMP, client_id])).rows;
  t.same(rows.map((r) => r.api_calls).reduce((a, b) => a + b, 0), K, `${K} calls of the client`);
  t.equal((await su.query(`select count(*)::int as n from api_client_usage where client_id = $1`, [(await su.query(`select id from users where email = 'admin@dmp.example'`)).rows[0].id])).rows[0].n, 0, "a person's calls are not per-client rows");
});

t.test('the monthly limit: block → 429 with Retry-After, warn → the header, under it → none', async (t) => {
  const sys = await tokenFor('sysadmin@example.com');
  const sys0 = apiClient(stack.sidecars[0]!.url, sys);
  const make = async (slug: string) => {
    const r = await sys0.POST('/api/v1/publishers', { body: { name: `Metered ${slug}`, slug: `${slug}-${randomUUID().slice(0, 8)}`, type: 'professional' } });
    t.equal(r.response.status, 201);
    return r.data!.id;
  };
  const blocked = await make('metered-block'); // a new publisher: a starter trial (block)
  const warned = await make('metered-warn');
  await su.query(`update plans set api_calls_per_month = 3 where id in ('starter', 'custom')`);
  await su.query(`update accounts set plan_type = 'custom' where publisher_id = $1`, [warned]); // custom: warn
  await metering('rollup'); // publishes the limits
  // the sidecars re-read them every 200 ms: wait until the one this test calls has read them since
  // (a loaded machine may take longer than a fixed pause)
  const published = Date.now();
  {
    const sidecar = stack.sidecars[0]!;
    const age = async () => {
      const text = await (await fetch(`${sidecar.adminUrl}/metrics`)).text();
      const line = text.split('\n').find((l) => l.startsWith('sidecar_metering_limits_age_seconds '));
      return line ? Number(line.split(' ')[1]) : Infinity;
    };
    const seen = await until(age, (a) => a >= 0 && Date.now() - a * 1000 > published + 250); // a read that ended 250 ms after: begun after
    t.ok(seen >= 0 && Date.now() - seen * 1000 > published, 'the sidecar read the published limits');
  }

  const base = stack.sidecars[0]!.url;
  for (let i = 1; i <= 3; i++) {
    const r = await get(base, '/api/v1/works?limit=1', sys, blocked);
    t.equal(r.status, 200, `block: call ${i} of 3`);
    t.equal(r.headers.get('x-api-call-limit-exceeded'), null, 'under the limit: no header');
    await r.arrayBuffer();
  }
  const refused = await get(base, '/api/v1/works?limit=1', sys, blocked);
  t.equal(refused.status, 429);
  const problem = (await refused.json()) as { type: string; status: number };
  t.match(problem, { type: TYPE('api-call-limit-exceeded'), status: 429 });
  const expected = Math.ceil((nextMonthStartMs(Date.now()) - Date.now()) / 1000);
  t.ok(Math.abs(Number(refused.headers.get('retry-after')) - expected) <= 2, `Retry-After ${refused.headers.get('retry-after')} ≈ ${expected} s (the next UTC month)`);
  t.equal(refused.headers.get('x-api-call-limit-exceeded'), '3');
  const ext = await get(base, '/ext-authz/api/v1/works', sys, blocked);
  t.equal(ext.status, 429, '/ext-authz refuses too');
  const usage = await get(base, `/api/v1/publishers/${blocked}/account/usage`, sys);
  t.equal(usage.status, 200, 'the account routes stay open (to choose a larger plan) …');
  t.equal(usage.headers.get('x-api-call-limit-exceeded'), '3', '… with the warning');
  await usage.arrayBuffer();

  for (let i = 1; i <= 5; i++) {
    const r = await get(base, '/api/v1/works?limit=1', sys, warned);
    t.equal(r.status, 200, `warn: call ${i} passes`);
    t.equal(r.headers.get('x-api-call-limit-exceeded'), i > 3 ? '3' : null, i > 3 ? 'over the limit: the header' : 'under it: none');
    await r.arrayBuffer();
  }
  t.equal((await until(() => redisCalls(blocked), (v) => v.calls >= 4)).calls, 4, 'the refused calls were not counted (3 + the usage read)');
  t.equal((await until(() => redisCalls(warned), (v) => v.calls >= 5)).calls, 5, 'the warned ones were');
});

t.test('storage and seats are measured into the usage row', async (t) => {
  t.match(await metering('measure'), /publishers measured/);
  const owner = await tokenFor('owner@spirit.example');
  const client = apiClient(stack.sidecars[0]!.url, owner);
  const account = await client.GET('/api/v1/publishers/{publisherId}/account', { params: { path: { publisherId: SPIRIT } } });
  const usage = await client.GET('/api/v1/publishers/{publisherId}/account/usage', { params: { path: { publisherId: SPIRIT }, query: { from: utcDayOf(Date.now()), to: utcDayOf(Date.now()) } } });
  const today = usage.data!.days[0]!;
  t.ok((today.storage_bytes ?? 0) > 10_000, `storage measured (${today.storage_bytes} bytes)`);
  t.equal(today.seats_used, account.data!.seats.used, 'seats used as the account counts them');
});

/**
 * Domain events end to end: the relay (catalog-api/src/events/) publishing the outbox of a seeded
 * database to a real SQS-compatible server (goaws, started by scripts/services.sh), consumed with
 * the same SDK. Every event arrives exactly once per id and in order per publisher — also when the
 * standalone relay is SIGKILLed mid-batch and restarted; queue failures back off and never
 * dead-letter; an event the queue cannot take is dead-lettered after N attempts while its
 * publisher's later events wait and other publishers' go on; retry/discard (CLI); the lag metric.
 */
import t from 'tap';
import type pg from 'pg';
import Fastify from 'fastify';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createServer } from 'node:net';
import { Registry } from 'prom-client';
import { PUBLISHERS, USERS } from '../../migrations/seed/demo.ts';
import { createOrm, type Orm } from '../../catalog-api/src/db/orm.ts';
import { createEventPublisher } from '../../catalog-api/src/events/runner.ts';
import { encodeBody } from '../../catalog-api/src/events/relay.ts';
import { batchOutcomes } from '../../catalog-api/src/events/sqs.ts';
import { eventStats, openDeadLetters, resolveDeadLetter } from '../../catalog-api/src/events/outbox.ts';
import { registerDomainEventMetrics } from '../../catalog-api/src/events/metrics.ts';
import { metricsPlugin } from '../../catalog-api/src/plugins/metrics.ts';
import { domainEventsPlugin } from '../../catalog-api/src/plugins/domain-events.ts';
import { adminClient, buildTestApp, createTestDb, testConfig, type TestDb } from './helpers.ts';
import { createTestQueue, deleteTestQueue, groupOf, queueDepth, receiveAll, receiveAtLeast, sqsEnv, testSqsClient, type ReceivedEvent } from '../support/sqs.ts';

const DMP = PUBLISHERS.find((p) => p.slug === 'dmp')!.id;
const SONGTRUST = PUBLISHERS.find((p) => p.slug === 'songtrust')!.id;
const EDITOR = USERS.find((u) => u.email === 'editor@dmp.example')!.id;
const ADMIN = USERS.find((u) => u.email === 'admin@dmp.example')!.id;
const VIEWER = USERS.find((u) => u.email === 'viewer@dmp.example')!.id;
const CLI = 'catalog-api/src/events/cli.ts';

const sqs = testSqsClient();
const queues: string[] = [];
let db: TestDb;
let su: pg.Client;
let orm: Orm;
t.before(async () => {
  db = await createTestDb('events');
  su = await adminClient(db);
  orm = await createOrm(testConfig(db), 'jobs');
});
t.teardown(async () => {
  for (const q of queues) await deleteTestQueue(sqs, q);
  sqs.destroy();
  await orm?.close(true);
  await su?.end();
  await db?.drop();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const newQueue = async (tag: string) => {
  const url = await createTestQueue(sqs, tag);
  queues.push(url);
  return url;
};
const one = async <T = any>(sql: string, params: unknown[] = []) => (await su.query(sql, params)).rows[0] as T;
const pendingCount = async () => (await one<{ n: number }>(`select count(*)::int as n from domain_events where published_at is null`)).n;
const publishAllAlready = () => su.query(`update domain_events set published_at = now() where published_at is null`);
/** Insert a work as the superuser (the trigger writes its work.created); @returns its id and outbox row id */
const work = async (publisher: string, title: string) => {
  const { id } = await one<{ id: string }>(`insert into works (publisher_id, title) values ($1, $2) returning id::text`, [publisher, title]);
  const row = await one<{ seq: string; event_id: string }>(`select id::text as seq, event_id::text from domain_events where object_id = $1 order by id desc limit 1`, [id]);
  return { id, ...row };
};
const eventRow = (seq: string) =>
  one<{ attempts: number; published: boolean; delay_ms: number; last_error: string | null } | undefined>(
    `select attempts, published_at is not null as published, (extract(epoch from next_attempt_at - clock_timestamp()) * 1000)::int as delay_ms, last_error
       from domain_events where id = $1`,
    [seq],
  );
/** A relay on `queueUrl` with the given EVENTS_* settings (no LISTEN: the tests drain by hand). */
const relayOn = (queueUrl: string, env: Record<string, string> = {}, endpoint?: string) => {
  const config = testConfig(db, { ...sqsEnv(), ...(endpoint ? { SQS_ENDPOINT_URL: endpoint } : {}), SQS_QUEUE_URL: queueUrl, ...env });
  return createEventPublisher(config, orm, { listen: false });
};
const runCli = (args: string[], env: Record<string, string> = {}) =>
  new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, DATABASE_URL: db.appUrl, JOBS_DATABASE_URL: db.jobsUrl, ...env } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('exit', (code) => resolve({ code, stdout, stderr }));
  });

t.test('batchOutcomes: every entry answered individually; an entry in neither list failed, not the sender’s fault', async (t) => {
  const m = (entryId: string) => ({ entryId, body: '{}', groupId: 'g', deduplicationId: entryId });
  const out = batchOutcomes([m('1'), m('2'), m('3'), m('4')], {
    Successful: [{ Id: '1', MessageId: 'x', MD5OfMessageBody: 'y' }, { Id: '4', MessageId: 'z', MD5OfMessageBody: 'w' }],
    Failed: [{ Id: '2', Code: 'InvalidMessageContents', Message: 'bad characters', SenderFault: true }],
  });
  t.same(out, [
    { entryId: '1', ok: true },
    { entryId: '2', ok: false, error: 'InvalidMessageContents: bad characters', senderFault: true },
    { entryId: '3', ok: false, error: 'MissingResult: SQS reported no result for this entry', senderFault: false },
    { entryId: '4', ok: true },
  ]);
  t.same(batchOutcomes([m('1')], { Successful: [], Failed: [{ Id: '1', Code: 'InternalError', SenderFault: false }] }), [
    { entryId: '1', ok: false, error: 'InternalError: refused by SQS', senderFault: false },
  ]);
});

t.test('encodeBody: JSON with the characters SQS refuses escaped', async (t) => {
  const body = encodeBody({ title: 'a\uffffb\ufffec', emoji: '🎵' });
  t.notMatch(body, /[\ufffe\uffff]/, 'no U+FFFE/U+FFFF left');
  t.same(JSON.parse(body), { title: 'a\uffffb\ufffec', emoji: '🎵' }, 'decodes to the same value');
});

t.test('the standalone relay SIGKILLed mid-batch and restarted: every event exactly once, in order per publisher', async (t) => {
  const queue = await newQueue('kill');
  const expected = (await su.query<{ seq: string; event_id: string; group_key: string }>(
    `select id::text as seq, event_id::text, group_key from domain_events where published_at is null order by id`,
  )).rows;
  t.ok(expected.length > 1000, `the seed left ${expected.length} events to publish`);
  const env = { ...sqsEnv(), SQS_QUEUE_URL: queue, DATABASE_URL: db.appUrl, JOBS_DATABASE_URL: db.jobsUrl, EVENTS_BATCH_SIZE: '100', EVENTS_INTERVAL_MS: '200' };
  const logs: string[] = [];
  const start = (): ChildProcess => {
    const child = spawn(process.execPath, [CLI, 'run'], { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
    child.stderr!.on('data', (d) => logs.push(String(d)));
    return child;
  };
  const published = async () => (await one<{ n: number }>(`select count(*)::int as n from domain_events where published_at is not null and event_id = any($1::uuid[])`, [expected.map((e) => e.event_id)])).n;

  let midBatch = 0;
  for (let attempt = 0; attempt < 6 && midBatch === 0; attempt++) {
    const before = await queueDepth(sqs, queue);
    if (before > expected.length - 300) break;
    const child = start();
    const until = Date.now() + 30_000;
    while ((await queueDepth(sqs, queue)) < before + 250 && Date.now() < until) await sleep(2);
    child.kill('SIGKILL');
    await once(child, 'exit');
    await sleep(100); // a request goaws had fully received is still answered
    const [inQueue, marked] = [await queueDepth(sqs, queue), await published()];
    t.ok(inQueue >= marked, `after the kill: ${inQueue} in the queue, ${marked} marked published`);
    if (inQueue > marked) midBatch = inQueue - marked;
  }
  t.ok(midBatch > 0, `killed mid-batch: ${midBatch} events were in the queue but not marked published`);

  const child = start();
  const until = Date.now() + 90_000;
  while ((await published()) < expected.length && Date.now() < until) await sleep(50);
  t.equal(await published(), expected.length, 'the restarted relay published the rest');
  child.kill('SIGTERM');
  const [code] = await once(child, 'exit');
  t.equal(code, 0, 'SIGTERM: a clean exit');
  t.equal(await queueDepth(sqs, queue), expected.length, 'the resent events were de-duplicated by the queue (MessageDeduplicationId = event id)');

  const got = await receiveAll(sqs, queue);
  const counts = new Map<string, number>();
  for (const e of got) counts.set(e.id, (counts.get(e.id) ?? 0) + 1);
  t.equal(got.length, expected.length, 'as many messages as events');
  t.same([...counts.values()].filter((n) => n !== 1), [], 'no event id twice');
  t.same(new Set(got.map((e) => e.id)), new Set(expected.map((e) => e.event_id)), 'every event, nothing else');
  const groupById = new Map(expected.map((e) => [e.event_id, e.group_key]));
  t.equal(got.filter((e) => groupOf(e) !== groupById.get(e.id)).length, 0, 'each body names its group');
  const perGroup = (xs: { id: string; group: string }[]) => {
    const m = new Map<string, string[]>();
    for (const x of xs) m.set(x.group, [...(m.get(x.group) ?? []), x.id]);
    return Object.fromEntries(m);
  };
  const want = perGroup(expected.map((e) => ({ id: e.event_id, group: e.group_key })));
  t.ok(Object.keys(want).length >= 4, `${Object.keys(want).length} groups`);
  t.same(perGroup(got.map((e) => ({ id: e.id, group: groupOf(e) }))), want, 'in outbox order within every group');
  t.equal(await queueDepth(sqs, queue), 0, 'consumed');
  if (t.passing() === false) t.comment(logs.join('').slice(-4000));
});

t.test('in the API process: a request’s events reach the queue in order, a refused request has none', async (t) => {
  await publishAllAlready();
  const queue = await newQueue('api');
  const ta = await buildTestApp(db, {}, { ...sqsEnv(), SQS_QUEUE_URL: queue });
  t.teardown(() => ta.close());
  const created = await ta.as(EDITOR, DMP, { method: 'POST', url: '/api/v1/works', payload: { title: 'Evented' } });
  t.equal(created.statusCode, 201);
  const id = created.json().id;
  t.equal((await ta.as(EDITOR, DMP, { method: 'PATCH', url: `/api/v1/works/${id}`, payload: { title: 'Evented again' } })).statusCode, 200);
  t.equal((await ta.as(ADMIN, DMP, { method: 'DELETE', url: `/api/v1/works/${id}` })).statusCode, 204);
  const total = async () => (await one<{ n: number }>(`select count(*)::int as n from domain_events`)).n;
  const before = await total();
  t.equal((await ta.as(VIEWER, DMP, { method: 'POST', url: '/api/v1/works', payload: { title: 'Refused' } })).statusCode, 403);
  t.equal(await total(), before, 'a refused request wrote no event');
  const got = await receiveAtLeast(sqs, queue, 3, 10_000);
  t.same(got.map((e) => [e.type, e.object_id, e.publisher_id, e.actor_user_id]), [
    ['work.created', id, DMP, EDITOR],
    ['work.updated', id, DMP, EDITOR],
    ['work.deleted', id, DMP, ADMIN],
  ], 'published by the API’s relay (woken by NOTIFY), in order');
  t.equal(got[0]!.data.title, 'Evented');
  t.same(got[1]!.previous, { title: 'Evented' });
  t.not(got[2]!.data.deleted_at, null);
  await ta.app.domainEvents.flush(); // the drain that sent them may still be committing
  t.equal(await pendingCount(), 0, 'all marked published');
});

t.test('queue failures: retried with exponential backoff, never dead-lettered; only their publisher waits', async (t) => {
  await publishAllAlready();
  const queue = await newQueue('retry');
  const missing = `${sqsEnv().SQS_ENDPOINT_URL}/000000000000/missing-${process.pid}.fifo`;
  const retry = { EVENTS_MAX_ATTEMPTS: '2', EVENTS_RETRY_BASE_MS: '300', EVENTS_RETRY_MAX_MS: '1000' };
  const bad = relayOn(missing, retry);
  const good = relayOn(queue, retry);
  t.teardown(async () => {
    await bad.stop();
    await good.stop();
  });
  const e1 = await work(DMP, 'Retry me');
  const r1 = await bad.relay.drain();
  t.match(r1, { published: 0, failed: 1, deadLettered: 0, error: /QueueDoesNotExist|does not exist/ }, 'the queue is missing: a failed call');
  let row = (await eventRow(e1.seq))!;
  t.equal(row.attempts, 1);
  t.ok(row.delay_ms > 150 && row.delay_ms <= 300, `next attempt in ${row.delay_ms} ms (base 300)`);
  t.match(row.last_error, /QueueDoesNotExist|does not exist/);
  t.same(await bad.relay.drain(), { published: 0, failed: 0, deadLettered: 0 }, 'backing off: not attempted again yet');

  const e2 = await work(DMP, 'Behind it');
  const s1 = await work(SONGTRUST, 'Another publisher');
  t.match(await good.relay.drain(), { published: 1, failed: 0 }, 'the other publisher’s event goes out; this publisher’s next event waits');
  t.equal((await eventRow(s1.seq))!.published, true);
  t.equal((await eventRow(e2.seq))!.published, false, 'waits behind the failing one');

  await sleep(320);
  t.match(await bad.relay.drain(), { published: 0, failed: 1 });
  row = (await eventRow(e1.seq))!;
  t.equal(row.attempts, 2);
  t.ok(row.delay_ms > 450 && row.delay_ms <= 600, `then in ${row.delay_ms} ms (doubled)`);
  t.equal((await eventRow(e2.seq))!.attempts, 0, 'only the head of the group was attempted');

  await sleep(620);
  const closed = await new Promise<number>((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
  const down = relayOn(`http://127.0.0.1:${closed}/000000000000/down.fifo`, retry, `http://127.0.0.1:${closed}`);
  t.teardown(() => down.stop());
  t.match(await down.relay.drain(), { published: 0, failed: 1, deadLettered: 0, error: /ECONNREFUSED|connect/i }, 'the server is down: a failed call');
  row = (await eventRow(e1.seq))!;
  t.equal(row.attempts, 3, 'past EVENTS_MAX_ATTEMPTS …');
  t.equal((await one<{ n: number }>(`select count(*)::int as n from domain_event_dead_letters`)).n, 0, '… and still not dead-lettered: an outage is not the event’s fault');
  t.ok(row.delay_ms > 800 && row.delay_ms <= 1000, `capped at ${row.delay_ms} ms`);

  await sleep(1020);
  t.match(await good.relay.drain(), { published: 2, failed: 0 }, 'the queue is back: both go out');
  const got = await receiveAll(sqs, queue);
  t.same(got.map((e) => e.object_id), [s1.id, e1.id, e2.id], 'each once; the waiting one after the retried one');
  t.equal((await eventRow(e1.seq))!.attempts, 3, 'attempts are kept');
});

t.test('an event the queue cannot take: dead-lettered after N attempts; its publisher waits, others go on; retry and discard', async (t) => {
  await publishAllAlready();
  const queue = await newQueue('dead');
  const relay = relayOn(queue, { EVENTS_MAX_ATTEMPTS: '3', EVENTS_RETRY_BASE_MS: '20', EVENTS_RETRY_MAX_MS: '40', SQS_MAX_MESSAGE_BYTES: '4096' });
  t.teardown(() => relay.stop());
  const big = await work(DMP, 'x'.repeat(5000));
  const next = await work(DMP, 'After the big one');
  const other = await work(SONGTRUST, 'Unaffected');
  const untilDead = async () => {
    const attempts: number[] = [];
    for (let i = 0; i < 30; i++) {
      const r = await relay.relay.drain();
      if (r.failed) attempts.push((await eventRow(big.seq))?.attempts ?? -1);
      if (r.deadLettered) return { attempts, result: r };
      await sleep(45);
    }
    return { attempts, result: null };
  };
  const first = await untilDead();
  t.same(first.attempts, [1, 2, -1], 'two failed attempts, the third moves it out of the outbox');
  t.match(first.result, { deadLettered: 1, error: /MessageTooLong/ });
  t.equal((await eventRow(other.seq))!.published, true, 'the other publisher’s event went out');
  t.equal((await eventRow(next.seq))!.published, false, 'the same publisher’s later event waits (order is kept)');
  const stats = await eventStats(orm);
  t.match(stats, { pending: 1, deadLetters: 1 });
  const letters = await openDeadLetters(orm);
  t.match(letters, [{ eventSeq: big.seq, eventId: big.event_id, type: 'work.created', groupKey: DMP, publisherId: DMP, objectId: big.id, attempts: 3, lastError: /MessageTooLong/ }]);

  const listed = await runCli(['dead-letters']);
  t.equal(listed.code, 0);
  t.match(JSON.parse(listed.stdout), [{ id: letters[0]!.id, eventId: big.event_id }], 'the CLI lists it');
  const retried = await runCli(['retry', letters[0]!.id]);
  t.same([retried.code, retried.stdout.trim()], [0, `dead letter ${letters[0]!.id}: retried`], 'retry (CLI)');
  t.match(await eventRow(big.seq), { attempts: 0, published: false }, 'back in the outbox at its place');
  const second = await untilDead();
  t.equal(second.attempts.length, 3, 'it fails its attempts again');
  t.equal((await eventRow(next.seq))!.published, false, 'the later event still waits');
  const [again] = await openDeadLetters(orm);
  const discarded = await runCli(['discard', again!.id]);
  t.same([discarded.code, discarded.stdout.trim()], [0, `dead letter ${again!.id}: discarded`], 'discard (CLI)');
  t.same((await runCli(['discard', again!.id])).code, 1, 'a resolved dead letter: exit 1');
  t.match(await relay.relay.drain(), { published: 1 }, 'the waiting event goes out');
  const got = await receiveAll(sqs, queue);
  t.same(got.map((e: ReceivedEvent) => e.object_id), [other.id, next.id], 'the dead-lettered event never reached the queue');
  t.same(await openDeadLetters(orm), []);
  await t.rejects(resolveDeadLetter(orm, '1; drop table works', 'retry'), RangeError, 'ids are checked');
});

t.test('the lag metric on /metrics (the plugins on a bare Fastify), and NaN when the database is away', async (t) => {
  await publishAllAlready();
  const queue = await newQueue('metrics');
  // the gauges read the outbox whoever publishes it: here no relay runs in this process
  const bare = async (env: Record<string, string>) => {
    const app = Fastify();
    await app.register(metricsPlugin);
    await app.register(domainEventsPlugin, { orm, config: testConfig(db, { ...sqsEnv(), SQS_QUEUE_URL: queue, ...env }) });
    await app.ready();
    t.teardown(() => app.close());
    return app;
  };
  let app = await bare({ EVENTS_RELAY: 'false' });
  const scrape = async () => {
    const res = await app.inject({ url: '/metrics' });
    t.equal(res.statusCode, 200);
    t.match(res.headers['content-type'], /^text\/plain/);
    const value = (name: string) => Number(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'm').exec(res.body)?.[1]);
    return {
      lag: value('catalog_domain_events_lag_seconds'),
      pending: value('catalog_domain_events_pending'),
      dead: value('catalog_domain_events_dead_letters'),
      published: value('catalog_domain_events_published_total'),
    };
  };
  t.match(await scrape(), { lag: 0, pending: 0 }, 'nothing pending: lag 0');
  const w = await work(DMP, 'Lagging');
  await su.query(`update domain_events set occurred_at = now() - interval '120 seconds' where id = $1`, [w.seq]);
  const lagging = await scrape();
  t.equal(lagging.pending, 1);
  t.ok(lagging.lag >= 120 && lagging.lag < 180, `lag ${lagging.lag} s: the age of the oldest unpublished event`);
  t.equal(lagging.dead, (await eventStats(orm)).deadLetters);
  t.equal(await app.domainEvents.flush(), null, 'no relay in this process: flush does nothing');
  t.match(await scrape(), { pending: 1, published: 0 });

  app = await bare({ EVENTS_RELAY: 'true' }); // its relay starts at once (and on NOTIFY)
  await app.domainEvents.flush();
  t.match(await scrape(), { lag: 0, pending: 0, published: 1 }, 'published: lag back to 0, counted by the relay of this process');
  t.same(await receiveAll(sqs, queue).then((g) => g.map((e) => e.object_id)), [w.id]);

  const broken = await createOrm(testConfig(db, { JOBS_DATABASE_URL: db.jobsUrl.replace(/:\d+\//, ':1/') }), 'jobs');
  t.teardown(() => broken.close(true));
  const registry = new Registry();
  const warnings: string[] = [];
  registerDomainEventMetrics(registry, broken, { info: () => {}, error: () => {}, warn: (_o, m) => warnings.push(m ?? '') });
  t.match(await registry.metrics(), /^catalog_domain_events_lag_seconds Nan$/m, 'the database is away: NaN (prom-client writes Nan), not a stale number');
  t.match(warnings, ['domain events: stats unavailable'], 'and says why');
});

t.test('the full API serves /metrics with the event gauges', async (t) => {
  const ta = await buildTestApp(db);
  t.teardown(() => ta.close());
  const res = await ta.app.inject({ url: '/metrics' });
  t.equal(res.statusCode, 200);
  t.match(res.body, /^# TYPE catalog_domain_events_lag_seconds gauge$/m);
  t.match(res.body, /^process_cpu_seconds_total /m, 'with the process metrics');
});

/**
 * The decision log (issue 10 §3; sidecar/src/decision-log.ts, policies/src/decision-log.ts) against
 * real OpenFGA and Redis: every rule decision — allowed or denied, from OpenFGA, the LRU or Redis,
 * on the proxy path and /ext-authz — becomes a record with the contract's fields; denies are always
 * recorded, allows only as sampled; the ring buffer is bounded and served newest first on the admin
 * listener only; the stream is readable with readRecentDecisions (filters, live tail) and capped;
 * no token or assertion reaches a log line; Redis down → requests still served, records dropped
 * with the counter and one warning, and back on the stream when Redis returns; an OpenTelemetry
 * span per decision once a real (in-memory) tracer provider is registered.
 */
import t, { type Test } from 'tap';
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { trace } from '@opentelemetry/api';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { buildSidecar } from '../../sidecar/src/app.ts';
import { loadConfig } from '../../sidecar/src/config.ts';
import { appendDecisions, decisionId, decisionStreamKey, readRecentDecisions, type DecisionRecord } from '../../policies/src/decision-log.ts';
import { STREAM_CHUNK } from '../../sidecar/src/decision-log.ts';
import { AUDIENCE, ISSUER, OPENFGA_API_URL, REDIS_URL, TEST_CONDITION_TIME_BUCKET_MS, freePort, raw, startPrivateRedis, useSidecarFixture, type RawResponse } from './helpers.ts';

const viewer = randomUUID();
const stranger = randomUUID();
const publisher = randomUUID();
const work = randomUUID();

const fx = useSidecarFixture(t, {
  sidecars: 0,
  tuples: [
    { user: `user:${viewer}`, relation: 'viewer', object: `publisher:${publisher}` },
    { user: `publisher:${publisher}`, relation: 'publisher', object: `work:${work}` },
  ],
});
t.teardown(async () => {
  const r = new Redis(REDIS_URL);
  await r.del(decisionStreamKey(fx.store.storeId));
  r.disconnect();
});

/** Every log line of every sidecar of the suite, and every token / assertion it was sent or gave. */
const allLines: string[] = [];
const secrets: string[] = [];

type Started = { port: number; adminPort: number; lines: string[]; close(): Promise<void> };

/** A sidecar of the fixture's store/upstream/issuer with `env`, logging at info into `lines`; closed at `t`'s end. */
async function start(t: Test, env: Record<string, string> = {}): Promise<Started> {
  const lines: string[] = [];
  const config = loadConfig({
    LOG_LEVEL: 'info',
    OPENFGA_API_URL,
    REDIS_URL,
    JWT_ISSUER: ISSUER,
    JWT_AUDIENCE: AUDIENCE,
    SIDECAR_PORT: '0',
    ADMIN_PORT: '0',
    DECISION_LOG_FLUSH_MS: '100',
    CONDITION_TIME_BUCKET_MS: String(TEST_CONDITION_TIME_BUCKET_MS),
    ...fx.env,
    ...env,
  });
  const app = await buildSidecar(config, { logStream: { write: (l) => void (lines.push(l), allLines.push(l)) } });
  await app.listen({ host: '127.0.0.1', port: 0 });
  await app.admin.listen();
  const s = { port: (app.server.address() as { port: number }).port, adminPort: app.admin.port()!, lines, close: () => app.close() };
  t.teardown(() => s.close());
  return s;
}

/** GET `path` as `userId` with the publisher context. */
async function call(s: Started, userId: string, path = '/api/v1/works'): Promise<RawResponse> {
  const token = await fx.issuer.token(userId);
  secrets.push(token);
  return raw(s.port, 'GET', path, { authorization: `Bearer ${token}`, 'x-publisher-id': publisher });
}

/** The admin listener's /decisions. */
async function recent(s: Started, query = ''): Promise<DecisionRecord[]> {
  const res = await raw(s.adminPort, 'GET', `/decisions${query}`);
  if (res.status !== 200) throw new Error(`/decisions answered ${res.status}: ${res.text}`);
  return res.json().decisions;
}

/** A sample of the sidecar's Prometheus text (0 when absent). */
async function metric(s: Started, name: string, labels: string): Promise<number> {
  const text = (await raw(s.adminPort, 'GET', '/metrics')).text;
  const line = text.split('\n').find((l) => l.startsWith(`${name}{${labels}} `));
  return line ? Number(line.split(' ').pop()) : 0;
}

/** The `decision` log lines' records. */
const loggedDecisions = (s: Started): DecisionRecord[] =>
  s.lines.map((l) => JSON.parse(l)).filter((o) => o.msg === 'decision').map((o) => o.decision);

/** Poll until `probe` is true (every 50 ms); false after `ms`. */
async function eventually(ms: number, probe: () => Promise<boolean>): Promise<boolean> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (await probe()) return true;
    await sleep(50);
  }
  return probe();
}

const UUID_V7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

t.test('every decision is a record: allowed and denied, from OpenFGA, the LRU and Redis', async (t) => {
  const a = await start(t);
  const b = await start(t);
  const before = Date.now();
  const first = await call(a, viewer); // OpenFGA
  const second = await call(a, viewer); // a's LRU
  const third = await call(b, viewer); // b has no LRU entry: the shared Redis cache
  const denied = await call(a, stranger);
  const byWork = await call(a, viewer, `/api/v1/works/${work}`);
  t.same([first.status, second.status, third.status, denied.status, byWork.status], [200, 200, 200, 403, 200]);

  const got = await recent(a);
  t.same(got.map((r) => r.request_id), [byWork, denied, second, first].map((r) => r.headers['x-request-id']), 'newest first, one per request');
  const [w, d, lru, pdp] = got as [DecisionRecord, DecisionRecord, DecisionRecord, DecisionRecord];
  t.match(pdp, {
    subject: `user:${viewer}`,
    relation: 'works_read',
    object: `publisher:${publisher}`,
    publisher,
    rule: 'GET /api/v1/works',
    allowed: true,
    source: 'pdp',
    model_id: fx.store.modelId,
  });
  t.match(pdp.id, UUID_V7, 'id: a UUIDv7');
  t.ok(Date.parse(pdp.time) >= before - 5 && Date.parse(pdp.time) <= Date.now(), 'time: ISO 8601, now');
  t.equal(new Date(pdp.time).toISOString(), pdp.time);
  t.ok(typeof pdp.latency_ms === 'number' && pdp.latency_ms > 0 && pdp.latency_ms < 5000, `latency_ms ${pdp.latency_ms}`);
  t.same(Object.keys(pdp.context ?? {}).sort(), ['client_ip', 'current_time'], 'the condition context sent to OpenFGA');
  t.equal(pdp.context!.client_ip, '127.0.0.1');
  const bucketStart = Date.parse(String(pdp.context!.current_time));
  t.equal(bucketStart % TEST_CONDITION_TIME_BUCKET_MS, 0, 'its time: bucketed');
  t.ok(bucketStart <= Date.parse(pdp.time) && Date.parse(pdp.time) - bucketStart < TEST_CONDITION_TIME_BUCKET_MS, 'its time: the bucket of the request time');
  t.equal(lru.source, 'lru');
  t.ok(lru.latency_ms < pdp.latency_ms, 'the LRU answer was faster than the Check');
  t.match(d, { subject: `user:${stranger}`, allowed: false, source: 'pdp', rule: 'GET /api/v1/works', publisher });
  t.match(w, { relation: 'can_read', object: `work:${work}`, rule: 'GET /api/v1/works/{id}', publisher, allowed: true, source: 'pdp' }, 'a work: the context publisher');
  t.same(new Set(got.map((r) => r.id)).size, 4, 'distinct ids');

  const [fromRedis] = await recent(b);
  t.match(fromRedis, { request_id: third.headers['x-request-id'], source: 'redis', allowed: true, model_id: fx.store.modelId });

  t.same(loggedDecisions(a).reverse(), got, 'the same records as log lines ({decision}, msg "decision")');
  const line = JSON.parse(a.lines.find((l) => l.includes('"msg":"decision"'))!);
  t.equal(line.level, 30, 'at level info');
  t.equal(await metric(a, 'sidecar_decision_log_records_total', 'sink="log"'), 4);
  t.equal(await metric(a, 'sidecar_decision_log_records_total', 'sink="buffer"'), 4);
  t.equal(await metric(a, 'sidecar_decision_log_records_total', 'sink="span"'), 0, 'no tracer provider: no span recorded');
});

t.test('/ext-authz decisions are recorded like the proxy path', async (t) => {
  const s = await start(t);
  const token = await fx.issuer.token(viewer);
  secrets.push(token);
  const ok = await raw(s.port, 'GET', '/ext-authz/api/v1/works', { authorization: `Bearer ${token}`, 'x-publisher-id': publisher });
  t.equal(ok.status, 200);
  const assertion = String(ok.headers['x-identity-assertion']);
  t.match(assertion, /^eyJ[\w-]+\.[\w-]+\.[\w-]+$/, 'an assertion (kept to look for in the logs)');
  secrets.push(assertion);
  const no = await raw(s.port, 'GET', `/ext-authz/api/v1/works/${randomUUID()}`, { authorization: `Bearer ${token}`, 'x-publisher-id': publisher });
  t.equal(no.status, 403);
  const [deny, allow] = await recent(s);
  t.match(allow, { request_id: ok.headers['x-request-id'], rule: 'GET /api/v1/works', allowed: true, subject: `user:${viewer}` });
  t.match(deny, { request_id: no.headers['x-request-id'], rule: 'GET /api/v1/works/{id}', relation: 'can_read', allowed: false });
});

t.test('sampling: denies always, allows with the configured probability', async (t) => {
  const none = await start(t, { DECISION_LOG_ALLOW_SAMPLE: '0' });
  t.equal((await call(none, viewer)).status, 200);
  t.equal((await call(none, viewer)).status, 200);
  const denied = await call(none, stranger);
  t.equal(denied.status, 403);
  const got = await recent(none);
  t.same(got.map((r) => [r.request_id, r.allowed]), [[denied.headers['x-request-id'], false]], 'sample 0: only the deny');
  t.same(loggedDecisions(none).map((r) => r.allowed), [false], 'and only the deny is logged');
  t.equal(await metric(none, 'sidecar_decision_log_records_total', 'sink="buffer"'), 1);

  const all = await start(t, { DECISION_LOG_ALLOW_SAMPLE: '1' });
  for (let i = 0; i < 3; i++) t.equal((await call(all, viewer)).status, 200);
  t.equal((await recent(all, '?allowed=true')).length, 3, 'sample 1: every allow');

  t.throws(() => loadConfig({ DECISION_LOG_ALLOW_SAMPLE: '1.5' }), /DECISION_LOG_ALLOW_SAMPLE/);
  t.throws(() => loadConfig({ DECISION_LOG_BUFFER: '0' }), /DECISION_LOG_BUFFER/);
  t.same(loadConfig({}).decisionLog, { allowSample: 1, bufferSize: 10_000, flushMs: 1000, streamMaxLen: 10_000 }, 'defaults');
});

t.test('ring buffer: bounded, newest first, filtered; only on the admin listener', async (t) => {
  const s = await start(t, { DECISION_LOG_BUFFER: '5' });
  const ids: string[] = [];
  for (let i = 0; i < 7; i++) ids.push(String((await call(s, i % 3 === 2 ? stranger : viewer)).headers['x-request-id']));
  const got = await recent(s);
  t.same(got.map((r) => r.request_id), ids.slice(-5).reverse(), 'size 5: the newest 5, newest first');
  t.same((await recent(s, '?limit=2')).map((r) => r.request_id), ids.slice(-2).reverse(), 'limit');
  const denies = await recent(s, '?allowed=false');
  t.same(denies.map((r) => r.request_id), [ids[5], ids[2]].filter((id) => ids.slice(-5).includes(id!)), 'allowed=false: the denies still in the ring');
  t.ok(denies.every((r) => !r.allowed));
  t.ok((await recent(s, '?allowed=true')).every((r) => r.allowed));
  for (const q of ['?limit=0', '?limit=abc', '?limit=10001', '?allowed=yes']) {
    const res = await raw(s.adminPort, 'GET', `/decisions${q}`);
    t.equal(res.status, 400, `${q} → 400`);
    t.match(String(res.headers['content-type']), /^application\/problem\+json/);
  }
  const before = fx.upstream.received.length;
  const pub = await raw(s.port, 'GET', '/decisions');
  t.equal(pub.status, 404, 'not on the public port');
  t.notMatch(pub.text, /"decisions"|"subject"/, 'no records there');
  t.equal(fx.upstream.received.length, before, 'nothing forwarded');
});

t.test('the Redis stream: flushed, read newest first with filters and a live tail; capped', async (t) => {
  const s = await start(t);
  const responses = [await call(s, viewer), await call(s, stranger), await call(s, viewer)];
  const want = responses.map((r) => String(r.headers['x-request-id'])).reverse();
  const read = (opts = {}) => readRecentDecisions(fx.redis, fx.store.storeId, { count: 1000, ...opts });
  t.ok(
    await eventually(3000, async () => {
      const onStream = await read();
      return want.every((id) => onStream.some((r) => r.request_id === id));
    }),
    'on the stream after a flush',
  );
  const mine = (await read()).filter((r) => want.includes(r.request_id));
  t.same(mine.map((r) => r.request_id), want, 'newest first');
  t.same(mine, (await recent(s)).slice(0, 3), 'the same records as the ring');
  t.ok(await metric(s, 'sidecar_decision_log_records_total', 'sink="stream"') >= 3);

  t.same((await read({ count: 2 })).length, 2, 'count');
  t.ok((await read({ allowed: false })).every((r) => !r.allowed) && (await read({ allowed: false })).some((r) => r.request_id === want[1]), 'allowed=false');
  t.same(await read({ publisher: randomUUID() }), [], 'another publisher: none');
  t.ok((await read({ publisher })).length >= 3, 'this publisher');

  const [newest, middle] = mine as [DecisionRecord, DecisionRecord];
  t.same((await read({ sinceId: middle.id })).map((r) => r.id), [newest.id], 'live tail: only what came after');
  t.same(await read({ sinceId: newest.id }), [], 'nothing new');
  // a since record trimmed away: by id (UUIDv7 time order)
  t.same(await read({ sinceId: decisionId(Date.now() + 60_000) }), [], 'a later id: none');
  t.ok((await read({ sinceId: decisionId(Date.parse(newest.time) - 60_000) })).some((r) => r.id === newest.id), 'an earlier id not in the stream: newer ones');

  // entries that are not records are skipped
  await fx.redis.xadd(decisionStreamKey(fx.store.storeId), '*', 'd', 'not json');
  await fx.redis.xadd(decisionStreamKey(fx.store.storeId), '*', 'x', '{}');
  t.equal((await read({ count: 1 }))[0]!.id, newest.id, 'malformed entries skipped');

  // the cap (XADD MAXLEN ~): whole macro nodes are trimmed, so up to stream-node-max-entries more
  const storeId = `test-cap-${randomUUID()}`;
  t.teardown(() => fx.redis.del(decisionStreamKey(storeId)));
  const base = { time: new Date().toISOString(), request_id: 'r', subject: 'user:x', relation: 'works_read', object: 'publisher:x', rule: 'GET /x', allowed: true, source: 'pdp', model_id: 'm', latency_ms: 1 } as const;
  const batch: DecisionRecord[] = Array.from({ length: 500 }, (_, i) => ({ ...base, id: `rec-${i}` }));
  await appendDecisions(fx.redis, storeId, batch, 20);
  const node = Number(((await fx.redis.config('GET', 'stream-node-max-entries')) as string[])[1]);
  const len = await fx.redis.xlen(decisionStreamKey(storeId));
  t.ok(len >= 20 && len <= 20 + node, `capped: ${len} entries (cap 20, node ${node})`);
  t.same((await readRecentDecisions(fx.redis, storeId, { count: 3 })).map((r) => r.id), ['rec-499', 'rec-498', 'rec-497'], 'the newest kept');
  await appendDecisions(fx.redis, storeId, [], 20); // nothing to send: no command
  t.equal(await fx.redis.xlen(decisionStreamKey(storeId)), len);
});

t.test('backlog: at most DECISION_LOG_STREAM_MAXLEN records wait for a flush; close appends them', async (t) => {
  const s = await start(t, { DECISION_LOG_FLUSH_MS: '600000', DECISION_LOG_STREAM_MAXLEN: '2' });
  const ids: string[] = [];
  for (let i = 0; i < 4; i++) ids.push(String((await call(s, stranger)).headers['x-request-id']));
  t.equal(await metric(s, 'sidecar_decision_log_dropped_total', 'reason="backlog"'), 2, 'two over the bound dropped');
  t.equal((await recent(s)).length, 4, 'the ring buffer keeps all four');
  await s.close();
  const onStream = (await readRecentDecisions(fx.redis, fx.store.storeId, { count: 1000 })).map((r) => r.request_id);
  t.same(ids.filter((id) => onStream.includes(id)), ids.slice(0, 2), 'the two waiting ones appended at close');
});

t.test(`a flush of more than ${STREAM_CHUNK} records goes in pipelines of ${STREAM_CHUNK}, every record once and in order`, async (t) => {
  const s = await start(t, { DECISION_LOG_FLUSH_MS: '600000' });
  const ids: string[] = [];
  for (let i = 0; i < 2 * STREAM_CHUNK + 50; i++) ids.push(String((await call(s, i % 2 ? stranger : viewer)).headers['x-request-id']));
  await s.close(); // the one flush: 250 records
  const onStream = (await readRecentDecisions(fx.redis, fx.store.storeId, { count: 5000 })).map((r) => r.request_id).filter((id) => ids.includes(id));
  t.same(onStream, [...ids].reverse(), `all ${ids.length} on the stream once, newest first`);
});

t.test('Redis down: requests served, stream records dropped with the counter and one warning; back when it returns', async (t) => {
  const port = await freePort();
  let redis = await startPrivateRedis(port);
  t.teardown(() => redis.stop());
  const url = `redis://127.0.0.1:${port}`;
  const s = await start(t, { REDIS_URL: url, REVOCATION_MAX_STALENESS_MS: '60000' });
  const client = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1, retryStrategy: () => 200 });
  client.on('error', () => undefined);
  t.teardown(() => client.disconnect());
  const onStream = async (id: unknown) => (await readRecentDecisions(client, fx.store.storeId, { count: 100 }).catch(() => [])).some((r) => r.request_id === id);

  const up = await call(s, viewer);
  t.ok(await eventually(3000, () => onStream(up.headers['x-request-id'])), 'on the stream while Redis is up');

  await redis.stop();
  const started = Date.now();
  const during = [await call(s, viewer), await call(s, stranger)];
  t.same(during.map((r) => r.status), [200, 403], 'still decided (OpenFGA directly)');
  t.ok(Date.now() - started < 2000, 'not held up by the decision log');
  await sleep(300);
  t.equal((await call(s, stranger)).status, 403, 'a later round');
  t.ok(await eventually(2000, async () => (await metric(s, 'sidecar_decision_log_dropped_total', 'reason="redis"')) >= 3), 'dropped and counted');
  t.same((await recent(s, '?limit=3')).map((r) => r.allowed), [false, false, true], 'still in the ring buffer');
  const warnings = s.lines.filter((l) => l.includes('decision log: redis unavailable'));
  t.equal(warnings.length, 1, 'one warning for the outage');
  t.equal(JSON.parse(warnings[0]!).level, 40, 'at level warn');

  redis = await startPrivateRedis(port);
  let after: RawResponse | undefined;
  t.ok(
    await eventually(6000, async () => {
      after = await call(s, viewer);
      await sleep(150);
      return onStream(after.headers['x-request-id']);
    }),
    'records reach the stream again',
  );
  t.ok(s.lines.some((l) => l.includes('decision log: redis available again')), 'the recovery is logged');
});

t.test('OpenTelemetry: a span authz.decision per record once a tracer provider is registered', async (t) => {
  const s = await start(t);
  t.equal((await call(s, viewer)).status, 200, 'before any provider: no-op');
  const exporter = new InMemorySpanExporter();
  const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
  t.ok(trace.setGlobalTracerProvider(provider), 'registered');
  t.teardown(async () => {
    trace.disable();
    await provider.shutdown();
  });

  const newcomer = randomUUID(); // decided by OpenFGA: nothing cached for them yet
  const denied = await call(s, newcomer);
  const [record] = await recent(s, '?limit=1');
  const spans = exporter.getFinishedSpans();
  t.equal(spans.length, 1, 'one span, for the decision after registration');
  const span = spans[0]!;
  t.equal(span.name, 'authz.decision');
  t.equal(span.instrumentationScope.name, 'sidecar');
  t.same(span.attributes, {
    'authz.id': record!.id,
    'authz.request_id': denied.headers['x-request-id'],
    'authz.subject': `user:${newcomer}`,
    'authz.relation': 'works_read',
    'authz.object': `publisher:${publisher}`,
    'authz.publisher': publisher,
    'authz.rule': 'GET /api/v1/works',
    'authz.allowed': false,
    'authz.source': 'pdp',
    'authz.model_id': fx.store.modelId,
    'authz.latency_ms': record!.latency_ms,
    'authz.context': JSON.stringify(record!.context),
  });
  const durationMs = span.duration[0] * 1000 + span.duration[1] / 1e6;
  t.ok(Math.abs(durationMs - record!.latency_ms) < 1, `the span lasts the decision (${durationMs} ms vs ${record!.latency_ms} ms)`);
  t.equal(await metric(s, 'sidecar_decision_log_records_total', 'sink="span"'), 1);
});

t.test('no token, assertion or Authorization value in any log line', async (t) => {
  t.ok(allLines.length > 50, `${allLines.length} lines captured`);
  t.ok(secrets.length > 20, `${secrets.length} tokens and assertions sent or received`);
  const leaky = (l: string) => secrets.some((s) => l.includes(s) || l.includes(s.split('.')[2]!)) || /bearer |"authorization"|"x-identity-assertion"/i.test(l);
  t.ok(leaky(JSON.stringify({ msg: 'x', sig: secrets[0]!.split('.')[2] })), 'the check finds a signature');
  t.same(allLines.filter(leaky), [], 'none');
});

/**
 * Resource limits of the proxy with a small upstream pool (UPSTREAM_CONNECTIONS=2), against real
 * OpenFGA + Redis and the recording upstream: a client that aborts its upload while the body is
 * being received or while queued for an upstream connection, or a chunked body over the limit,
 * must not take the sidecar down; the queue wait is bounded (503 + Retry-After); slow-drip uploads
 * hold no upstream connection (bodies are received before a slot is taken), so other users are
 * served at once with the default timeouts, and the uploads are cut at REQUEST_TIMEOUT_MS (408)
 * without the upstream ever seeing them. This suite is about the pool as a whole, so the
 * per-subject share is switched off (UPSTREAM_SHARE_PER_SUBJECT=1: every public request here comes
 * from 127.0.0.1); the shares, the buffer budget and slow readers: fair-sharing.test.ts.
 */
import t from 'tap';
import { randomUUID } from 'node:crypto';
import { request as httpRequest, type ClientRequest } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { loadConfig } from '../../sidecar/src/config.ts';
import { raw, startSidecar, useSidecarFixture, type RawResponse, type Sidecar } from './helpers.ts';

const editor = randomUUID();
const publisher = randomUUID();

// No sidecar here: each test starts its own on the small pool (UPSTREAM_CONNECTIONS=2).
const fx = useSidecarFixture(t, {
  sidecars: 0,
  tuples: [{ user: `user:${editor}`, relation: 'editor', object: `publisher:${publisher}` }],
  env: { UPSTREAM_CONNECTIONS: '2', UPSTREAM_SHARE_PER_SUBJECT: '1' },
});
const sidecarWith = (env: Record<string, string>) => startSidecar({ ...fx.env, ...env });

/** Reject when `p` takes longer than `ms` (so a regression fails fast instead of hanging the suite). */
const within = <T>(ms: number, p: Promise<T>, what: string): Promise<T> =>
  Promise.race([p, sleep(ms, undefined, { ref: false }).then(() => Promise.reject(new Error(`${what}: no answer within ${ms} ms`)))]);

/** An upload whose body the test writes by hand; `response` settles with the answer or the connection error. */
type Upload = { req: ClientRequest; response: Promise<RawResponse | Error> };

async function startUpload(port: number): Promise<Upload> {
  const headers = {
    authorization: `Bearer ${await fx.issuer.token(editor)}`,
    'x-publisher-id': publisher,
    'content-type': 'application/octet-stream',
    'transfer-encoding': 'chunked',
  };
  const req = httpRequest({ host: '127.0.0.1', port, method: 'POST', path: '/api/v1/works', headers, agent: false });
  const response = new Promise<RawResponse | Error>((resolve) => {
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        resolve({ status: res.statusCode!, headers: res.headers, text, json: () => JSON.parse(text) });
      });
      res.on('error', resolve);
    });
    req.on('error', resolve);
  });
  req.flushHeaders();
  return { req, response };
}

/** Write `bytes` every `everyMs` until the request is closed. */
function drip(req: ClientRequest, bytes: number, everyMs: number): void {
  const timer = setInterval(() => {
    if (req.destroyed || req.writableEnded) return clearInterval(timer);
    req.write(Buffer.alloc(bytes, 1));
  }, everyMs);
  req.once('close', () => clearInterval(timer));
  req.once('response', () => clearInterval(timer));
}

/** Occupy both upstream connections with public GETs the upstream answers after `ms`. */
const occupy = (s: Sidecar, ms: number) => [raw(s.port, 'GET', `/slow/${ms}?a`), raw(s.port, 'GET', `/slow/${ms}?b`)];

t.test('config: new timeouts have documented defaults and reach the server', async (t) => {
  const c = loadConfig({});
  t.same(c.server, { requestTimeoutMs: 30_000, connectionTimeoutMs: 60_000, keepAliveTimeoutMs: 72_000, listenBacklog: 4096 });
  t.equal(c.upstream.queueTimeoutMs, 5_000);
  t.throws(() => loadConfig({ REQUEST_TIMEOUT_MS: '0' }), /REQUEST_TIMEOUT_MS/, 'a request timeout is mandatory');
  const s = await sidecarWith({ REQUEST_TIMEOUT_MS: '1234', CONNECTION_TIMEOUT_MS: '5678', KEEP_ALIVE_TIMEOUT_MS: '9012' });
  t.teardown(() => s.close());
  t.equal(s.app.server.requestTimeout, 1234);
  t.equal(s.app.server.timeout, 5678);
  t.equal(s.app.server.keepAliveTimeout, 9012);
  t.ok(s.app.server.headersTimeout <= 1234, 'headers timeout within the request timeout');
});

t.test('a client aborting its upload while the body is received, or once queued for a connection, does not crash the sidecar', async (t) => {
  const s = await sidecarWith({ UPSTREAM_QUEUE_TIMEOUT_MS: '5000' });
  t.teardown(() => s.close());
  const busy = occupy(s, 800);
  await sleep(100);
  // 1. aborted half-way through the body (which the sidecar receives before taking a slot)
  const half = await startUpload(s.port);
  half.req.write(Buffer.alloc(1024, 1));
  await sleep(200); // authorised, its body being received
  half.req.destroy();
  t.type(await half.response, Error, 'the client gave up');
  // 2. the whole body sent, then aborted while queued for one of the busy connections
  const queued = await startUpload(s.port);
  queued.req.end(Buffer.alloc(2048, 2));
  await sleep(200); // received in full and waiting for a slot
  queued.req.destroy();
  t.type(await queued.response, Error, 'the client gave up while queued');
  await sleep(100);
  t.equal((await within(1000, raw(s.port, 'GET', '/healthz'), 'healthz')).status, 200, 'still alive');
  for (const b of await Promise.all(busy)) t.equal(b.status, 200, 'the requests holding the connections finish');
  const after = await within(2000, raw(s.port, 'GET', '/docs/after-abort'), 'request after the abort');
  t.equal(after.status, 200, 'and serves requests (no slot leaked)');
  await sleep(100);
  t.notOk(fx.upstream.received.some((r) => r.method === 'POST' && (r.bytes === 1024 || r.bytes === 2048)), 'neither aborted upload reached the upstream');
});

t.test('a chunked body over the limit while the pool is busy → 413, the sidecar survives', async (t) => {
  const s = await sidecarWith({ UPSTREAM_QUEUE_TIMEOUT_MS: '5000', PROXY_BODY_LIMIT_BYTES: '1000' });
  t.teardown(() => s.close());
  const busy = occupy(s, 800);
  await sleep(100);
  const before = fx.upstream.received.length;
  const up = await startUpload(s.port);
  up.req.write(Buffer.alloc(4096, 1));
  const res = await within(2000, up.response, 'over-limit upload');
  up.req.destroy();
  t.notOk(res instanceof Error, `answered, not reset${res instanceof Error ? `: ${res.message}` : ''}`);
  if (!(res instanceof Error)) {
    t.equal(res.status, 413);
    t.equal(res.json().type, 'https://errors.music-publishing.example/payload-too-large');
    t.equal(res.headers.connection, 'close');
  }
  t.equal((await within(1000, raw(s.port, 'GET', '/healthz'), 'healthz')).status, 200, 'still alive');
  await Promise.all(busy);
  t.equal((await within(2000, raw(s.port, 'GET', '/docs/after-413'), 'request after the 413')).status, 200, 'no slot leaked');
  t.notOk(fx.upstream.received.slice(before).some((r) => r.method === 'POST'), 'the over-limit body never reached the upstream');
});

t.test('waiting for an upstream connection is bounded: 503 upstream-unavailable with Retry-After', async (t) => {
  const s = await sidecarWith({ UPSTREAM_QUEUE_TIMEOUT_MS: '300' });
  t.teardown(() => s.close());
  const busy = occupy(s, 1500);
  await sleep(100);
  const started = Date.now();
  const res = await within(1200, raw(s.port, 'GET', '/docs/queued'), 'queued request');
  const waited = Date.now() - started;
  t.equal(res.status, 503);
  t.equal(res.json().type, 'https://errors.music-publishing.example/upstream-unavailable');
  t.equal(res.headers['retry-after'], '1');
  t.ok(waited >= 250 && waited < 1000, `answered after the queue timeout (${waited} ms)`);
  t.equal((await within(500, raw(s.port, 'GET', '/readyz'), 'readyz')).json().checks.upstream, 'ok', 'the readiness probe does not queue behind proxied requests');
  for (const b of await Promise.all(busy)) t.equal(b.status, 200);
});

t.test('slow-drip uploads hold no upstream connection: with the default timeouts other users are served at once', async (t) => {
  const s = await sidecarWith({}); // REQUEST_TIMEOUT_MS 30 s > UPSTREAM_QUEUE_TIMEOUT_MS 5 s: the defaults
  t.teardown(() => s.close());
  const before = fx.upstream.received.length;
  const N = 8; // four times the pool
  const uploads: Upload[] = [];
  for (let i = 0; i < N; i++) {
    const up = await startUpload(s.port);
    drip(up.req, 16, 100);
    uploads.push(up);
  }
  await sleep(500); // every upload authorised and dripping
  for (let i = 0; i < 3; i++) {
    const started = Date.now();
    const other = await within(1000, raw(s.port, 'GET', `/docs/other-user-${i}`), "another user's request");
    t.equal(other.status, 200, "another user's request is served");
    t.ok(Date.now() - started < 500, `at once, not after a queue timeout (${Date.now() - started} ms)`);
  }
  const authorised = await within(1000, raw(s.port, 'GET', '/api/v1/works', { authorization: `Bearer ${await fx.issuer.token(editor)}`, 'x-publisher-id': publisher }), "the uploader's own GET");
  t.equal(authorised.status, 200, 'the uploader itself can still read');
  for (const u of uploads) u.req.destroy();
  for (const r of await within(2000, Promise.all(uploads.map((u) => u.response)), 'aborted uploads')) t.type(r, Error, 'the uploads were aborted by their clients');
  await sleep(100);
  t.notOk(fx.upstream.received.slice(before).some((r) => r.method === 'POST'), 'no partial upload reached the upstream');
  t.equal((await within(2000, raw(s.port, 'GET', '/docs/after'), 'request after the uploads')).status, 200, 'the sidecar is fine');
});

t.test('slow-drip uploads are cut at REQUEST_TIMEOUT_MS (408) and never reach the upstream', async (t) => {
  // The deadline itself, shortened so the suite does not wait 30 s; the fairness above needs no change.
  const s = await sidecarWith({ REQUEST_TIMEOUT_MS: '1000' });
  t.teardown(() => s.close());
  const before = fx.upstream.received.length;
  const abortedBefore = fx.upstream.aborted.length;
  const N = 4;
  const uploads: Upload[] = [];
  const started = Date.now();
  for (let i = 0; i < N; i++) {
    const up = await startUpload(s.port);
    drip(up.req, 16, 100);
    uploads.push(up);
  }
  const results = await within(3000, Promise.all(uploads.map((u) => u.response)), 'slow uploads');
  for (const u of uploads) u.req.destroy();
  for (const [i, r] of results.entries()) {
    t.notOk(r instanceof Error, `upload ${i}: answered${r instanceof Error ? `: ${r.message}` : ''}`);
    if (r instanceof Error) continue;
    t.equal(r.status, 408, `upload ${i}: 408`);
    t.equal(r.json().type, 'https://errors.music-publishing.example/bad-request');
    t.equal(r.headers.connection, 'close');
  }
  const elapsed = Date.now() - started;
  t.ok(elapsed >= 900 && elapsed < 2500, `cut at the deadline (${elapsed} ms)`);
  await sleep(100);
  t.notOk(fx.upstream.received.slice(before).some((r) => r.method === 'POST'), 'no upload reached the upstream');
  t.equal(fx.upstream.aborted.length, abortedBefore, 'nor was any upstream request started for them');
  t.equal((await within(2000, raw(s.port, 'GET', '/docs/after'), 'request after the uploads')).status, 200, 'connections free');
});

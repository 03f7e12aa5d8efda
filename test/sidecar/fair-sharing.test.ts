/**
 * Fair sharing of the upstream connections (issue 9 §1; docs/CONTRACTS.md, "Upstream admission"),
 * against real OpenFGA + Redis, real tokens from the fixture's issuer and a real upstream server
 * whose answers the query string shapes (`delay`, `size`, `chunked`):
 * - with the DEFAULT settings, 70 slow-drip uploads from one creator, and slow readers of large
 *   responses (buffered, and huge streamed ones), do not make another publisher's GET wait more
 *   than 100 ms longer than its baseline median;
 * - huge and chunked responses still stream byte-for-byte;
 * - per-subject and per-publisher shares of the slots: a capped subject waits (and times out with
 *   503 + Retry-After) while other subjects and publishers go ahead;
 * - the buffer budget (PROXY_BUFFER_TOTAL_BYTES and its shares): request bodies that do not fit →
 *   503 + Retry-After, responses that do not fit stream instead; 413 (Content-Length and chunked),
 *   408 and client aborts still answer as before and give every byte back.
 */
import t, { type Test } from 'tap';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { createServer, request as httpRequest, type ClientRequest, type IncomingHttpHeaders } from 'node:http';
import { connect, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import type { FastifyInstance } from 'fastify';
import { loadConfig } from '../../sidecar/src/config.ts';
import { QueueTimeout, createUpstreamSlots } from '../../sidecar/src/stages/upstream-slots.ts';
import { startSidecar, useSidecarFixture, type Sidecar } from './helpers.ts';

// Publisher A: a creator (the attacker) and two editors; publisher B: an editor (the victim).
const creator = randomUUID();
const memberA2 = randomUUID();
const memberA3 = randomUUID();
const memberB = randomUUID();
const pubA = randomUUID();
const pubB = randomUUID();

const fx = useSidecarFixture(t, {
  sidecars: 0,
  tuples: [
    { user: `user:${creator}`, relation: 'creator', object: `publisher:${pubA}` },
    { user: `user:${memberA2}`, relation: 'editor', object: `publisher:${pubA}` },
    { user: `user:${memberA3}`, relation: 'editor', object: `publisher:${pubA}` },
    { user: `user:${memberB}`, relation: 'editor', object: `publisher:${pubB}` },
  ],
});

// --- a shaped upstream ---------------------------------------------------------------------------
/** 32 MiB of random bytes: every response body is a prefix of it. */
const PATTERN = randomBytes(32 * 1024 * 1024);
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

type Shaped = {
  url: string;
  received: { method: string; url: string; bytes: number; headers: IncomingHttpHeaders }[];
  /** Highest number of requests in flight at once, per `sub:<subject>` and `pub:<publisher>`. */
  maxInFlight: Map<string, number>;
  close(): Promise<void>;
};

/** The subject of the identity assertion the sidecar attached (its payload, unverified: the test's own upstream). */
function assertedSubject(headers: IncomingHttpHeaders): string | undefined {
  const jwt = headers['x-identity-assertion'];
  if (typeof jwt !== 'string') return undefined;
  return JSON.parse(Buffer.from(jwt.split('.')[1]!, 'base64url').toString('utf8')).sub;
}

/** `?delay=<ms>` waits before answering, `?size=<bytes>` answers that prefix of PATTERN, `&chunked=1` without Content-Length. */
async function startShapedUpstream(): Promise<Shaped> {
  const received: Shaped['received'] = [];
  const inFlight = new Map<string, number>();
  const maxInFlight = new Map<string, number>();
  const server = createServer((req, res) => {
    const keys = [`sub:${assertedSubject(req.headers) ?? 'anonymous'}`, `pub:${req.headers['x-publisher-id'] ?? 'none'}`];
    for (const k of keys) {
      inFlight.set(k, (inFlight.get(k) ?? 0) + 1);
      maxInFlight.set(k, Math.max(maxInFlight.get(k) ?? 0, inFlight.get(k)!));
    }
    res.once('close', () => {
      for (const k of keys) inFlight.set(k, inFlight.get(k)! - 1);
    });
    let bytes = 0;
    req.on('data', (c: Buffer) => (bytes += c.length));
    req.on('end', async () => {
      received.push({ method: req.method!, url: req.url!, bytes, headers: req.headers });
      const q = new URL(req.url!, 'http://x').searchParams;
      const delay = Number(q.get('delay') ?? 0);
      if (delay) await sleep(delay);
      if (res.destroyed) return;
      const size = q.get('size');
      if (size === null) {
        res.setHeader('content-type', 'application/json');
        return res.end(JSON.stringify({ ok: true, bytes }));
      }
      const body = PATTERN.subarray(0, Number(size));
      res.setHeader('content-type', 'application/octet-stream');
      if (q.get('chunked') === '1') {
        res.write(body); // headers go out without a length: Transfer-Encoding: chunked
        return res.end();
      }
      res.setHeader('content-length', String(body.length));
      res.end(body);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as { port: number }).port}`,
    received,
    maxInFlight,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

let upstream: Shaped;
t.before(async () => {
  upstream = await startShapedUpstream();
});
t.teardown(() => upstream?.close());

/** A sidecar on the shaped upstream: the fixture's stack (store, routes, issuer) and `env` — nothing else changed. */
async function sidecarWith(t: Test, env: Record<string, string> = {}): Promise<Sidecar> {
  const s = await startSidecar({ ...fx.env, UPSTREAM_URL: upstream.url, ...env });
  t.teardown(() => s.close());
  return s;
}

// --- metrics ---------------------------------------------------------------------------------------
/** The sidecar's Prometheus text (from its admin listener when it has one). */
async function scrape(s: Sidecar): Promise<string> {
  const admin = (s.app as unknown as { admin?: { app: FastifyInstance } }).admin;
  return (await (admin?.app ?? s.app).inject({ method: 'GET', url: '/metrics' })).body;
}

/** Sum of the samples of `name` whose labels include `labels`. */
async function metric(s: Sidecar, name: string, labels: Record<string, string> = {}): Promise<number> {
  const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  let sum = 0;
  for (const line of (await scrape(s)).split('\n')) {
    const m = /^([a-z_]+)(\{[^}]*\})? (\S+)$/.exec(line);
    if (m && m[1] === name && want.every((w) => (m[2] ?? '').includes(w))) sum += Number(m[3]);
  }
  return sum;
}

/** Poll `check` every 20 ms until true. @throws after `ms` with `what`. */
async function until(what: string, ms: number, check: () => Promise<boolean> | boolean): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await sleep(20);
  }
}

// --- clients ---------------------------------------------------------------------------------------
const auth = async (sub: string, publisher: string) => ({ authorization: `Bearer ${await fx.issuer.token(sub)}`, 'x-publisher-id': publisher });

type BinaryResponse = { status: number; headers: IncomingHttpHeaders; body: Buffer; ms: number };

/** One request on its own connection, the body read in full as bytes; `ms` until the response ended. */
function fetchBinary(port: number, method: string, path: string, headers: Record<string, string>, body?: Buffer): Promise<BinaryResponse> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, method, path, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks), ms: performance.now() - started }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

/**
 * The victim: `n` sequential GETs of publisher B's works by its editor (one token, as a real
 * client would reuse it). @returns their latencies (ms) and statuses.
 */
async function victimGets(s: Sidecar, n: number, headers: Record<string, string>): Promise<{ ms: number[]; statuses: number[] }> {
  const ms: number[] = [];
  const statuses: number[] = [];
  for (let i = 0; i < n; i++) {
    const r = await fetchBinary(s.port, 'GET', `/api/v1/works?victim=${i}`, headers);
    ms.push(r.ms);
    statuses.push(r.status);
  }
  return { ms, statuses };
}

/** An upload whose body the test writes by hand; `response` settles with the status or the connection error. */
type Upload = { req: ClientRequest; response: Promise<{ status: number; headers: IncomingHttpHeaders; text: string } | Error>; settled: () => boolean };

function startUpload(port: number, headers: Record<string, string>, path = '/api/v1/works'): Upload {
  const req = httpRequest({ host: '127.0.0.1', port, method: 'POST', path, headers: { 'content-type': 'application/octet-stream', ...headers }, agent: false });
  let settled = false;
  const response = new Promise<{ status: number; headers: IncomingHttpHeaders; text: string } | Error>((resolve) => {
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, text: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', resolve);
    });
    req.on('error', resolve);
  }).finally(() => (settled = true));
  if (!headers['content-length']) req.setHeader('transfer-encoding', 'chunked');
  req.flushHeaders();
  return { req, response, settled: () => settled };
}

/** Write `bytes` every `everyMs` until the request is closed. */
function drip(req: ClientRequest, bytes: number, everyMs: number): void {
  const timer = setInterval(() => {
    if (req.destroyed || req.writableEnded) return clearInterval(timer);
    req.write(Buffer.alloc(bytes, 1));
  }, everyMs);
  req.once('close', () => clearInterval(timer));
}

/** A client that sends a GET and never reads the answer (its socket is never put in flowing mode). */
function slowReader(port: number, path: string, headers: Record<string, string>): Socket {
  const sock = connect(port, '127.0.0.1');
  sock.on('error', () => undefined);
  const lines = Object.entries({ host: '127.0.0.1', ...headers }).map(([k, v]) => `${k}: ${v}\r\n`).join('');
  sock.write(`GET ${path} HTTP/1.1\r\n${lines}\r\n`);
  return sock;
}

// =====================================================================================================
t.test('config: documented defaults, shares in (0, 1], the buffer must hold a largest body per share', async (t) => {
  const c = loadConfig({});
  t.equal(c.upstream.responseBufferBytes, 1024 * 1024, 'PROXY_RESPONSE_BUFFER_BYTES: 1 MiB');
  t.equal(c.upstream.bufferTotalBytes, 256 * 1024 * 1024, 'PROXY_BUFFER_TOTAL_BYTES: 256 MiB');
  t.equal(c.upstream.sharePerSubject, 0.25, 'UPSTREAM_SHARE_PER_SUBJECT: 0.25');
  t.equal(c.upstream.sharePerPublisher, 0.5, 'UPSTREAM_SHARE_PER_PUBLISHER: 0.5');
  t.throws(() => loadConfig({ UPSTREAM_SHARE_PER_SUBJECT: '0' }), /UPSTREAM_SHARE_PER_SUBJECT/);
  t.throws(() => loadConfig({ UPSTREAM_SHARE_PER_PUBLISHER: '1.5' }), /UPSTREAM_SHARE_PER_PUBLISHER/);
  t.throws(() => loadConfig({ PROXY_BUFFER_TOTAL_BYTES: String(32 * 1024 * 1024) }), /PROXY_BUFFER_TOTAL_BYTES/, '32 MiB × 0.25 < the 10 MiB body limit');
  t.equal(loadConfig({ PROXY_BUFFER_TOTAL_BYTES: String(40 * 1024 * 1024) }).upstream.bufferTotalBytes, 40 * 1024 * 1024, '40 MiB × 0.25 holds it');
});

t.test('slots: subject and publisher shares; a capped waiter does not hold back the ones behind it', async (t) => {
  const waits: string[] = [];
  const slots = createUpstreamSlots(4, { shares: { perSubject: 0.5, perPublisher: 0.75 }, onWait: (b) => waits.push(b) });
  t.same(slots.caps, { total: 4, subject: 2, publisher: 3 }, 'caps: floor(share × slots)');
  const signal = new AbortController().signal;
  const a = { subject: 'a', publisher: 'P' };
  const b = { subject: 'b', publisher: 'P' };
  const c = { subject: 'c', publisher: 'P' };
  const q = { subject: 'q', publisher: 'Q' };
  const order: string[] = [];
  const a1 = await slots.acquire(1000, signal, a);
  await slots.acquire(1000, signal, a);
  const a3 = slots.acquire(1000, signal, a).then((r) => (order.push('a3'), r));
  t.same(waits, ['subject'], "a's third request waits for a's share");
  await slots.acquire(1000, signal, b); // P now holds 3 = its cap
  const c1 = slots.acquire(300, signal, c).then((r) => (order.push('c1'), r));
  t.same(waits, ['subject', 'publisher'], "c waits for P's share, though a slot is free");
  const q1 = await slots.acquire(1000, signal, q); // Q fits: the 4th slot, ahead of the two waiters
  const q2 = slots.acquire(1000, signal, q).then((r) => (order.push('q2'), r));
  t.same(waits, ['subject', 'publisher', 'total'], 'the pool is full');
  t.same(slots.stats(), { active: 4, waiting: 3 });
  a1(); // a back to 1 of 2, P to 2 of 3: a3 (first in line) fits
  await a3;
  t.same(order, ['a3']);
  q1(); // a slot frees: c (ahead) is still held back by P's share, q2 behind it fits
  await q2;
  t.same(order, ['a3', 'q2'], 'the waiter held back by its share does not block the one behind it');
  t.same(slots.stats(), { active: 4, waiting: 1 });
  const err = await c1.catch((e: unknown) => e);
  t.type(err, QueueTimeout, 'the capped waiter times out');
  t.equal((err as QueueTimeout).blocker, 'publisher', '… naming what held it back');
  t.same(order, ['a3', 'q2'], 'it was never granted');
  const ac = new AbortController();
  const aborted = slots.acquire(10_000, ac.signal, c);
  ac.abort(new Error('client gone'));
  t.match(await aborted.catch((e: Error) => e.message), 'client gone', 'an abort leaves the queue at once');
  const unlimited = createUpstreamSlots(0, { shares: { perSubject: 0.01, perPublisher: 0.01 } });
  for (let i = 0; i < 100; i++) await unlimited.acquire(0, signal, a);
  t.equal(unlimited.stats().active, 100, '0 slots = unlimited, no share caps');
});

t.test('DEFAULT settings: 70 slow-drip uploads from one creator do not delay another publisher’s GETs', async (t) => {
  const s = await sidecarWith(t); // nothing but the test stack's URLs: REQUEST_TIMEOUT_MS 30 s, queue 5 s, 64 slots
  const victim = await auth(memberB, pubB);
  await victimGets(s, 5, victim); // warm-up: token and decision caches, connections
  const base = await victimGets(s, 25, victim);
  t.same(new Set(base.statuses), new Set([200]), 'baseline GETs succeed');

  const before = upstream.received.length;
  const uploads: Upload[] = [];
  for (let i = 0; i < 70; i++) {
    const up = startUpload(s.port, await auth(creator, pubA));
    up.req.write(Buffer.alloc(16, 1));
    drip(up.req, 16, 200);
    uploads.push(up);
  }
  t.teardown(() => uploads.forEach((u) => u.req.destroy()));
  // Every upload passed the pipeline (authorised as a creator) and is being received.
  await until('all 70 uploads authorised and buffering', 15_000, async () => (await metric(s, 'sidecar_proxy_buffered_bytes')) >= 70 * 16);
  const during = await victimGets(s, 25, victim);
  const inUse = await metric(s, 'sidecar_upstream_slots_in_use');
  t.same(new Set(during.statuses), new Set([200]), 'every GET during the attack succeeds');
  const mb = median(base.ms);
  const md = median(during.ms);
  t.ok(md - mb < 100, `median GET ${md.toFixed(1)} ms during the attack vs ${mb.toFixed(1)} ms before (< 100 ms longer)`);
  t.equal(inUse, 0, 'the dripping uploads hold no upstream slot');
  t.equal(uploads.filter((u) => u.settled()).length, 0, 'all 70 uploads were still being sent throughout');
  t.notOk(upstream.received.slice(before).some((r) => r.method === 'POST'), 'no partial upload reached the upstream');

  for (const u of uploads) u.req.destroy();
  await until('the buffered bytes given back', 5000, async () => (await metric(s, 'sidecar_proxy_buffered_bytes')) === 0);
  const done = startUpload(s.port, await auth(creator, pubA));
  done.req.end(Buffer.alloc(1000, 3));
  const res = await done.response;
  t.equal(res instanceof Error ? res.message : res.status, 200, 'a complete upload goes through');
  t.equal(upstream.received.at(-1)!.bytes, 1000);
  t.equal(upstream.received.at(-1)!.headers['content-length'], '1000', 'sent upstream with Content-Length');
});

t.test('DEFAULT settings: slow readers of large responses do not delay another publisher’s GETs', async (t) => {
  const s = await sidecarWith(t);
  const victim = await auth(memberB, pubB);
  await victimGets(s, 5, victim);
  const base = await victimGets(s, 25, victim);
  t.same(new Set(base.statuses), new Set([200]), 'baseline GETs succeed');
  const mb = median(base.ms);
  const readers: Socket[] = [];
  t.teardown(() => readers.forEach((r) => r.destroy()));

  // 1. Responses under PROXY_RESPONSE_BUFFER_BYTES: read whole, the slot freed before the client reads.
  const N = 48; // 48 MB: within the creator's share (64 MiB) of the 256 MiB buffer
  const buffered0 = await metric(s, 'sidecar_proxy_responses_total', { mode: 'buffered' });
  for (let i = 0; i < N; i++) readers.push(slowReader(s.port, `/api/v1/works?size=1000000&r=${i}`, await auth(creator, pubA)));
  await until(`${N} responses buffered`, 15_000, async () => (await metric(s, 'sidecar_proxy_responses_total', { mode: 'buffered' })) - buffered0 >= N);
  t.equal(await metric(s, 'sidecar_upstream_slots_in_use'), 0, 'no slot held for the clients that do not read');
  const during = await victimGets(s, 25, victim);
  t.same(new Set(during.statuses), new Set([200]), 'every GET during the slow reads succeeds');
  const md = median(during.ms);
  t.ok(md - mb < 100, `median GET ${md.toFixed(1)} ms beside ${N} slow readers vs ${mb.toFixed(1)} ms (< 100 ms longer)`);

  // 2. 70 huge responses (32 MiB: over the buffer limit, and more than the socket buffers take)
  //    stream and keep their slot — but only the creator's share of them.
  const streamed0 = await metric(s, 'sidecar_proxy_responses_total', { mode: 'streamed' });
  for (let i = 0; i < 70; i++) readers.push(slowReader(s.port, `/api/v1/works?size=${32 * 1024 * 1024}&h=${i}`, await auth(creator, pubA)));
  await until('16 huge responses streaming (the subject share of 64 slots)', 15_000, async () => (await metric(s, 'sidecar_proxy_responses_total', { mode: 'streamed' })) - streamed0 >= 16);
  await sleep(200);
  const holding = await metric(s, 'sidecar_upstream_slots_in_use');
  t.ok(holding > 0 && holding <= 16, `the huge slow reads hold slots, at most the creator's share: ${holding} of 64`);
  t.ok((await metric(s, 'sidecar_upstream_waits_total', { reason: 'subject_share' })) >= 1, 'the rest wait for the share');
  const huge = await victimGets(s, 25, victim);
  t.same(new Set(huge.statuses), new Set([200]), 'every GET beside the huge slow reads succeeds');
  const mh = median(huge.ms);
  t.ok(mh - mb < 100, `median GET ${mh.toFixed(1)} ms beside the huge slow reads vs ${mb.toFixed(1)} ms (< 100 ms longer)`);
  t.ok((upstream.maxInFlight.get(`sub:${creator}`) ?? 0) <= 16, `the upstream never saw more than 16 of the creator's requests at once (${upstream.maxInFlight.get(`sub:${creator}`)})`);

  for (const r of readers) r.destroy();
  await until('slots and bytes given back once the slow readers leave', 10_000, async () => (await metric(s, 'sidecar_upstream_slots_in_use')) === 0 && (await metric(s, 'sidecar_proxy_buffered_bytes')) === 0);
});

t.test('a response within the buffer limit frees its slot even when the socket buffers cannot take it', async (t) => {
  // A larger limit than the default, so the responses (32 MiB) are bigger than what the kernel's
  // socket buffers absorb on their own: without the buffering, these 4 readers would hold both slots.
  const s = await sidecarWith(t, { UPSTREAM_CONNECTIONS: '2', PROXY_RESPONSE_BUFFER_BYTES: String(40 * 1024 * 1024), UPSTREAM_SHARE_PER_SUBJECT: '1', UPSTREAM_SHARE_PER_PUBLISHER: '1' });
  const victim = await auth(memberB, pubB);
  await victimGets(s, 3, victim);
  const base = await victimGets(s, 15, victim);
  const readers: Socket[] = [];
  t.teardown(() => readers.forEach((r) => r.destroy()));
  for (let i = 0; i < 4; i++) readers.push(slowReader(s.port, `/api/v1/works?size=${32 * 1024 * 1024}&big=${i}`, await auth(creator, pubA)));
  await until('4 responses buffered', 20_000, async () => (await metric(s, 'sidecar_proxy_responses_total', { mode: 'buffered' })) >= 4 + 18);
  t.equal(await metric(s, 'sidecar_upstream_slots_in_use'), 0, 'both slots free while 4 clients sit on 32 MiB answers');
  t.ok((await metric(s, 'sidecar_proxy_buffered_bytes')) > 64 * 1024 * 1024, 'the unread answers are held in the buffer instead');
  const during = await victimGets(s, 15, victim);
  t.same(new Set(during.statuses), new Set([200]), 'the other publisher is served');
  t.ok(median(during.ms) - median(base.ms) < 100, `median GET ${median(during.ms).toFixed(1)} ms vs ${median(base.ms).toFixed(1)} ms (< 100 ms longer)`);
  for (const r of readers) r.destroy();
  await until('every byte given back', 10_000, async () => (await metric(s, 'sidecar_proxy_buffered_bytes')) === 0);
});

t.test('responses over the buffer limit, or chunked, still arrive byte-for-byte', async (t) => {
  const s = await sidecarWith(t);
  const h = await auth(memberB, pubB);
  const cases = [
    { q: 'size=1000000', mode: 'buffered', length: true },
    { q: 'size=1000000&chunked=1', mode: 'buffered', length: true },
    { q: `size=${20 * 1024 * 1024}`, mode: 'streamed', length: true },
    { q: `size=${20 * 1024 * 1024}&chunked=1`, mode: 'streamed', length: false },
    { q: 'size=0', mode: 'buffered', length: true },
  ];
  for (const c of cases) {
    const before = await metric(s, 'sidecar_proxy_responses_total', { mode: c.mode });
    const r = await fetchBinary(s.port, 'GET', `/api/v1/works?${c.q}`, h);
    const size = Number(/size=(\d+)/.exec(c.q)![1]);
    t.equal(r.status, 200, `${c.q}: 200`);
    t.equal(r.body.length, size, `${c.q}: ${size} bytes`);
    t.equal(sha(r.body), sha(PATTERN.subarray(0, size)), `${c.q}: the same bytes`);
    t.equal(r.headers['content-length'], c.length ? String(size) : undefined, `${c.q}: Content-Length ${c.length ? 'set' : 'absent (chunked)'}`);
    t.equal(r.headers['content-type'], 'application/octet-stream');
    t.equal((await metric(s, 'sidecar_proxy_responses_total', { mode: c.mode })) - before, 1, `${c.q}: ${c.mode}`);
  }
  const head = await fetchBinary(s.port, 'GET', '/docs/x', {});
  t.same(JSON.parse(head.body.toString('utf8')), { ok: true, bytes: 0 }, 'JSON answers unchanged');
  t.equal(head.headers['content-type'], 'application/json');
  t.equal(await metric(s, 'sidecar_proxy_buffered_bytes'), 0, 'every response byte given back');
});

t.test('shares: one subject (or publisher) cannot hold more than its share of the slots; others proceed', async (t) => {
  const s = await sidecarWith(t, { UPSTREAM_CONNECTIONS: '4', UPSTREAM_SHARE_PER_SUBJECT: '0.5', UPSTREAM_SHARE_PER_PUBLISHER: '0.75', UPSTREAM_QUEUE_TIMEOUT_MS: '400' });
  const [hc, h2, h3, hb] = await Promise.all([auth(creator, pubA), auth(memberA2, pubA), auth(memberA3, pubA), auth(memberB, pubB)]);
  for (const h of [hc, h2, h3, hb]) t.equal((await fetchBinary(s.port, 'GET', '/api/v1/works?warm', h)).status, 200, 'warm-up');
  upstream.maxInFlight.clear();
  const waits0 = { subject: await metric(s, 'sidecar_upstream_waits_total', { reason: 'subject_share' }), publisher: await metric(s, 'sidecar_upstream_waits_total', { reason: 'publisher_share' }) };
  // The creator asks for 4 slow answers: 2 (its share of 4 slots) run, 2 wait and time out.
  const creatorCalls = [0, 1, 2, 3].map((i) => fetchBinary(s.port, 'GET', `/api/v1/works?delay=1500&c=${i}`, hc));
  await sleep(150);
  // Another member of A takes a third slot: A holds 3 = its share (0.75 × 4).
  const member2 = fetchBinary(s.port, 'GET', '/api/v1/works?delay=1500&m=2', h2);
  await sleep(150);
  // Publisher B goes ahead of the creator's waiting requests (a slot is free, B's shares are untouched).
  const b = await fetchBinary(s.port, 'GET', '/api/v1/works?b', hb);
  t.equal(b.status, 200, "B's GET is served");
  t.ok(b.ms < 300, `at once (${b.ms.toFixed(0)} ms), not behind the creator's queued requests`);
  // A third member of A waits for A's share and times out, though a slot is free.
  const member3 = await fetchBinary(s.port, 'GET', '/api/v1/works?m=3', h3);
  t.equal(member3.status, 503, "A's third member: 503 (A's share is in use)");
  t.equal(JSON.parse(member3.body.toString('utf8')).type, 'https://errors.music-publishing.example/upstream-unavailable');
  t.equal(member3.headers['retry-after'], '1');
  t.ok(member3.ms >= 350 && member3.ms < 1200, `after the queue timeout (${member3.ms.toFixed(0)} ms)`);
  const results = await Promise.all(creatorCalls);
  t.same(results.map((r) => r.status).sort(), [200, 200, 503, 503], "two of the creator's requests ran, two timed out waiting for its share");
  for (const r of results.filter((x) => x.status === 503)) {
    t.equal(r.headers['retry-after'], '1', '503 with Retry-After');
    t.ok(r.ms < 1200, `the capped ones were answered at the queue timeout (${r.ms.toFixed(0)} ms)`);
  }
  t.equal((await member2).status, 200);
  t.equal(upstream.maxInFlight.get(`sub:${creator}`), 2, 'the upstream never saw more than 2 of the creator’s requests at once');
  t.equal(upstream.maxInFlight.get(`pub:${pubA}`), 3, '… nor more than 3 of publisher A’s');
  t.ok((await metric(s, 'sidecar_upstream_waits_total', { reason: 'subject_share' })) - waits0.subject >= 2, 'waits for the subject share counted');
  t.ok((await metric(s, 'sidecar_upstream_waits_total', { reason: 'publisher_share' })) - waits0.publisher >= 1, 'waits for the publisher share counted');
  t.ok((await metric(s, 'sidecar_upstream_rejected_total', { reason: 'queue_timeout' })) >= 3, 'queue timeouts counted');
});

t.test('shares: a request held back by its share is served as soon as its own slot frees', async (t) => {
  const s = await sidecarWith(t, { UPSTREAM_CONNECTIONS: '4', UPSTREAM_SHARE_PER_SUBJECT: '0.5' }); // queue timeout: the default 5 s
  const hc = await auth(creator, pubA);
  const calls = [0, 1, 2].map((i) => fetchBinary(s.port, 'GET', `/api/v1/works?delay=500&w=${i}`, hc));
  const results = await Promise.all(calls);
  t.same(results.map((r) => r.status), [200, 200, 200], 'all three served');
  const slowest = Math.max(...results.map((r) => r.ms));
  t.ok(slowest >= 900 && slowest < 3000, `the third waited for one of the first two (${slowest.toFixed(0)} ms)`);
});

t.test('memory: PROXY_BUFFER_TOTAL_BYTES and its per-subject share bound the bytes held; 503 + Retry-After beyond', async (t) => {
  const KiB = 1024;
  const s = await sidecarWith(t, {
    PROXY_BODY_LIMIT_BYTES: String(64 * KiB),
    PROXY_BUFFER_TOTAL_BYTES: String(256 * KiB),
    UPSTREAM_SHARE_PER_SUBJECT: '0.5', // 128 KiB
    UPSTREAM_SHARE_PER_PUBLISHER: '1',
  });
  const buffered = () => metric(s, 'sidecar_proxy_buffered_bytes');
  const [hc, h2, hb] = await Promise.all([auth(creator, pubA), auth(memberA2, pubA), auth(memberB, pubB)]);
  const before = upstream.received.length;
  const open: Upload[] = [];
  t.teardown(() => open.forEach((u) => u.req.destroy()));
  const hold = async (h: Record<string, string>, bytes: number) => {
    const u = startUpload(s.port, h);
    u.req.write(Buffer.alloc(bytes, 5));
    open.push(u);
    return u;
  };
  // The creator holds 120 KiB in two unfinished uploads.
  const first = await hold(hc, 60 * KiB);
  await hold(hc, 60 * KiB);
  await until('120 KiB held', 5000, async () => (await buffered()) === 120 * KiB);
  // A third of 60 KiB by Content-Length would pass the creator's 128 KiB share: 503 before reading it.
  const over = await fetchBinary(s.port, 'POST', '/api/v1/works', { ...hc, 'content-type': 'application/octet-stream', 'content-length': String(60 * KiB) }, Buffer.alloc(60 * KiB));
  t.equal(over.status, 503, "over the subject's share of the buffer: 503");
  t.equal(JSON.parse(over.body.toString('utf8')).type, 'https://errors.music-publishing.example/upstream-unavailable');
  t.equal(over.headers['retry-after'], '1');
  t.equal(over.headers.connection, 'close', 'its body was left unread: Connection: close');
  t.ok(over.ms < 1000, `at once (${over.ms.toFixed(0)} ms)`);
  // Another member fills the buffer up to 230 KiB; then a chunked body passes the total: 503 half-way.
  await hold(h2, 60 * KiB);
  await hold(h2, 50 * KiB);
  await until('230 KiB held', 5000, async () => (await buffered()) === 230 * KiB);
  const third = await hold(hb, 20 * KiB);
  await until('250 KiB held', 5000, async () => (await buffered()) === 250 * KiB);
  third.req.write(Buffer.alloc(20 * KiB, 6));
  const full = await third.response;
  t.notOk(full instanceof Error, `answered, not reset${full instanceof Error ? `: ${full.message}` : ''}`);
  if (!(full instanceof Error)) {
    t.equal(full.status, 503, 'over PROXY_BUFFER_TOTAL_BYTES: 503');
    t.equal(full.headers['retry-after'], '1');
    t.equal(full.headers.connection, 'close');
  }
  await until('its 20 KiB given back', 5000, async () => (await buffered()) === 230 * KiB);
  t.equal(await metric(s, 'sidecar_upstream_rejected_total', { reason: 'buffer_full' }), 2, 'both counted as buffer_full');
  // A response that does not fit the rest of the buffer (26 KiB) is streamed instead, intact.
  const streamed0 = await metric(s, 'sidecar_proxy_responses_total', { mode: 'streamed' });
  const big = await fetchBinary(s.port, 'GET', `/api/v1/works?size=${100 * KiB}&chunked=1`, hb);
  t.equal(big.status, 200);
  t.equal(sha(big.body), sha(PATTERN.subarray(0, 100 * KiB)), 'the response arrives intact');
  t.equal((await metric(s, 'sidecar_proxy_responses_total', { mode: 'streamed' })) - streamed0, 1, 'streamed, as it did not fit the buffer');
  // The first upload completes: forwarded whole; everything given back once the rest are aborted.
  first.req.end();
  const done = await first.response;
  t.equal(done instanceof Error ? done.message : done.status, 200, 'a held upload completes');
  t.equal(upstream.received.at(-1)!.bytes, 60 * KiB);
  t.equal(upstream.received.slice(before).filter((r) => r.method === 'POST').length, 1, 'only the complete upload reached the upstream');
  for (const u of open) u.req.destroy();
  await until('every byte given back', 5000, async () => (await buffered()) === 0);
  const buffered0 = await metric(s, 'sidecar_proxy_responses_total', { mode: 'buffered' });
  t.equal((await fetchBinary(s.port, 'GET', `/api/v1/works?size=${100 * KiB}&chunked=1`, hb)).status, 200);
  t.equal((await metric(s, 'sidecar_proxy_responses_total', { mode: 'buffered' })) - buffered0, 1, 'with room again, the same response is buffered');
});

t.test('limits still hold with buffered bodies: 413 by Content-Length and chunked, 408, client abort; nothing leaks', async (t) => {
  const KiB = 1024;
  const s = await sidecarWith(t, { PROXY_BODY_LIMIT_BYTES: String(64 * KiB), REQUEST_TIMEOUT_MS: '800' });
  const h = await auth(creator, pubA);
  const before = upstream.received.length;
  const declared = await fetchBinary(s.port, 'POST', '/api/v1/works', { ...h, 'content-length': String(65 * KiB) }, Buffer.alloc(65 * KiB));
  t.equal(declared.status, 413, '413 by Content-Length');
  t.equal(JSON.parse(declared.body.toString('utf8')).type, 'https://errors.music-publishing.example/payload-too-large');
  t.equal(declared.headers.connection, 'close');

  const chunked = startUpload(s.port, h);
  chunked.req.write(Buffer.alloc(40 * KiB, 1));
  chunked.req.write(Buffer.alloc(40 * KiB, 1));
  const tooBig = await chunked.response;
  chunked.req.destroy();
  t.equal(tooBig instanceof Error ? tooBig.message : tooBig.status, 413, '413 while reading a chunked body');

  const slow = startUpload(s.port, h);
  drip(slow.req, 16, 100);
  const started = performance.now();
  const late = await slow.response;
  const waited = performance.now() - started;
  slow.req.destroy();
  t.equal(late instanceof Error ? late.message : late.status, 408, '408 at the request deadline');
  t.ok(waited >= 600 && waited < 2000, `cut at REQUEST_TIMEOUT_MS (${waited.toFixed(0)} ms)`);

  const gone = startUpload(s.port, h);
  gone.req.write(Buffer.alloc(10 * KiB, 1));
  await until('the aborted upload is being received', 5000, async () => (await metric(s, 'sidecar_proxy_buffered_bytes')) >= 10 * KiB);
  gone.req.destroy();
  t.type(await gone.response, Error, 'the client aborted');

  await until('every byte given back', 5000, async () => (await metric(s, 'sidecar_proxy_buffered_bytes')) === 0);
  t.equal(await metric(s, 'sidecar_upstream_slots_in_use'), 0, 'no slot taken or leaked');
  t.notOk(upstream.received.slice(before).some((r) => r.method === 'POST'), 'none of them reached the upstream');
  const ok = await fetchBinary(s.port, 'POST', '/api/v1/works', { ...h, 'content-length': String(64 * KiB) }, Buffer.alloc(64 * KiB, 9));
  t.equal(ok.status, 200, 'a body of exactly the limit passes');
  t.equal(JSON.parse(ok.body.toString('utf8')).bytes, 64 * KiB);
});

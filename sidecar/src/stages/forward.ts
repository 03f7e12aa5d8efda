/**
 * Stage 7 — forward to the upstream with an undici Pool (keep-alive, `connectTimeout`,
 * `headersTimeout`, `bodyTimeout`). Hop-by-hop response fields (RFC 9110 §7.6.1) and those named
 * in the upstream's `Connection` are removed.
 * Upstream admission (docs/CONTRACTS.md, "Upstream admission"): an upstream connection is a
 * shared, scarce resource, so a request holds one only while the upstream works for it — never
 * while a client is slow:
 * 1. Request body (request-body.ts): received completely into memory first (bounded by
 *    PROXY_BODY_LIMIT_BYTES and the rest of REQUEST_TIMEOUT_MS), and only then is a slot taken;
 *    it goes upstream as one buffer with `Content-Length`.
 * 2. Slots (upstream-slots.ts): at most UPSTREAM_CONNECTIONS requests hold an upstream connection,
 *    and no subject (the token's `sub`; `ip:<address>` for anonymous requests) holds more than
 *    UPSTREAM_SHARE_PER_SUBJECT of them, no publisher more than UPSTREAM_SHARE_PER_PUBLISHER;
 *    the others wait at most UPSTREAM_QUEUE_TIMEOUT_MS while those that fit go ahead. The pool
 *    has one extra connection for the readiness probe, so `/readyz` never queues.
 * 3. Response: a response of at most PROXY_RESPONSE_BUFFER_BYTES is read whole and the slot is
 *    given back BEFORE anything is written to the client (a client that does not read holds
 *    memory, not a connection); a larger one (or a `text/event-stream`) is streamed and keeps its
 *    slot — within its owner's share — until the client has taken it (or UPSTREAM_BODY_TIMEOUT_MS
 *    of no progress ends it).
 * 4. Memory: request and response bytes held at once count against PROXY_BUFFER_TOTAL_BYTES, and
 *    against the same per-subject / per-publisher shares of it. A request body that does not fit
 *    → 503; a response that does not fit is streamed instead.
 * Errors (RFC 9457, before any response byte; later errors abort the response stream):
 * connection refused/reset/DNS → 502 `upstream-unavailable`; no slot within the queue timeout, or
 * no room to buffer the request body → 503 `upstream-unavailable` with `Retry-After: 1` (s);
 * connect, response-header (UPSTREAM_HEADERS_TIMEOUT_MS from dispatch, our own timer) or body
 * timeout → 504 `upstream-timeout`; body over the limit → 413
 * `payload-too-large` (by `Content-Length` before reading, or while reading a chunked body); body
 * not received by the deadline → 408 `bad-request`; client aborted the body → 400 `bad-request`
 * (nobody reads it). Whenever a request body was left unread the answer carries `Connection: close`.
 */
import { Readable } from 'node:stream';
import { Pool } from 'undici';
import type { FastifyReply } from 'fastify';
import type { UpstreamMetrics } from '../metrics.ts';
import { ProblemError } from '../problem.ts';
import { stripHopByHop, type HeaderMap } from './mutate-headers.ts';
import { BodyDeadline, BodyIncomplete, BodyTooLarge, BufferFull, receiveBody, type ReceivedBody } from './request-body.ts';
import { createShareLedger, type ShareLedger, type ShareOwner } from './shares.ts';
import { QueueTimeout, createUpstreamSlots, type Release } from './upstream-slots.ts';

/** Options of {@link createForwarder}. Durations in ms, sizes in bytes, shares as fractions in (0, 1]. */
export type ForwarderOptions = {
  url: string;
  connectTimeoutMs: number;
  headersTimeoutMs: number;
  bodyTimeoutMs: number;
  /** Upstream connections for proxied requests (0 = unlimited, no admission queue, no slot shares). */
  connections: number;
  /** Longest wait for a free upstream connection (ms). */
  queueTimeoutMs: number;
  bodyLimitBytes: number;
  /** Largest upstream response read whole before the slot is given back (0 = always stream). */
  responseBufferBytes: number;
  /** Bytes of request and response bodies held in memory at once, all requests together. */
  bufferTotalBytes: number;
  /** Largest fraction of the slots and of the buffer one subject may hold. */
  sharePerSubject: number;
  /** Largest fraction of the slots and of the buffer one publisher may hold. */
  sharePerPublisher: number;
};

/** One request to proxy. `pathAndQuery` is the canonical raw target (appended to the upstream base path). */
export type ForwardRequest = {
  method: string;
  pathAndQuery: string;
  headers: HeaderMap;
  /** The client's body stream (undefined when the request has none). */
  body?: Readable;
  /** Time (ms from now) by which the body must be completely received; undefined = none. */
  bodyDeadlineMs?: number;
  /** Whose shares the request's slot and bytes count against (app.ts: subject, publisher context). */
  owner?: ShareOwner;
};

/** The forwarder: proxy requests, probe reachability, close the pool. */
export type Forwarder = {
  /** The upstream base path (UPSTREAM_URL's path without trailing `/`; '' for none). */
  basePath: string;
  /**
   * Receive the request body, take a slot, send `req` upstream and write the answer into `reply`.
   * @throws ProblemError 400/408/413/502/503/504 before any response byte was sent; errors after
   *   the headers were sent abort the response stream instead.
   */
  forward(req: ForwardRequest, reply: FastifyReply): Promise<FastifyReply>;
  /** GET `<base>/healthz` with a short timeout: true when any HTTP answer arrives (reachable). */
  probe(timeoutMs?: number): Promise<boolean>;
  /** Current use: slots held and waited for, body bytes held in memory. */
  stats(): { slotsInUse: number; slotsWaiting: number; bufferedBytes: number };
  close(): Promise<void>;
};

/** The client's connection closed before the exchange was over. */
class ClientGone extends Error {}

/**
 * The upstream's response headers did not arrive within UPSTREAM_HEADERS_TIMEOUT_MS of sending the
 * request. Our own timer: undici checks its `headersTimeout` on coarse ticks (~500 ms-1 s late).
 */
class HeadersTimeout extends Error {
  readonly code = 'UND_ERR_HEADERS_TIMEOUT';
  constructor(timeoutMs: number) {
    super(`the upstream sent no response headers within ${timeoutMs} ms`);
    this.name = 'HeadersTimeout';
  }
}

const TIMEOUT_CODES = new Set(['UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'ETIMEDOUT']);

function errCode(err: unknown): string | undefined {
  const e = err as { code?: string; cause?: { code?: string } };
  return e?.code ?? e?.cause?.code;
}

/** Map why a forward failed (our own reason first, else undici's error) to the problem answered. */
function toProblem(reason: unknown, limit: number, unread: boolean): ProblemError {
  const close: Record<string, string> = unread ? { connection: 'close' } : {};
  if (reason instanceof BodyTooLarge) return new ProblemError(413, 'payload-too-large', `The request body exceeds ${limit} bytes.`, { headers: { connection: 'close' } });
  if (reason instanceof BodyDeadline) return new ProblemError(408, 'bad-request', 'The request body was not received in time.', { headers: { connection: 'close' } });
  if (reason instanceof BodyIncomplete || reason instanceof ClientGone) return new ProblemError(400, 'bad-request', 'The request was aborted by the client.', { headers: { connection: 'close' } });
  if (reason instanceof BufferFull) {
    return new ProblemError(503, 'upstream-unavailable', 'The proxy cannot take more request bodies now; retry later.', { headers: { connection: 'close', 'retry-after': '1' }, cause: reason });
  }
  if (reason instanceof QueueTimeout) {
    return new ProblemError(503, 'upstream-unavailable', 'No upstream connection is free; retry later.', { headers: { ...close, 'retry-after': '1' }, cause: reason });
  }
  const code = errCode(reason);
  if (code && TIMEOUT_CODES.has(code)) return new ProblemError(504, 'upstream-timeout', 'The upstream did not answer in time.', { headers: close, cause: reason });
  return new ProblemError(502, 'upstream-unavailable', 'The upstream is unavailable.', { headers: close, cause: reason });
}

/** True when a request carries a body (RFC 9112 §6.3: Transfer-Encoding, or Content-Length > 0). */
export function hasBody(headers: HeaderMap): boolean {
  if (headers['transfer-encoding'] !== undefined) return true;
  const cl = headers['content-length'];
  return typeof cl === 'string' && cl !== '0';
}

/** A single `Content-Length` as a number, else undefined (absent, repeated or not a number). */
function declaredLength(headers: HeaderMap): number | undefined {
  const v = headers['content-length'];
  if (typeof v !== 'string' || !/^\d+$/.test(v)) return undefined;
  return Number(v);
}

/** The head of an upstream response read into memory; its bytes count against the budget until `release()`. */
type BufferedHead = { data: Buffer; complete: boolean; release(): void };

/**
 * Read `body` into memory until it ends (`complete`), or until it would pass `limitBytes` or the
 * budget (then the stream is paused with the rest unread and `complete` is false; the chunk that
 * did not fit is part of `data`, not of the budget).
 * @throws the stream's error (upstream reset, body timeout, abort); nothing stays reserved.
 */
function bufferHead(body: Readable, limitBytes: number, budget: ShareLedger, owner: ShareOwner): Promise<BufferedHead> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let bytes = 0;
    let held = 0;
    const release = () => {
      budget.remove(owner, held);
      held = 0;
    };
    const stop = () => {
      body.off('data', onData);
      body.off('end', onEnd);
      body.off('error', onError);
      body.off('close', onClose);
    };
    const done = (complete: boolean) => {
      stop();
      if (!complete) body.pause();
      resolve({ data: chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, bytes), complete, release });
    };
    const onData = (chunk: Buffer) => {
      chunks.push(chunk);
      bytes += chunk.length;
      if (bytes > limitBytes || budget.blocker(owner, chunk.length) !== undefined) return done(false);
      budget.add(owner, chunk.length);
      held += chunk.length;
    };
    const onEnd = () => done(true);
    const onError = (err: Error) => {
      stop();
      release();
      reject(err);
    };
    const onClose = () => onError(new Error('the upstream response ended early'));
    body.on('data', onData);
    body.once('end', onEnd);
    body.once('error', onError);
    body.once('close', onClose);
  });
}

/** Create the forwarder and its connection pool for `opts.url` (origin plus optional base path). */
export function createForwarder(opts: ForwarderOptions, metrics?: UpstreamMetrics): Forwarder {
  const base = new URL(opts.url);
  const basePath = base.pathname.replace(/\/+$/, '');
  const pool = new Pool(base.origin, {
    connections: opts.connections ? opts.connections + 1 : null, // +1: the readiness probe's own
    connectTimeout: opts.connectTimeoutMs,
    headersTimeout: opts.headersTimeoutMs,
    bodyTimeout: opts.bodyTimeoutMs,
    keepAliveTimeout: 4_000,
  });
  const shares = { perSubject: opts.sharePerSubject, perPublisher: opts.sharePerPublisher };
  const slots = createUpstreamSlots(opts.connections, { shares, onWait: (b) => metrics?.waits.inc({ reason: b === 'total' ? 'pool' : `${b}_share` }) });
  const budget = createShareLedger(opts.bufferTotalBytes, shares);
  const stats = () => ({ slotsInUse: slots.stats().active, slotsWaiting: slots.stats().waiting, bufferedBytes: budget.used() });
  metrics?.observe(stats);

  return {
    basePath,
    async forward(req, reply) {
      const limit = opts.bodyLimitBytes;
      const owner = req.owner ?? {};
      const declared = declaredLength(req.headers);
      if (declared !== undefined && declared > limit) {
        throw new ProblemError(413, 'payload-too-large', `The request body exceeds ${limit} bytes.`, { headers: { connection: 'close' } });
      }
      // One controller for the whole exchange; `reason` keeps the first cause of an abort.
      const ac = new AbortController();
      let reason: Error | undefined;
      const fail = (err: Error) => {
        reason ??= err;
        ac.abort(err);
      };
      const onClose = () => {
        if (!reply.raw.writableFinished) fail(new ClientGone('client closed the connection'));
      };
      reply.raw.once('close', onClose);

      let body: ReceivedBody | undefined;
      let release: Release | undefined;
      let headersTimer: NodeJS.Timeout | undefined;
      let res;
      try {
        if (req.body) {
          body = await receiveBody(req.body, { limitBytes: limit, declaredBytes: declared, deadlineMs: req.bodyDeadlineMs, budget, owner, signal: ac.signal });
        }
        release = await slots.acquire(opts.queueTimeoutMs, ac.signal, owner);
        const headers = body ? { ...req.headers, 'content-length': String(body.data.length) } : req.headers;
        // counted from dispatch (a new connection's set-up included), precise to the event loop
        if (opts.headersTimeoutMs > 0) headersTimer = setTimeout(() => fail(new HeadersTimeout(opts.headersTimeoutMs)), opts.headersTimeoutMs);
        res = await pool.request({
          method: req.method as 'GET',
          path: basePath + req.pathAndQuery,
          headers: headers as Record<string, string | string[]>,
          body: body?.data ?? null,
          signal: ac.signal,
        });
        clearTimeout(headersTimer);
      } catch (err) {
        clearTimeout(headersTimer);
        release?.();
        body?.release();
        reply.raw.off('close', onClose);
        const why = reason ?? err;
        if (why instanceof QueueTimeout) metrics?.rejected.inc({ reason: 'queue_timeout' });
        if (why instanceof BufferFull) metrics?.rejected.inc({ reason: 'buffer_full' });
        throw toProblem(why, limit, req.body !== undefined && body === undefined);
      }
      body?.release(); // the upstream answered: it has read the request body
      const slot = release;
      const done = () => {
        slot();
        reply.raw.off('close', onClose);
      };
      res.body.once('close', done);
      const headers = stripHopByHop(res.headers as HeaderMap);
      if (req.method === 'HEAD' || res.statusCode === 204 || res.statusCode === 304) {
        res.body.resume();
        reply.code(res.statusCode);
        for (const [k, v] of Object.entries(headers)) if (v !== undefined) reply.header(k, v);
        return reply.send();
      }

      const contentType = String(headers['content-type'] ?? '');
      const upstreamLength = declaredLength(headers);
      const bufferable = opts.responseBufferBytes > 0 && !(upstreamLength !== undefined && upstreamLength > opts.responseBufferBytes) && !/^\s*text\/event-stream/i.test(contentType);
      let head: BufferedHead | undefined;
      if (bufferable) {
        try {
          head = await bufferHead(res.body, opts.responseBufferBytes, budget, owner);
        } catch (err) {
          done();
          res.body.destroy();
          throw toProblem(reason ?? err, limit, false);
        }
        // The bytes count until the client has them (or is gone).
        if (reply.raw.destroyed) head.release();
        else reply.raw.once('close', head.release);
      }
      reply.code(res.statusCode);
      for (const [k, v] of Object.entries(headers)) if (v !== undefined) reply.header(k, v);
      if (head?.complete) {
        done(); // the whole answer is in memory: the slot is free before the client reads a byte
        metrics?.responses.inc({ mode: 'buffered' });
        reply.header('content-length', String(head.data.length));
        // Fastify gives a Buffer without a type `application/octet-stream`; a stream keeps it untyped.
        return reply.send(headers['content-type'] === undefined ? Readable.from([head.data]) : head.data);
      }
      // Too large (or no room in the budget): stream, the slot held until the body is consumed.
      if (head && head.data.length > 0) res.body.unshift(head.data);
      metrics?.responses.inc({ mode: 'streamed' });
      return reply.send(res.body);
    },
    async probe(timeoutMs = 1000) {
      // undici honours an abort only once a request left its queue: bound the wait ourselves too.
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), timeoutMs)));
      const ask = pool.request({ method: 'GET', path: `${basePath}/healthz`, headersTimeout: timeoutMs, signal: AbortSignal.timeout(timeoutMs) }).then(
        (res) => {
          res.body.resume();
          return true;
        },
        () => false,
      );
      try {
        return await Promise.race([ask, late]);
      } finally {
        clearTimeout(timer);
      }
    },
    stats,
    close: () => pool.close(),
  };
}

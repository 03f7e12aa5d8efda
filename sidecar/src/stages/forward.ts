/**
 * Stage 7 — forward to the upstream with an undici Pool (keep-alive, `connectTimeout`,
 * `headersTimeout`, `bodyTimeout`). Request and response bodies are streamed, never buffered.
 * Hop-by-hop response fields (RFC 9110 §7.6.1) and those named in the upstream's `Connection`
 * are removed.
 * - Admission: at most UPSTREAM_CONNECTIONS requests hold an upstream connection; the others wait
 *   at most UPSTREAM_QUEUE_TIMEOUT_MS (upstream-slots.ts). The pool has one extra connection for
 *   the readiness probe, so `/readyz` never queues behind proxied requests.
 * - Request body (request-body.ts): piped with `stream.pipeline` through a byte counter; it must
 *   arrive completely within the request deadline (REQUEST_TIMEOUT_MS from the request's start).
 *   Every failure destroys the counter and aborts the upstream request.
 * Errors (RFC 9457, before any response byte; later errors abort the response stream):
 * connection refused/reset/DNS → 502 `upstream-unavailable`; no free upstream connection within
 * the queue timeout → 503 `upstream-unavailable` with `Retry-After: 1` (s); connect or
 * response-header timeout → 504 `upstream-timeout`; body over the limit → 413 `payload-too-large`
 * (by `Content-Length` before connecting, or while streaming a chunked body); body not received
 * by the deadline → 408 `bad-request`; client aborted the body → 400 `bad-request` (nobody reads
 * it). Whenever a request body was left unread the answer carries `Connection: close`.
 */
import type { Readable } from 'node:stream';
import { Pool } from 'undici';
import type { FastifyReply } from 'fastify';
import { ProblemError } from '../problem.ts';
import { stripHopByHop, type HeaderMap } from './mutate-headers.ts';
import { BodyDeadline, BodyIncomplete, BodyTooLarge, guardBody, type GuardedBody } from './request-body.ts';
import { QueueTimeout, createUpstreamSlots, type Release } from './upstream-slots.ts';

/** Options of {@link createForwarder}. Durations in ms, sizes in bytes. */
export type ForwarderOptions = {
  url: string;
  connectTimeoutMs: number;
  headersTimeoutMs: number;
  bodyTimeoutMs: number;
  /** Upstream connections for proxied requests (0 = unlimited, no admission queue). */
  connections: number;
  /** Longest wait for a free upstream connection (ms). */
  queueTimeoutMs: number;
  bodyLimitBytes: number;
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
};

/** The forwarder: proxy requests, probe reachability, close the pool. */
export type Forwarder = {
  /** The upstream base path (UPSTREAM_URL's path without trailing `/`; '' for none). */
  basePath: string;
  /**
   * Send `req` upstream and stream the answer into `reply`.
   * @throws ProblemError 400/408/413/502/503/504 before any response byte was sent; errors after
   *   the headers were sent abort the response stream instead.
   */
  forward(req: ForwardRequest, reply: FastifyReply): Promise<FastifyReply>;
  /** GET `<base>/healthz` with a short timeout: true when any HTTP answer arrives (reachable). */
  probe(timeoutMs?: number): Promise<boolean>;
  close(): Promise<void>;
};

/** The client's connection closed before the exchange was over. */
class ClientGone extends Error {}

const TIMEOUT_CODES = new Set(['UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'ETIMEDOUT']);

function errCode(err: unknown): string | undefined {
  const e = err as { code?: string; cause?: { code?: string } };
  return e?.code ?? e?.cause?.code;
}

/** Map why a forward failed (our own reason first, else undici's error) to the problem answered. */
function toProblem(reason: unknown, limit: number, withBody: boolean): ProblemError {
  const close: Record<string, string> = withBody ? { connection: 'close' } : {};
  if (reason instanceof BodyTooLarge) return new ProblemError(413, 'payload-too-large', `The request body exceeds ${limit} bytes.`, { headers: { connection: 'close' } });
  if (reason instanceof BodyDeadline) return new ProblemError(408, 'bad-request', 'The request body was not received in time.', { headers: { connection: 'close' } });
  if (reason instanceof BodyIncomplete || reason instanceof ClientGone) return new ProblemError(400, 'bad-request', 'The request was aborted by the client.', { headers: { connection: 'close' } });
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

/** Create the forwarder and its connection pool for `opts.url` (origin plus optional base path). */
export function createForwarder(opts: ForwarderOptions): Forwarder {
  const base = new URL(opts.url);
  const basePath = base.pathname.replace(/\/+$/, '');
  const pool = new Pool(base.origin, {
    connections: opts.connections ? opts.connections + 1 : null, // +1: the readiness probe's own
    connectTimeout: opts.connectTimeoutMs,
    headersTimeout: opts.headersTimeoutMs,
    bodyTimeout: opts.bodyTimeoutMs,
    keepAliveTimeout: 4_000,
  });
  const slots = createUpstreamSlots(opts.connections);

  return {
    basePath,
    async forward(req, reply) {
      const limit = opts.bodyLimitBytes;
      const cl = req.headers['content-length'];
      if (typeof cl === 'string' && Number(cl) > limit) {
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
      const body: GuardedBody | undefined = req.body
        ? guardBody(req.body, { limitBytes: limit, deadlineMs: req.bodyDeadlineMs, onError: fail })
        : undefined;

      let release: Release | undefined;
      let res;
      try {
        release = await slots.acquire(opts.queueTimeoutMs, ac.signal);
        res = await pool.request({
          method: req.method as 'GET',
          path: basePath + req.pathAndQuery,
          headers: req.headers as Record<string, string | string[]>,
          body: body?.stream ?? null,
          signal: ac.signal,
        });
      } catch (err) {
        release?.();
        reply.raw.off('close', onClose);
        const why = reason ?? err;
        body?.abort(why instanceof Error ? why : new Error(String(why)));
        throw toProblem(why, limit, body !== undefined && !body.complete());
      }
      const done = () => {
        release();
        reply.raw.off('close', onClose);
      };
      res.body.once('close', done);
      const headers = stripHopByHop(res.headers as HeaderMap);
      reply.code(res.statusCode);
      for (const [k, v] of Object.entries(headers)) if (v !== undefined) reply.header(k, v);
      if (req.method === 'HEAD' || res.statusCode === 204 || res.statusCode === 304) {
        res.body.resume();
        return reply.send();
      }
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
    close: () => pool.close(),
  };
}

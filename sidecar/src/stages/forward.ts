/**
 * Stage 7 — forward to the upstream with an undici Pool (keep-alive, `connectTimeout`,
 * `headersTimeout`, `bodyTimeout`). Request and response bodies are streamed, never buffered.
 * Hop-by-hop response fields (RFC 9110 §7.6.1) and those named in the upstream's `Connection`
 * are removed. Errors: connection refused/reset/DNS → 502 `upstream-unavailable`; connect or
 * response-header timeout → 504 `upstream-timeout`; request body over the limit → 413
 * `payload-too-large` (by `Content-Length` before connecting, or while streaming a chunked body).
 */
import { Transform, type Readable } from 'node:stream';
import { Pool } from 'undici';
import type { FastifyReply } from 'fastify';
import { ProblemError } from '../problem.ts';
import { stripHopByHop, type HeaderMap } from './mutate-headers.ts';

/** Options of {@link createForwarder}. Durations in ms, sizes in bytes. */
export type ForwarderOptions = {
  url: string;
  connectTimeoutMs: number;
  headersTimeoutMs: number;
  bodyTimeoutMs: number;
  connections: number;
  bodyLimitBytes: number;
};

/** One request to proxy. `pathAndQuery` is the canonical raw target (appended to the upstream base path). */
export type ForwardRequest = {
  method: string;
  pathAndQuery: string;
  headers: HeaderMap;
  /** The client's body stream (undefined when the request has none). */
  body?: Readable;
};

/** The forwarder: proxy requests, probe reachability, close the pool. */
export type Forwarder = {
  /**
   * Send `req` upstream and stream the answer into `reply`.
   * @throws ProblemError 502/504/413 before any response byte was sent; errors after the headers
   *   were sent abort the response stream instead.
   */
  forward(req: ForwardRequest, reply: FastifyReply): Promise<FastifyReply>;
  /** GET `<base>/healthz` with a short timeout: true when any HTTP answer arrives (reachable). */
  probe(timeoutMs?: number): Promise<boolean>;
  close(): Promise<void>;
};

class BodyTooLarge extends Error {}

const TIMEOUT_CODES = new Set(['UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'ETIMEDOUT']);

function errCode(err: unknown): string | undefined {
  const e = err as { code?: string; cause?: { code?: string } };
  return e?.code ?? e?.cause?.code;
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
    connections: opts.connections || null,
    connectTimeout: opts.connectTimeoutMs,
    headersTimeout: opts.headersTimeoutMs,
    bodyTimeout: opts.bodyTimeoutMs,
    keepAliveTimeout: 4_000,
  });

  return {
    async forward(req, reply) {
      const limit = opts.bodyLimitBytes;
      const cl = req.headers['content-length'];
      if (typeof cl === 'string' && Number(cl) > limit) {
        throw new ProblemError(413, 'payload-too-large', `The request body exceeds ${limit} bytes.`);
      }
      let body: Readable | undefined;
      let tooLarge = false;
      if (req.body) {
        let seen = 0;
        const counter = new Transform({
          transform(chunk: Buffer, _enc, cb) {
            seen += chunk.length;
            if (seen > limit) {
              tooLarge = true;
              cb(new BodyTooLarge('body limit'));
            } else cb(null, chunk);
          },
        });
        req.body.on('error', (e) => counter.destroy(e));
        body = req.body.pipe(counter);
      }
      const ac = new AbortController();
      const onClose = () => {
        if (!reply.raw.writableFinished) ac.abort();
      };
      reply.raw.once('close', onClose);
      let res;
      try {
        res = await pool.request({
          method: req.method as 'GET',
          path: basePath + req.pathAndQuery,
          headers: req.headers as Record<string, string | string[]>,
          body: body ?? null,
          signal: ac.signal,
        });
      } catch (err) {
        reply.raw.off('close', onClose);
        if (tooLarge || err instanceof BodyTooLarge) {
          throw new ProblemError(413, 'payload-too-large', `The request body exceeds ${limit} bytes.`, { headers: { connection: 'close' } });
        }
        const code = errCode(err);
        if (code && TIMEOUT_CODES.has(code)) {
          throw new ProblemError(504, 'upstream-timeout', 'The upstream did not answer in time.', { cause: err });
        }
        throw new ProblemError(502, 'upstream-unavailable', 'The upstream is unavailable.', { cause: err });
      }
      res.body.once('end', () => reply.raw.off('close', onClose));
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
      try {
        const res = await pool.request({ method: 'GET', path: `${basePath}/healthz`, headersTimeout: timeoutMs, signal: AbortSignal.timeout(timeoutMs) });
        res.body.resume();
        return true;
      } catch {
        return false;
      }
    },
    close: () => pool.close(),
  };
}

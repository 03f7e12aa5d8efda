/**
 * The proxied request body, guarded: the client's stream is piped (`stream.pipeline`, so an error
 * on either side reaches the other and the callback — never an unhandled 'error' event) through a
 * byte-counting Transform that undici reads. The guard fails the body when
 * - it grows past `limitBytes` (PROXY_BODY_LIMIT_BYTES; chunked bodies, which have no
 *   Content-Length to check up front) → {@link BodyTooLarge};
 * - it is not completely received within `deadlineMs` (the rest of REQUEST_TIMEOUT_MS: slow-loris
 *   uploads) → {@link BodyDeadline};
 * - the client aborts or the connection breaks → {@link BodyIncomplete}.
 * On failure the counter is destroyed (undici then aborts the upstream request) and `onError`
 * runs once. The client's stream itself is only detached, not destroyed, so the caller can still
 * answer (413/408 with `Connection: close`).
 */
import { Transform, pipeline, type Readable } from 'node:stream';

/** The body grew past the limit. */
export class BodyTooLarge extends Error {
  constructor(limitBytes: number) {
    super(`the request body exceeds ${limitBytes} bytes`);
    this.name = 'BodyTooLarge';
  }
}

/** The body was not completely received before its deadline. */
export class BodyDeadline extends Error {
  constructor(deadlineMs: number) {
    super(`the request body was not received within ${deadlineMs} ms`);
    this.name = 'BodyDeadline';
  }
}

/** The client stream failed (aborted, reset) before the body was complete. */
export class BodyIncomplete extends Error {
  constructor(cause: unknown) {
    super('the request body was not received completely', { cause });
    this.name = 'BodyIncomplete';
  }
}

/** A guarded body: hand `stream` to the upstream client; `abort` stops it on the caller's failures. */
export type GuardedBody = {
  stream: Readable;
  /** Destroy the counter with `err` (no-op when the body already failed or completed and was read). */
  abort(err: Error): void;
  /** True once the whole body was received from the client. */
  complete(): boolean;
};

/**
 * Guard `source`.
 * @param opts.limitBytes the largest body accepted (bytes).
 * @param opts.deadlineMs time (ms, from now) by which the body must be completely received;
 *   ≤ 0 = already passed (fails at once); undefined = no deadline.
 * @param opts.onError called once with BodyTooLarge / BodyDeadline / BodyIncomplete, or the error
 *   passed to `abort`.
 */
export function guardBody(
  source: Readable,
  opts: { limitBytes: number; deadlineMs?: number; onError: (err: Error) => void },
): GuardedBody {
  let seen = 0;
  let received = false;
  let aborted = false;
  const counter = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      seen += chunk.length;
      if (seen > opts.limitBytes) cb(new BodyTooLarge(opts.limitBytes));
      else cb(null, chunk);
    },
  });
  // The pipeline reports every error to its callback; this keeps a late destroy (e.g. by undici
  // after the pipeline settled) from ever becoming an unhandled 'error' that ends the process.
  counter.on('error', () => undefined);

  const deadline = opts.deadlineMs === undefined ? undefined : Math.max(0, opts.deadlineMs);
  const timer = deadline === undefined ? undefined : setTimeout(() => counter.destroy(new BodyDeadline(deadline)), deadline);
  timer?.unref();

  // destroyOnReturn: false — when the counter fails, stop reading the client without destroying
  // its stream (that would reset the socket before the 413/408 answer could be written).
  pipeline(source.iterator({ destroyOnReturn: false }), counter, (err) => {
    clearTimeout(timer);
    if (!err) {
      received = true;
      return;
    }
    const known = err instanceof BodyTooLarge || err instanceof BodyDeadline || err instanceof BodyIncomplete;
    opts.onError(known || aborted ? err : new BodyIncomplete(err));
  });

  return {
    stream: counter,
    abort(err) {
      if (counter.destroyed) return;
      aborted = true;
      counter.destroy(err);
    },
    complete: () => received,
  };
}

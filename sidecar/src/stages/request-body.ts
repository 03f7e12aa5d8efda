/**
 * The proxied request body, received completely into memory BEFORE an upstream connection is
 * taken (issue 9 §1: a slowly sent body must not hold an upstream slot). The body is bounded by
 * PROXY_BODY_LIMIT_BYTES, and every byte held counts against the process-wide budget
 * PROXY_BUFFER_TOTAL_BYTES and its owner's shares of it (shares.ts), so many large or slow uploads
 * cannot exhaust memory either. Receiving fails with
 * - {@link BodyTooLarge}: past `limitBytes` (chunked bodies, which have no Content-Length to check
 *   up front; forward.ts checks a declared one before calling);
 * - {@link BodyDeadline}: not completely received within `deadlineMs` (the rest of
 *   REQUEST_TIMEOUT_MS: slow-loris uploads);
 * - {@link BufferFull}: the bytes do not fit the budget or the owner's share of it (a declared
 *   Content-Length is checked before reading anything);
 * - {@link BodyIncomplete}: the client aborted or the connection broke;
 * - `signal.reason`: the caller aborted.
 * On failure the bytes held are given back and the client's stream is only paused, not destroyed,
 * so the caller can still answer (413/408/503 with `Connection: close`).
 */
import type { Readable } from 'node:stream';
import type { ShareLedger, ShareOwner } from './shares.ts';

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

/** Holding more body bytes would exceed PROXY_BUFFER_TOTAL_BYTES or the owner's share of it. */
export class BufferFull extends Error {
  constructor(what: string) {
    super(`no room to buffer ${what}`);
    this.name = 'BufferFull';
  }
}

/** A body received in full; its bytes count against the budget until `release()`. */
export type ReceivedBody = {
  data: Buffer;
  /** Give the bytes back to the budget (idempotent); call once the upstream no longer needs `data`. */
  release(): void;
};

/** Options of {@link receiveBody}. Sizes in bytes, durations in ms. */
export type ReceiveBodyOptions = {
  /** The largest body accepted (PROXY_BODY_LIMIT_BYTES). */
  limitBytes: number;
  /** The client's Content-Length when it sent one (checked against the budget before reading). */
  declaredBytes?: number;
  /** Time (ms, from now) by which the body must be complete; ≤ 0 = already passed; undefined = none. */
  deadlineMs?: number;
  /** The process-wide byte budget (PROXY_BUFFER_TOTAL_BYTES with the shares). */
  budget: ShareLedger;
  /** Whose shares of the budget the bytes count against. */
  owner: ShareOwner;
  /** Aborting it stops receiving at once (rejects with `signal.reason`). */
  signal: AbortSignal;
};

/**
 * Read `source` to its end into one Buffer.
 * @returns the body and the release of its bytes.
 * @throws BodyTooLarge / BodyDeadline / BufferFull / BodyIncomplete / `signal.reason` (see the
 *   module comment); nothing stays reserved when it throws.
 */
export function receiveBody(source: Readable, opts: ReceiveBodyOptions): Promise<ReceivedBody> {
  const { budget, owner, signal } = opts;
  if (signal.aborted) return Promise.reject(signal.reason);
  if (opts.declaredBytes !== undefined && budget.blocker(owner, opts.declaredBytes) !== undefined) {
    return Promise.reject(new BufferFull(`a request body of ${opts.declaredBytes} bytes`));
  }
  return new Promise<ReceivedBody>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let held = 0;
    let settled = false;
    const giveBack = () => {
      budget.remove(owner, held);
      held = 0;
    };
    const settle = (err: Error | undefined) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      signal.removeEventListener('abort', onAbort);
      source.off('data', onData);
      source.off('end', onEnd);
      source.off('error', onError);
      source.off('close', onClose);
      if (err) {
        source.pause(); // stop reading; the socket stays for the answer (which says Connection: close)
        giveBack();
        chunks.length = 0;
        reject(err);
        return;
      }
      const data = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, held);
      chunks.length = 0;
      resolve({ data, release: giveBack });
    };
    const onData = (chunk: Buffer) => {
      if (held + chunk.length > opts.limitBytes) return settle(new BodyTooLarge(opts.limitBytes));
      if (budget.blocker(owner, chunk.length) !== undefined) return settle(new BufferFull(`${held + chunk.length} bytes of a request body`));
      budget.add(owner, chunk.length);
      held += chunk.length;
      chunks.push(chunk);
    };
    const onEnd = () => settle(undefined);
    const onError = (err: Error) => settle(new BodyIncomplete(err));
    const onClose = () => settle(new BodyIncomplete(new Error('the client closed the connection')));
    const onAbort = () => settle(signal.reason instanceof Error ? signal.reason : new Error(String(signal.reason)));

    const deadline = opts.deadlineMs === undefined ? undefined : Math.max(0, opts.deadlineMs);
    const timer = deadline === undefined ? undefined : setTimeout(() => settle(new BodyDeadline(deadline)), deadline);
    timer?.unref();
    signal.addEventListener('abort', onAbort, { once: true });
    source.on('data', onData);
    source.once('end', onEnd);
    source.once('error', onError);
    source.once('close', onClose);
    if (source.readableEnded) settle(undefined); // an empty body already read to its end
    else if (source.destroyed) onClose(); // the client left before we started reading
  });
}

/**
 * What every feature's routes share: their dependencies ({@link RouteDeps}), path ids, and the
 * wrapper that runs a handler in the request transaction (db/context.ts) and, for mutations,
 * delivers the relationship outbox before the reply.
 */
import type { FastifyRequest } from 'fastify';
import { problem } from '../../errors.ts';
import { requireIdentity } from '../../plugins/identity.ts';
import { withRequestTransaction, type Caller, type RequestMeta, type RequestTx, type RequestTxOptions } from '../../db/context.ts';
import type { Orm } from '../../db/orm.ts';

/** What the routes need from the application. */
export type RouteDeps = {
  orm: Orm;
  /** Deliver pending outbox rows now (after a committed mutation); never throws. */
  flushOutbox: () => Promise<void>;
};

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Is `s` a UUID (any version, case-insensitive)? */
export function isUuid(s: string): boolean {
  return UUID.test(s);
}

/**
 * A path id as a lower-case UUID.
 * @throws ProblemError 404 when it is not a UUID (no such resource can exist; matches the sidecar)
 */
export function pathId(id: string): string {
  if (!isUuid(id)) throw problem.notFound();
  return id.toLowerCase();
}

/**
 * What the audit log records about `request`: the request id the sidecar gave it (the signed
 * assertion's `request_id`, else `X-Request-Id` as Fastify read it), the client address
 * (`request.ip`, from the trusted proxies' X-Forwarded-For) and the user agent.
 */
export function requestMeta(request: FastifyRequest): RequestMeta {
  const ua = request.headers['user-agent'];
  return { requestId: request.identity?.requestId ?? (request.id ? String(request.id) : null), ip: request.ip || null, userAgent: typeof ua === 'string' ? ua : null };
}

/**
 * Run `fn` in the request transaction of `request` (identity from the assertion).
 * With `mutating`, the relationship outbox is flushed after the commit and before the reply.
 * With `pathPublisherId` (routes under /api/v1/publishers/{id}), that publisher is the context.
 * @throws whatever the transaction helper or `fn` throws (ProblemError or driver errors)
 */
export async function inRequestTx<T>(
  deps: Pick<RouteDeps, 'orm' | 'flushOutbox'>,
  request: FastifyRequest,
  fn: (tx: RequestTx) => Promise<T>,
  options: RequestTxOptions & { mutating?: boolean; pathPublisherId?: string } = {},
): Promise<T> {
  const identity = requireIdentity(request);
  let caller: Caller = identity;
  if (options.pathPublisherId) {
    // /publishers/{id}/… routes: the sidecar authorized the path's publisher, which the assertion's
    // htu binds; a different X-Publisher-Id is a contradiction, not a second context.
    if (identity.publisherId && identity.publisherId !== options.pathPublisherId) {
      throw problem.publisherContext('X-Publisher-Id names another publisher than the path.');
    }
    caller = { ...identity, publisherId: options.pathPublisherId };
  }
  const result = await withRequestTransaction(deps.orm, caller, fn, { ...options, meta: options.meta ?? requestMeta(request) });
  if (options.mutating) await deps.flushOutbox();
  return result;
}

/** `Location` of a created resource. */
export function location(collection: string, id: string): string {
  return `/api/v1/${collection}/${id}`;
}

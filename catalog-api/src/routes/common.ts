/**
 * Helpers shared by the catalog routes: keyset cursors, list query schema, id parsing, problem
 * schemas for OpenAPI, and the wrapper that runs a handler in the request transaction and, for
 * mutations, flushes the relationship outbox before the reply.
 */
import { z } from 'zod';
import type { FastifyRequest } from 'fastify';
import { problem, type FieldError } from '../errors.ts';
import type { IdentifierResult } from '../domain/identifiers.ts';
import { requireIdentity } from '../plugins/identity.ts';
import { withRequestTransaction, type Caller, type RequestTx, type RequestTxOptions } from '../db/context.ts';
import type { Orm } from '../db/orm.ts';

/** What the catalog routes need from the application. */
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

/** Position after which the next page starts: the last row's `created_at` (ISO, µs) and `id`. */
export type Cursor = { createdAt: string; id: string };

/** Encode a keyset position as the opaque `next_cursor` (base64url of `[created_at, id]`). */
export function encodeCursor(c: Cursor): string {
  return Buffer.from(JSON.stringify([c.createdAt, c.id]), 'utf8').toString('base64url');
}

/**
 * Decode a `?cursor` value.
 * @throws ProblemError 400 (`cursor`: invalid) for anything {@link encodeCursor} did not produce
 */
export function decodeCursor(raw: string): Cursor {
  try {
    const v: unknown = JSON.parse(Buffer.from(raw, 'base64url').toString('utf8'));
    if (Array.isArray(v) && v.length === 2 && typeof v[0] === 'string' && typeof v[1] === 'string' && isUuid(v[1]) && !Number.isNaN(Date.parse(v[0]))) {
      return { createdAt: v[0], id: v[1].toLowerCase() };
    }
  } catch {
    /* fall through */
  }
  throw problem.badRequest('The cursor is invalid.', [{ field: 'query.cursor', reason: 'not a cursor returned by this API' }]);
}

/** `?limit` (1..100, default 50) and `?cursor`. */
export const listQuerySchema = z.object({
  limit: z.coerce.number().int().min(1).max(100).default(50),
  cursor: z.string().min(1).max(512).optional(),
});

/** RFC 9457 problem body, for the OpenAPI document. */
export const problemSchema = z
  .object({
    type: z.string(),
    title: z.string(),
    status: z.number().int(),
    detail: z.string(),
    instance: z.string().optional(),
    errors: z.array(z.object({ field: z.string(), reason: z.string() })).optional(),
  })
  .describe('application/problem+json (RFC 9457)');

/** Error responses every authenticated route may give (documentation only). */
export const commonErrors = {
  400: problemSchema,
  401: problemSchema,
  403: problemSchema,
  404: problemSchema,
  503: problemSchema,
};

/** A paginated list response for items of `item`. */
export function pageSchema<T extends z.ZodType>(item: T) {
  return z.object({ items: z.array(item), next_cursor: z.string().nullable() });
}

/** ISO 8601 timestamp as returned by PostgreSQL's JSON rendering (µs precision, offset). */
export const timestamp = z.string().describe('ISO 8601 timestamp');

/** SQL expression rendering a timestamptz column as ISO 8601 with microseconds. */
export function isoSql(column: string): string {
  return `(to_json(${column}) #>> '{}')`;
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
  const result = await withRequestTransaction(deps.orm, caller, fn, options);
  if (options.mutating) await deps.flushOutbox();
  return result;
}

/**
 * Require scope `publisher` (not a creator's `own`) for admin-like actions.
 * @throws ProblemError 403
 */
export function requirePublisherScope(tx: RequestTx, what: string): void {
  if (tx.ctx.scope !== 'publisher') throw problem.forbidden(`Your role does not allow ${what}.`);
}

/**
 * Resolve the `owner_user_id` for a new or updated row: creators (scope `own`) always own what
 * they create and may not hand it to someone else.
 * @returns the owner to store (`requested` for publisher scope, the caller for creators)
 * @throws ProblemError 403 when a creator names another owner
 */
export function ownerFor(tx: RequestTx, requested: string | null | undefined, creating: boolean): string | null | undefined {
  if (tx.ctx.scope === 'own') {
    if (requested !== undefined && requested !== null && requested.toLowerCase() !== tx.ctx.userId) {
      throw problem.forbidden('Creators can only own their own rows.');
    }
    if (requested === null) throw problem.forbidden('Creators can only own their own rows.');
    return creating ? tx.ctx.userId : requested === undefined ? undefined : tx.ctx.userId;
  }
  return requested === undefined ? (creating ? null : undefined) : requested === null ? null : requested.toLowerCase();
}

/** Catalog actions whose role requirement the API checks again (defence in depth behind the sidecar). */
export type CatalogAction = 'write' | 'delete';

/**
 * Mirror of the authorization model's catalog permissions (docs/CONTRACTS.md, "Authorization
 * model"): create/update need editor, manager, admin or creator (creators only on own rows, which
 * RLS enforces); delete needs manager or admin. A system admin may do both.
 * @throws ProblemError 403 when the caller's role does not allow `action`
 */
export function requireRole(tx: RequestTx, action: CatalogAction): void {
  if (tx.ctx.isSystemAdmin) return;
  const role = tx.ctx.role;
  const allowed = action === 'delete' ? role === 'admin' || role === 'manager' : role !== null && role !== 'viewer';
  if (!allowed) throw problem.forbidden(`Your role (${role ?? 'none'}) does not allow this.`);
}

/**
 * Normalise an optional identifier of a request body with `parse`; an invalid one adds
 * `{ field, reason }` to `errors` instead of throwing, so that one 422 lists every problem.
 * @param reasons the reason text per failure (`IDENTIFIER_REASONS.<kind>`)
 * @returns the normalised value; `raw` itself when null or undefined; undefined when invalid
 */
export function identifierValue(
  raw: string | null | undefined,
  field: string,
  parse: (input: string) => IdentifierResult,
  reasons: Record<'format' | 'check_digit', string>,
  errors: FieldError[],
): string | null | undefined {
  if (raw === undefined || raw === null) return raw;
  const r = parse(raw);
  if (!r.ok) {
    errors.push({ field, reason: reasons[r.reason] });
    return undefined;
  }
  return r.value;
}

/** `Location` of a created resource. */
export function location(collection: string, id: string): string {
  return `/api/v1/${collection}/${id}`;
}

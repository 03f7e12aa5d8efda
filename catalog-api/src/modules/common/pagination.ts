/**
 * Keyset pagination with MikroORM's `em.findByCursor` (ordered by `created_at, id`): the query
 * schema (`?limit`, `?cursor`), the page envelope `{items, next_cursor}`, and the check of an
 * incoming cursor. The cursor is MikroORM's own opaque `endCursor` (base64url of the JSON array of
 * the last row's keys); `Cursor.decode` is a bare `JSON.parse`, so {@link afterCursor} checks the
 * shape first and answers 400 for anything this API did not hand out.
 */
import { Cursor } from '@mikro-orm/core';
import { z } from 'zod';
import { problem } from '../../errors.ts';
import { isUuid } from './http.ts';

/** `?limit` (1..100, default 50) and `?cursor`. */
export const listQuerySchema = z.object({
  limit: z.coerce.number().int().min(1).max(100).default(50),
  cursor: z.string().min(1).max(512).optional(),
});

/** A paginated list response for items of `item`. */
export function pageSchema<T extends z.ZodType>(item: T) {
  return z.object({ items: z.array(item), next_cursor: z.string().nullable() });
}

/** PostgreSQL's or ISO 8601's rendering of a timestamptz. */
const TIMESTAMP = /^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}(:?\d{2})?)$/;

/**
 * The `after` option of `findByCursor` for a `(created_at, id)` keyset, from `?cursor`.
 * @returns undefined for the first page
 * @throws ProblemError 400 (`query.cursor`) for anything that is not such a cursor
 */
export function afterCursor(raw: string | undefined): string | undefined {
  if (raw === undefined) return undefined;
  let keys: unknown[] | undefined;
  try {
    keys = Cursor.decode(raw);
  } catch {
    keys = undefined;
  }
  if (Array.isArray(keys) && keys.length === 2 && typeof keys[0] === 'string' && TIMESTAMP.test(keys[0]) && typeof keys[1] === 'string' && isUuid(keys[1])) {
    return raw;
  }
  throw problem.badRequest('The cursor is invalid.', [{ field: 'query.cursor', reason: 'not a cursor returned by this API' }]);
}

/** The keyset order of every paginated list (oldest first; `id` breaks ties). */
export const KEYSET_ORDER = { createdAt: 'asc', id: 'asc' } as const;

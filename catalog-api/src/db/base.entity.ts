/**
 * What the entities share: the audit and soft-delete columns of the catalog tables
 * ({@link catalogColumns}), the `notDeleted` default filter, and {@link TimestampText}, the type of
 * the keyset columns.
 *
 * Why a text-valued timestamp: PostgreSQL keeps microseconds, a JavaScript `Date` milliseconds. A
 * keyset cursor built from a `Date` would skip or repeat rows created within one millisecond, so
 * `created_at`/`updated_at` stay the driver's exact text (`2026-12-01 09:06:17.294769+00`) in the
 * entity, compare exactly as bind parameters, and are rendered as ISO 8601 by {@link isoTimestamp}.
 */
import { Type, p } from '@mikro-orm/core';

/** timestamptz as the driver's exact text (microseconds kept). */
export class TimestampText extends Type<string, string> {
  override convertToJSValue(value: unknown): string {
    return value instanceof Date ? value.toISOString() : (value as string);
  }
  override getColumnType(): string {
    return 'timestamptz';
  }
  override compareAsType(): string {
    return 'string';
  }
}

/**
 * PostgreSQL's ISO output of a timestamptz (`YYYY-MM-DD hh:mm:ss[.ffffff]±hh[:mm]`) → ISO 8601 /
 * RFC 3339 (`YYYY-MM-DDThh:mm:ss[.ffffff]±hh:mm`), the form the API returns.
 */
export function isoTimestamp(pg: string): string {
  return pg.replace(' ', 'T').replace(/([+-]\d{2})$/, '$1:00');
}

/** The soft-delete filter every soft-deleted table declares (switch off with `filters: { notDeleted: false }`). */
export const notDeleted = { notDeleted: { name: 'notDeleted', cond: { deletedAt: null }, default: true } };

/**
 * Key, publisher, owner, department, audit and soft-delete columns of the catalog tables (works, songwriters,
 * recordings). `created_at` has a default and the `set_updated_audit` trigger stamps `updated_at`
 * (and `updated_by` from the RLS context when a write leaves it unchanged); the catalog handlers
 * write `created_by`/`updated_by` themselves, so the row names its author without relying on it.
 */
export const catalogColumns = {
  id: p.uuid().primary().defaultRaw('gen_random_uuid()'),
  publisherId: p.uuid(),
  ownerUserId: p.uuid().nullable(),
  /** the department the row belongs to (professional publishers), or null */
  departmentId: p.uuid().nullable(),
  createdAt: p.type(TimestampText).defaultRaw('now()'),
  updatedAt: p.type(TimestampText).defaultRaw('now()'),
  createdBy: p.uuid().nullable(),
  updatedBy: p.uuid().nullable(),
  deletedAt: p.datetime().nullable(),
};

/**
 * Stage 4 — publisher context (docs/CONTRACTS.md, "Publisher context").
 * `X-Publisher-Id: <uuid>`; `X-Tenant-Id` is the legacy alias, answered with `Deprecation: @<unix time>`
 * (RFC 9745 §2.1, a Structured Field Date) and `Sunset: <HTTP date>` (RFC 8594); both present and different → 400; not a UUID → 400.
 * Whether a route *requires* the context is decided later (route.ts `objectFor`).
 */
import { ProblemError } from '../problem.ts';
import { isUuid } from './route.ts';

/** When `X-Tenant-Id` was deprecated (2026-11-01T00:00:00Z), as an RFC 9745 `Deprecation` value. */
export const TENANT_HEADER_DEPRECATION = '@1793491200';

/** HTTP date (RFC 9110 §5.6.7) after which `X-Tenant-Id` stops being accepted (RFC 8594 `Sunset`). */
export const TENANT_HEADER_SUNSET = 'Thu, 01 Jul 2027 00:00:00 GMT';

/** The resolved context: `publisherId` (lower-case UUID) or undefined, and response headers to add. */
export type PublisherContext = { publisherId: string | undefined; responseHeaders: Record<string, string> };

function single(name: string, v: string | string[] | undefined): string | undefined {
  if (v === undefined) return undefined;
  if (Array.isArray(v) || v.includes(',')) {
    throw new ProblemError(400, 'publisher-context', `${name} must be sent once, with one value.`);
  }
  const t = v.trim();
  if (!isUuid(t)) throw new ProblemError(400, 'publisher-context', `${name} must be a UUID.`);
  return t.toLowerCase();
}

/**
 * Resolve the publisher context from request headers.
 * @param headers Node's lower-cased request headers.
 * @returns the context; `responseHeaders` holds `Deprecation`/`Sunset` when `X-Tenant-Id` was used
 *   (set them on the response even when the request fails later).
 * @throws ProblemError 400 `publisher-context` for a non-UUID value, repeated headers, or
 *   `X-Publisher-Id` and `X-Tenant-Id` that differ (compared as UUIDs, case-insensitively).
 */
export function resolvePublisherContext(headers: Record<string, string | string[] | undefined>): PublisherContext {
  const tenantUsed = headers['x-tenant-id'] !== undefined;
  const responseHeaders: Record<string, string> = tenantUsed ? { deprecation: TENANT_HEADER_DEPRECATION, sunset: TENANT_HEADER_SUNSET } : {};
  try {
    const publisher = single('X-Publisher-Id', headers['x-publisher-id']);
    const tenant = single('X-Tenant-Id', headers['x-tenant-id']);
    if (publisher && tenant && publisher !== tenant) {
      throw new ProblemError(400, 'publisher-context', 'X-Publisher-Id and X-Tenant-Id name different publishers.');
    }
    return { publisherId: publisher ?? tenant, responseHeaders };
  } catch (err) {
    if (err instanceof ProblemError) {
      throw new ProblemError(err.status, err.kind, err.message, { headers: { ...err.headers, ...responseHeaders } });
    }
    throw err;
  }
}

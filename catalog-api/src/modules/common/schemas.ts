/**
 * Response schemas every feature's routes share in the OpenAPI document: the RFC 9457 problem body,
 * the error responses of authenticated routes, the page envelope, timestamps.
 */
import { z } from 'zod';

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
  .describe('application/problem+json (RFC 9457)')
  .meta({ id: 'Problem' });

/** Error responses every authenticated route may give (documentation only). */
export const commonErrors = {
  400: problemSchema,
  401: problemSchema,
  403: problemSchema,
  404: problemSchema,
  503: problemSchema,
};

/** ISO 8601 timestamp with microseconds and offset, e.g. `2026-12-01T09:06:17.294769+00:00`. */
export const timestamp = z.string().describe('ISO 8601 timestamp');

/**
 * An email address as people type it: one `@`, no whitespace or control characters, at most 254
 * characters (RFC 5321 §4.5.3.1.3). Anything a directory search gets is escaped (RFC 4515).
 */
export const emailAddress = z
  .string()
  .max(254)
  .regex(/^[^\s@\p{Cc}]+@[^\s@\p{Cc}]+$/u, 'must be an email address');

/** IANA time zone names the runtime knows (Intl), e.g. `Europe/London`. */
export const timeZone = z
  .string()
  .max(64)
  .refine((tz) => {
    try {
      new Intl.DateTimeFormat('en', { timeZone: tz });
      return true;
    } catch {
      return false;
    }
  }, 'must be an IANA time zone, e.g. Europe/London');

/** BCP 47 language tag of the two forms the platform uses: `en` or `en-GB`. */
export const languageTag = z.string().regex(/^[a-z]{2}(-[A-Z]{2})?$/, 'must be a language tag like en or en-GB');

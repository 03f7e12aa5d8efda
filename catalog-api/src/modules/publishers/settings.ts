/**
 * The documented keys of a publisher's `settings` and `branding` (JSON columns), as zod schemas.
 * PUT replaces the whole object: a key left out takes its default (or is unset); an unknown key is
 * a 422 naming it, so a typo never silently does nothing.
 */
import { z } from 'zod';
import { problem, type FieldError } from '../../errors.ts';
import { languageTag, timeZone } from '../common/schemas.ts';
import { parseCidr } from '../../../../policies/src/conditions.ts';

/** How a publisher's members may sign in: internal passwords, Active Directory, or either. */
export const AUTH_POLICIES = ['internal', 'ad', 'both'] as const;

/** One office network: a CIDR block (IPv4 or IPv6; a bare address is one host; policies/src/conditions.ts parseCidr). */
const officeNetwork = z.string().max(64).refine(
  (s) => {
    try {
      parseCidr(s);
      return true;
    } catch {
      return false;
    }
  },
  { message: 'must be a CIDR block such as 192.0.2.0/24 or 2001:db8::/32' },
);

/** A publisher's settings. */
export const settingsSchema = z.strictObject({
  // seats moved to the account (GET /api/v1/publishers/{id}/account); a stored `seats` key is ignored
  default_territory: z.string().regex(/^[A-Z]{2}$/, 'must be an ISO 3166-1 alpha-2 country code').default('US').describe('ISO 3166-1 alpha-2; where rights apply unless a work says otherwise'),
  timezone: timeZone.default('UTC').describe('IANA time zone of reports and schedules'),
  language: languageTag.default('en').describe('default language of mail and reports (BCP 47)'),
  require_mfa: z.boolean().default(false).describe('every member must sign in with a second factor (TOTP)'),
  auth_policy: z.enum(AUTH_POLICIES).default('internal').describe('how members sign in: internal passwords, Active Directory, or both'),
  session_max_age_s: z.number().int().min(900).max(90 * 86_400).optional().describe("longest life of a member's session, seconds (15 min .. 90 days; default: the platform's)"),
  office_networks: z
    .array(officeNetwork)
    .max(50)
    .default([])
    .describe("members (system admins excepted) hold nothing here unless their request comes from one of these networks (CIDR blocks); empty = anywhere. Applied by the authorization model (migration 0012's outbox trigger writes the restriction)"),
});
export type Settings = z.infer<typeof settingsSchema>;

const hexColour = z.string().regex(/^#[0-9a-fA-F]{6}$/, 'must be a hex colour like #1a2b3c');

/** A publisher's branding. */
export const brandingSchema = z.strictObject({
  display_name: z.string().trim().min(1).max(100).optional().describe('name shown to members (default: the publisher name)'),
  logo_url: z
    .url({ protocol: /^https$/, message: 'must be an https:// URL' })
    .max(2048)
    .optional(),
  primary_color: hexColour.optional(),
  secondary_color: hexColour.optional(),
  accent_color: hexColour.optional(),
});
export type Branding = z.infer<typeof brandingSchema>;

/**
 * Validate a settings or branding body with `schema`.
 * @returns the parsed object (defaults applied)
 * @throws ProblemError 422 `validation` listing every problem (unknown keys by name)
 */
export function parseDocument<T>(schema: z.ZodType<T>, body: unknown): T {
  const parsed = schema.safeParse(body);
  if (parsed.success) return parsed.data;
  const errors: FieldError[] = parsed.error.issues.flatMap((i) =>
    i.code === 'unrecognized_keys' ? i.keys.map((k) => ({ field: k, reason: 'unknown key' })) : [{ field: i.path.join('.') || 'body', reason: i.message }],
  );
  throw problem.validation(errors);
}

/** The stored settings with their defaults (a stored value that no longer validates counts as unset). */
export function currentSettings(stored: Record<string, unknown> | null | undefined): Settings {
  const parsed = settingsSchema.safeParse(stored ?? {});
  if (parsed.success) return parsed.data;
  const known = Object.fromEntries(Object.entries(stored ?? {}).filter(([k, v]) => settingsSchema.shape[k as keyof Settings]?.safeParse(v).success));
  return settingsSchema.parse(known);
}

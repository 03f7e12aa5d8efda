/**
 * A publisher (`publishers`, formerly `tenants`): the unit of isolation. `settings` is a JSON object
 * whose documented keys are read through {@link publisherSettings}.
 */
import { defineEntity, p } from '@mikro-orm/core';
import { z } from 'zod';

export const PUBLISHER_STATUSES = ['active', 'suspended', 'trial', 'archived'] as const;

/** How a publisher's members may sign in: internal passwords, Active Directory, or either. */
export const AUTH_POLICIES = ['internal', 'ad', 'both'] as const;
export type AuthPolicy = (typeof AUTH_POLICIES)[number];

/** The settings the sign-in service reads; unknown keys are kept but ignored here. */
export const signInSettingsSchema = z.object({
  /** which sign-in methods this publisher's members may use (default `internal`) */
  auth_policy: z.enum(AUTH_POLICIES).default('internal'),
  /** every member must use a second factor (TOTP) */
  require_mfa: z.boolean().default(false),
});
export type SignInSettings = z.infer<typeof signInSettingsSchema>;

const PublisherSchema = defineEntity({
  name: 'Publisher',
  tableName: 'publishers',
  properties: {
    id: p.uuid().primary().defaultRaw('gen_random_uuid()'),
    name: p.string(),
    slug: p.string(),
    status: p.enum(PUBLISHER_STATUSES).default('active'),
    settings: p.json<Record<string, unknown>>().default('{}'),
    deletedAt: p.datetime().nullable(),
  },
  filters: { notDeleted: { name: 'notDeleted', cond: { deletedAt: null }, default: true } },
});

export class Publisher extends PublisherSchema.class {
  /** The sign-in settings with their defaults (malformed values count as the default). */
  signIn(): SignInSettings {
    const parsed = signInSettingsSchema.safeParse(this.settings ?? {});
    return parsed.success ? parsed.data : signInSettingsSchema.parse({});
  }
}
PublisherSchema.setClass(Publisher);

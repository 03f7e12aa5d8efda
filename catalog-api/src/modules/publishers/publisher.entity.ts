/**
 * A publisher (`publishers`, formerly `tenants`): the unit of isolation. `settings` and `branding`
 * are JSON objects whose documented keys are in settings.ts. Archived publishers are soft-deleted
 * (`notDeleted` filter; a system admin lists them with the filter off).
 */
import { defineEntity, p } from '@mikro-orm/core';
import { z } from 'zod';
import { TimestampText, notDeleted } from '../../db/base.entity.ts';

/** Lifecycle: trial and active work alike; suspended and archived shut the members out. */
export const PUBLISHER_STATUSES = ['active', 'trial', 'suspended', 'archived'] as const;
export type PublisherStatus = (typeof PUBLISHER_STATUSES)[number];
export const PUBLISHER_TYPES = ['enterprise', 'professional', 'platform', 'boutique'] as const;
export const BUSINESS_MODELS = ['traditional', 'platform', 'hybrid'] as const;

/** How a publisher's members may sign in: internal passwords, Active Directory, or either. */
export const AUTH_POLICIES = ['internal', 'ad', 'both'] as const;
export type AuthPolicy = (typeof AUTH_POLICIES)[number];

/** The settings the sign-in service reads; unknown keys are kept but ignored here. */
export const signInSettingsSchema = z.object({
  /** which sign-in methods this publisher's members may use (default `internal`) */
  auth_policy: z.enum(AUTH_POLICIES).default('internal'),
  /** every member must use a second factor (TOTP) */
  require_mfa: z.boolean().default(false),
  /** longest life of a member's session, seconds (unset: the platform's) */
  session_max_age_s: z.number().int().positive().optional(),
});
export type SignInSettings = z.infer<typeof signInSettingsSchema>;

const PublisherSchema = defineEntity({
  name: 'Publisher',
  tableName: 'publishers',
  properties: {
    id: p.uuid().primary().defaultRaw('gen_random_uuid()'),
    name: p.string(),
    slug: p.string(),
    type: p.enum(PUBLISHER_TYPES).default('professional'),
    businessModel: p.enum(BUSINESS_MODELS).default('traditional'),
    status: p.enum(PUBLISHER_STATUSES).default('active'),
    settings: p.json<Record<string, unknown>>().default('{}'),
    branding: p.json<Record<string, unknown>>().defaultRaw(`'{}'::jsonb`),
    createdAt: p.type(TimestampText).defaultRaw('now()'),
    updatedAt: p.type(TimestampText).defaultRaw('now()'),
    deletedAt: p.datetime().nullable(),
  },
  filters: notDeleted,
});

export class Publisher extends PublisherSchema.class {
  /** The sign-in settings with their defaults (malformed values count as the default). */
  signIn(): SignInSettings {
    const parsed = signInSettingsSchema.safeParse(this.settings ?? {});
    return parsed.success ? parsed.data : signInSettingsSchema.parse({});
  }
}
PublisherSchema.setClass(Publisher);

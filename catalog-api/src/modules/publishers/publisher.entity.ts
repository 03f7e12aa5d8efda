/**
 * A publisher (`publishers`, formerly `tenants`): the unit of isolation. `settings` and `branding`
 * are JSON objects whose documented keys are in settings.ts. Archived publishers are soft-deleted
 * (`notDeleted` filter; a system admin lists them with the filter off).
 */
import { defineEntity, p } from '@mikro-orm/core';
import { TimestampText, notDeleted } from '../../db/base.entity.ts';
import { currentSettings, type Settings } from './settings.ts';

/** Lifecycle: trial and active work alike; suspended and archived shut the members out. */
export const PUBLISHER_STATUSES = ['active', 'trial', 'suspended', 'archived'] as const;
export type PublisherStatus = (typeof PUBLISHER_STATUSES)[number];
export const PUBLISHER_TYPES = ['enterprise', 'professional', 'platform', 'boutique'] as const;
export const BUSINESS_MODELS = ['traditional', 'platform', 'hybrid'] as const;

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
  /** The settings with their defaults, as the sign-in service reads them (settings.ts `currentSettings`). */
  signIn(): Settings {
    return currentSettings(this.settings);
  }
}
PublisherSchema.setClass(Publisher);

/**
 * A person on the platform (`users`, docs/CONTRACTS.md "Database schema"). One row per person,
 * shared by every publisher they belong to; `auth_source` says who checks their password (`internal`:
 * the sign-in service, argon2id; `ad`: their publisher's Active Directory). Soft-deleted with
 * `deleted_at` (the `notDeleted` filter hides those rows).
 */
import { defineEntity, p } from '@mikro-orm/core';

/** Who verifies a user's password. */
export const AUTH_SOURCES = ['internal', 'ad'] as const;
export type AuthSource = (typeof AUTH_SOURCES)[number];

/** Account status: a disabled user cannot sign in and is denied everywhere. */
export const USER_STATUSES = ['active', 'disabled'] as const;

const UserSchema = defineEntity({
  name: 'User',
  tableName: 'users',
  properties: {
    id: p.uuid().primary().defaultRaw('gen_random_uuid()'),
    email: p.string(),
    displayName: p.string().default(''),
    // defaultRaw: never sent on insert — the sign-in service's role may not set it (column grants)
    isSystemAdmin: p.boolean().defaultRaw('false'),
    status: p.enum(USER_STATUSES).default('active'),
    authSource: p.enum(AUTH_SOURCES).default('internal'),
    /** AD objectGUID (RFC 4122 text) of a directory user. */
    externalId: p.string().nullable(),
    emailVerifiedAt: p.datetime().nullable(),
    lastLoginAt: p.datetime().nullable(),
    createdAt: p.datetime().defaultRaw('now()'),
    deletedAt: p.datetime().nullable(),
  },
  filters: { notDeleted: { name: 'notDeleted', cond: { deletedAt: null }, default: true } },
});

export class User extends UserSchema.class {}
UserSchema.setClass(User);

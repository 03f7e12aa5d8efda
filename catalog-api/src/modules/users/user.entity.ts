/**
 * A person or an API client on the platform (`users`, docs/CONTRACTS.md "Database schema"). One
 * row per subject, shared by every publisher it belongs to; `auth_source` says who checks a
 * person's password (`internal`: the sign-in service, argon2id; `ad`: their publisher's Active
 * Directory); `kind` `api_client` rows have no email and sign in with the client credentials grant.
 * Soft-deleted with `deleted_at` (the `notDeleted` filter hides those rows).
 */
import { defineEntity, p } from '@mikro-orm/core';
import { notDeleted } from '../../db/base.entity.ts';

/** Who verifies a user's password. */
export const AUTH_SOURCES = ['internal', 'ad'] as const;
export type AuthSource = (typeof AUTH_SOURCES)[number];

/** Account status: a disabled user cannot sign in and is denied everywhere. */
export const USER_STATUSES = ['active', 'disabled'] as const;
export type UserStatus = (typeof USER_STATUSES)[number];

/** A person, or the subject an API client acts as. */
export const USER_KINDS = ['person', 'api_client'] as const;

const UserSchema = defineEntity({
  name: 'User',
  tableName: 'users',
  properties: {
    id: p.uuid().primary().defaultRaw('gen_random_uuid()'),
    kind: p.enum(USER_KINDS).default('person'),
    email: p.string().nullable(),
    displayName: p.string().default(''),
    // defaultRaw: never sent on insert — the sign-in service's role may not set it (column grants)
    isSystemAdmin: p.boolean().defaultRaw('false'),
    status: p.enum(USER_STATUSES).default('active'),
    // defaultRaw: the app role may not set it (column grants); the sign-in service sets it explicitly
    authSource: p.enum(AUTH_SOURCES).defaultRaw(`'internal'`),
    /** AD objectGUID (RFC 4122 text) of a directory user. */
    externalId: p.string().nullable(),
    phone: p.string().nullable(),
    timezone: p.string().nullable(),
    language: p.string().nullable(),
    avatarUrl: p.string().nullable(),
    emailVerifiedAt: p.datetime().nullable(),
    lastLoginAt: p.datetime().nullable(),
    createdAt: p.datetime().defaultRaw('now()'),
    createdBy: p.uuid().nullable(),
    deletedAt: p.datetime().nullable(),
  },
  filters: notDeleted,
});

export class User extends UserSchema.class {}
UserSchema.setClass(User);

/**
 * Single-use tokens handed to a user (`user_tokens`): a password-reset link (1 h), an email
 * verification link (24 h), or the MFA challenge between the password step and the code (5 min).
 * Stored as SHA-256 digests; `usedAt` makes them single-use, `attempts` bounds guessing on a
 * challenge, `data` carries what the next step needs (e.g. the first factor's `amr`).
 */
import { defineEntity, p } from '@mikro-orm/core';

export const USER_TOKEN_PURPOSES = ['password_reset', 'email_verification', 'mfa_challenge'] as const;
export type UserTokenPurpose = (typeof USER_TOKEN_PURPOSES)[number];

const UserTokenSchema = defineEntity({
  name: 'UserToken',
  tableName: 'user_tokens',
  properties: {
    id: p.uuid().primary().defaultRaw('gen_random_uuid()'),
    userId: p.uuid(),
    purpose: p.enum(USER_TOKEN_PURPOSES),
    tokenHash: p.string(),
    data: p.json<Record<string, unknown>>().default('{}'),
    attempts: p.integer().default(0),
    createdAt: p.datetime().defaultRaw('now()'),
    expiresAt: p.datetime(),
    usedAt: p.datetime().nullable(),
  },
});
export class UserToken extends UserTokenSchema.class {}
UserTokenSchema.setClass(UserToken);

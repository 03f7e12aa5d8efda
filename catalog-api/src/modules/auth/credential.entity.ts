/**
 * A user's sign-in secrets and lockout state (`user_credentials`, one row per user) and their MFA
 * recovery codes (`user_recovery_codes`). Only the sign-in service's role reaches these tables.
 *
 * - `passwordHash`: argon2id PHC string (null: no internal password, e.g. a directory user).
 * - `totpSecret` / `totpPendingSecret`: the TOTP secret sealed as a JWE under the key-encryption key
 *   (secrets.ts); the pending one waits for its first code (enrolment).
 * - `totpLastStep`: the last accepted RFC 6238 time step, so a code is accepted once.
 * - `failedLoginCount`, `firstFailedAt`, `lockedUntil`, `lockoutLevel`: see lockout.ts.
 */
import { defineEntity, p } from '@mikro-orm/core';

const CredentialSchema = defineEntity({
  name: 'Credential',
  tableName: 'user_credentials',
  properties: {
    userId: p.uuid().primary(),
    passwordHash: p.string().nullable(),
    passwordChangedAt: p.datetime().nullable(),
    passwordExpiresAt: p.datetime().nullable(),
    failedLoginCount: p.integer().default(0),
    firstFailedAt: p.datetime().nullable(),
    lockedUntil: p.datetime().nullable(),
    lockoutLevel: p.integer().default(0),
    totpSecret: p.string().nullable(),
    totpPendingSecret: p.string().nullable(),
    totpEnabledAt: p.datetime().nullable(),
    totpLastStep: p.bigint('number').nullable(),
    updatedAt: p.datetime().defaultRaw('now()'),
  },
});
export class Credential extends CredentialSchema.class {}
CredentialSchema.setClass(Credential);

const RecoveryCodeSchema = defineEntity({
  name: 'RecoveryCode',
  tableName: 'user_recovery_codes',
  properties: {
    id: p.uuid().primary().defaultRaw('gen_random_uuid()'),
    userId: p.uuid(),
    /** SHA-256 (base64url) of the code. */
    codeHash: p.string(),
    createdAt: p.datetime().defaultRaw('now()'),
    usedAt: p.datetime().nullable(),
  },
});
export class RecoveryCode extends RecoveryCodeSchema.class {}
RecoveryCodeSchema.setClass(RecoveryCode);

/**
 * A sign-in session (`user_sessions`) and its refresh tokens (`refresh_tokens`).
 *
 * A session starts at sign-in and ends when it expires, is revoked (logout, admin, password reset,
 * refresh-token reuse, directory sync) or its user is disabled. Every access token carries the
 * session id as `sid`; a revoked session is pushed to every sidecar (revocations.ts).
 * Refresh tokens are opaque, stored as SHA-256 digests, and rotated on every use: the used one keeps
 * its row with `usedAt`, so presenting it again is recognised as reuse.
 */
import { defineEntity, p } from '@mikro-orm/core';

const SessionSchema = defineEntity({
  name: 'Session',
  tableName: 'user_sessions',
  properties: {
    id: p.uuid().primary().defaultRaw('gen_random_uuid()'),
    userId: p.uuid(),
    /** Authentication methods references (RFC 8176): `pwd`, `ldap`, `otp`, `mfa`. */
    amr: p.array(),
    authTime: p.datetime(),
    createdAt: p.datetime().defaultRaw('now()'),
    lastUsedAt: p.datetime().defaultRaw('now()'),
    expiresAt: p.datetime(),
    ip: p.string().columnType('inet').nullable(),
    userAgent: p.string().nullable(),
    revokedAt: p.datetime().nullable(),
    revokedReason: p.string().nullable(),
    revocationPublishedAt: p.datetime().nullable(),
  },
});
export class Session extends SessionSchema.class {
  /** Usable at `now`: neither revoked nor expired. */
  isLive(now: Date): boolean {
    return !this.revokedAt && this.expiresAt > now;
  }
}
SessionSchema.setClass(Session);

const RefreshTokenSchema = defineEntity({
  name: 'RefreshToken',
  tableName: 'refresh_tokens',
  properties: {
    id: p.uuid().primary().defaultRaw('gen_random_uuid()'),
    sessionId: p.uuid(),
    /** SHA-256 (base64url) of the token. */
    tokenHash: p.string(),
    createdAt: p.datetime().defaultRaw('now()'),
    expiresAt: p.datetime(),
    usedAt: p.datetime().nullable(),
  },
});
export class RefreshToken extends RefreshTokenSchema.class {}
RefreshTokenSchema.setClass(RefreshToken);

/**
 * One of the issuer's signing keys (`signing_keys`). Life cycle (keys/key-store.ts): `next`
 * (published in the JWKS, not signing) → `active` (signs) → `retired` (published until `expiresAt`,
 * when every token it signed has expired) → deleted. The private half is a JWE, never plaintext.
 */
import { defineEntity, p } from '@mikro-orm/core';
import type { JWK } from 'jose';

export const KEY_STATUSES = ['next', 'active', 'retired'] as const;

const SigningKeySchema = defineEntity({
  name: 'SigningKey',
  tableName: 'signing_keys',
  properties: {
    /** RFC 7638 thumbprint of the public key. */
    kid: p.string().primary(),
    alg: p.enum(['ES256', 'EdDSA'] as const),
    publicJwk: p.json<JWK>(),
    privateJwe: p.text(),
    status: p.enum(KEY_STATUSES),
    createdAt: p.datetime().defaultRaw('now()'),
    activatedAt: p.datetime().nullable(),
    retiredAt: p.datetime().nullable(),
    expiresAt: p.datetime().nullable(),
  },
});
export class SigningKey extends SigningKeySchema.class {}
SigningKeySchema.setClass(SigningKey);

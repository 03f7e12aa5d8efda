/**
 * Access tokens: JWTs per RFC 9068 ("JWT Profile for OAuth 2.0 Access Tokens"), signed with the
 * issuer's active key (keys/key-store.ts). Header `{alg, kid, typ: "at+jwt"}`; claims `iss`, `aud`,
 * `sub` (the user id), `client_id`, `iat`, `exp`, `jti` (RFC 9068 §2.2), `sid` (the session, so a
 * revocation reaches tokens already issued), `auth_time` and `amr` (RFC 8176 method references:
 * `pwd`, `ldap`, `otp`, `mfa`). No roles or permissions: every decision is OpenFGA's.
 */
import { randomUUID } from 'node:crypto';
import { SignJWT } from 'jose';
import type { IssuerKeys } from './keys/key-store.ts';

/** The `client_id` of tokens issued to people signing in through the API. */
export const FIRST_PARTY_CLIENT_ID = 'music-publishing';

/** Issuer settings of the tokens. */
export type TokenSettings = { issuer: string; audience: string; ttlSeconds: number };

/** Who and how: the claims that vary per token. */
export type SubjectClaims = { sub: string; sid: string; authTime: Date; amr: readonly string[]; clientId?: string };

/**
 * Sign an access token.
 * @returns the compact JWT and its lifetime in seconds (`expires_in`)
 * @throws ProblemError 503 when the issuer has no active key it can use (keys/key-store.ts)
 */
export async function issueAccessToken(keys: IssuerKeys, settings: TokenSettings, c: SubjectClaims): Promise<{ token: string; expiresIn: number }> {
  const key = await keys.signingKey();
  const now = Math.floor(Date.now() / 1000);
  const token = await new SignJWT({
    client_id: c.clientId ?? FIRST_PARTY_CLIENT_ID,
    sid: c.sid,
    auth_time: Math.floor(c.authTime.getTime() / 1000),
    amr: [...c.amr],
  })
    .setProtectedHeader({ alg: key.alg, kid: key.kid, typ: 'at+jwt' })
    .setIssuer(settings.issuer)
    .setAudience(settings.audience)
    .setSubject(c.sub)
    .setIssuedAt(now)
    .setExpirationTime(now + settings.ttlSeconds)
    .setJti(randomUUID())
    .sign(key.privateKey);
  return { token, expiresIn: settings.ttlSeconds };
}

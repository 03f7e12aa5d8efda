/**
 * Development identity provider: an ES256 key pair on disk whose public half the sidecar trusts
 * through `JWT_JWKS_FILE`, and a function that signs access tokens for the seeded users.
 * The real login flow (password, MFA, AD) belongs to the catalog API later; this only exists so the
 * demo and the tests can call the stack with genuine, verifiable JWTs.
 */
import { mkdirSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { SignJWT, calculateJwkThumbprint, exportJWK, exportPKCS8, generateKeyPair, importPKCS8 } from 'jose';

export const DEV_ISSUER = process.env.JWT_ISSUER ?? 'https://dev-issuer.music-publishing.local';
export const DEV_AUDIENCE = process.env.JWT_AUDIENCE ?? 'music-publishing';

/**
 * Make sure an ES256 (P-256) private key exists at `pemFile` (PKCS#8 PEM, mode 0600) and its public
 * JWK set next to it at `jwksFile` (when given). Idempotent: an existing key is kept.
 * @returns the key id, the RFC 7638 JWK thumbprint of the public key.
 */
export async function ensureKeyPair(pemFile: string, jwksFile?: string): Promise<string> {
  mkdirSync(dirname(pemFile), { recursive: true });
  if (!existsSync(pemFile)) {
    const { privateKey } = await generateKeyPair('ES256', { extractable: true });
    writeFileSync(pemFile, await exportPKCS8(privateKey), { mode: 0o600 });
  }
  const key = await importPKCS8(readFileSync(pemFile, 'utf8'), 'ES256', { extractable: true });
  const { d: _private, ...publicJwk } = await exportJWK(key);
  const kid = await calculateJwkThumbprint(publicJwk);
  if (jwksFile) {
    writeFileSync(jwksFile, JSON.stringify({ keys: [{ ...publicJwk, kid, alg: 'ES256', use: 'sig' }] }, null, 2));
  }
  return kid;
}

/** Paths of the development issuer's key files under `dataDir` (default `.data/dev-issuer`). */
export function devIssuerFiles(dataDir: string): { pem: string; jwks: string } {
  return { pem: join(dataDir, 'dev-issuer', 'private.pem'), jwks: join(dataDir, 'dev-issuer', 'jwks.json') };
}

/**
 * Sign an RFC 9068 access token (`typ: at+jwt`, ES256) for `sub`, valid `ttlSeconds` (default 3600 s).
 * @throws when the key file is missing or not an ES256 PKCS#8 key.
 */
export async function signAccessToken(
  pemFile: string,
  claims: { sub: string; email?: string; scope?: string },
  ttlSeconds = 3600,
): Promise<string> {
  const key = await importPKCS8(readFileSync(pemFile, 'utf8'), 'ES256', { extractable: true });
  const { d: _private, ...publicJwk } = await exportJWK(key);
  return new SignJWT({ email: claims.email, scope: claims.scope ?? 'catalog' })
    .setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid: await calculateJwkThumbprint(publicJwk) })
    .setIssuer(DEV_ISSUER)
    .setAudience(DEV_AUDIENCE)
    .setSubject(claims.sub)
    .setIssuedAt()
    .setExpirationTime(`${ttlSeconds}s`)
    .setJti(randomUUID())
    .sign(key);
}

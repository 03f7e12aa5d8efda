/**
 * The identity assertion the sidecar signs for the upstream (docs/CONTRACTS.md, "Identity
 * assertion"): a JWT (RFC 7519), ES256 (RFC 7518 §3.4, P-256), protected header
 * `{alg: 'ES256', kid, typ: 'JWT'}` with `kid` = RFC 7638 JWK thumbprint of the public key;
 * claims `iss`, `aud`, `sub`, `publisher_id?`, `scope`, `sid?` and `amr?` (the access token's session
 * and authentication methods), `request_id`, `iat`, `exp` = iat + 60 s, `jti`,
 * and the request it is bound to (after RFC 9449 §4.2's DPoP claims): `htm` = the HTTP method in
 * upper case, `htu` = the request path without the query string, exactly as the upstream receives
 * it (for ext_authz: the original request's path), `htq` = base64url(SHA-256(the raw query string
 * without '?', '' when there is none)) — a hash rather than the query itself, so the assertion stays
 * small however long the query and copies none of its values. The catalog API rejects an assertion
 * whose `htm`/`htu`/`htq` differ from the request it arrived with, so it cannot be replayed on another
 * route or with another query, and accepts each `jti` once.
 */
import { existsSync, readFileSync } from 'node:fs';
import { createHash, randomUUID } from 'node:crypto';
import { SignJWT, calculateJwkThumbprint, exportJWK, generateKeyPair, importPKCS8, type JWK, type CryptoKey } from 'jose';

/** Lifetime of an assertion in seconds. */
export const ASSERTION_TTL_SECONDS = 60;

/**
 * `htq` of a raw query string (docs/CONTRACTS.md, "Identity assertion"): base64url (no padding) of
 * the SHA-256 of its bytes, taken as they are — no decoding, no reordering.
 * @param query the request target after the first '?', without it ('' when there is no query)
 * @returns 43 characters
 */
export function queryHash(query: string): string {
  return createHash('sha256').update(query, 'latin1').digest('base64url');
}

/**
 * What goes into one assertion. `method` becomes `htm` (upper-cased here); `path` becomes `htu`
 * and must be the path only (no `?query`) as the upstream will see it; `query` becomes `htq`
 * ({@link queryHash}) and is the raw query string without '?' ('' for none).
 */
export type AssertionClaims = {
  sub: string;
  publisherId?: string;
  scope: string;
  /** the access token's session (`sid`), when it has one */
  sid?: string;
  /** the access token's `amr` (RFC 8176), when it states one */
  amr?: readonly string[];
  requestId: string;
  method: string;
  path: string;
  query: string;
};

/** Signs assertions and publishes the public key set. */
export type AssertionSigner = {
  kid: string;
  /** Sign an assertion. @returns the compact JWS. */
  sign(c: AssertionClaims): Promise<string>;
  /** The public JWK set (RFC 7517 §5) served at `/.well-known/jwks.json`. */
  jwks(): { keys: JWK[] };
};

/**
 * Load the signing key (PKCS#8 PEM, ES256) from `keyFile`, or — when `keyFile` is unset or missing —
 * generate an in-memory key and call `warn` (assertions then stop verifying after a restart, and
 * several sidecar instances would publish different keys).
 * @throws Error when the file exists but is not an ES256 PKCS#8 key.
 */
export async function createAssertionSigner(opts: {
  keyFile?: string;
  issuer: string;
  audience: string;
  warn: (msg: string) => void;
}): Promise<AssertionSigner> {
  let privateKey: CryptoKey;
  if (opts.keyFile && existsSync(opts.keyFile)) {
    try {
      privateKey = await importPKCS8(readFileSync(opts.keyFile, 'utf8'), 'ES256', { extractable: true });
    } catch (err) {
      throw new Error(`SIDECAR_SIGNING_KEY_FILE ${opts.keyFile}: not an ES256 PKCS#8 PEM key`, { cause: err });
    }
  } else {
    opts.warn(
      `SIDECAR_SIGNING_KEY_FILE ${opts.keyFile ? `${opts.keyFile} does not exist` : 'is not set'}: using an ephemeral in-memory signing key`,
    );
    ({ privateKey } = await generateKeyPair('ES256', { extractable: true }));
  }
  const { d: _private, ...publicJwk } = await exportJWK(privateKey);
  const kid = await calculateJwkThumbprint(publicJwk);
  const published: JWK = { ...publicJwk, kid, alg: 'ES256', use: 'sig' };
  return {
    kid,
    async sign(c) {
      if (c.path.includes('?')) throw new Error('assertion htu must not contain a query string');
      const claims: Record<string, unknown> = { scope: c.scope, request_id: c.requestId, htm: c.method.toUpperCase(), htu: c.path, htq: queryHash(c.query) };
      if (c.publisherId) claims.publisher_id = c.publisherId;
      if (c.sid) claims.sid = c.sid;
      if (c.amr && c.amr.length) claims.amr = c.amr;
      const now = Math.floor(Date.now() / 1000);
      return new SignJWT(claims)
        .setProtectedHeader({ alg: 'ES256', kid, typ: 'JWT' })
        .setIssuer(opts.issuer)
        .setAudience(opts.audience)
        .setSubject(c.sub)
        .setIssuedAt(now)
        .setExpirationTime(now + ASSERTION_TTL_SECONDS)
        .setJti(randomUUID())
        .sign(privateKey);
    },
    jwks: () => ({ keys: [published] }),
  };
}

/**
 * The identity assertion the sidecar signs for the upstream (docs/CONTRACTS.md, "Identity
 * assertion"): a JWT (RFC 7519) signed with EdDSA (RFC 8037 §3.1, Ed25519) or ES256 (RFC 7518
 * §3.4, P-256) — the algorithm follows the signing key — protected header
 * `{alg, kid, typ: 'JWT'}` with `kid` = RFC 7638 JWK thumbprint of the public key;
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
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, randomUUID, sign, type KeyObject } from 'node:crypto';
import { calculateJwkThumbprint, type JWK } from 'jose';

/** Lifetime of an assertion in seconds. */
export const ASSERTION_TTL_SECONDS = 60;

/**
 * `htq` of a raw query string (docs/CONTRACTS.md, "Identity assertion"): base64url (no padding) of
 * the SHA-256 of its bytes, taken as they are — no decoding, no reordering.
 * @param query the request target after the first '?', without it ('' when there is no query)
 * @returns 43 characters
 */
export function queryHash(query: string): string {
  if (query === '') return EMPTY_QUERY_HASH;
  return createHash('sha256').update(query, 'latin1').digest('base64url');
}
const EMPTY_QUERY_HASH = createHash('sha256').update('').digest('base64url');

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
  /** The JWS `alg` of every assertion: `EdDSA` (Ed25519 key) or `ES256` (P-256 key). */
  alg: AssertionAlg;
  /**
   * Sign an assertion, synchronously (no thread-pool round trip).
   * @returns the compact JWS.
   * @throws Error when `c.path` contains a query string.
   */
  sign(c: AssertionClaims): string;
  /** The public JWK set (RFC 7517 §5) served at `/.well-known/jwks.json`. */
  jwks(): { keys: JWK[] };
};

/** The JWS algorithms an assertion may be signed with. */
export type AssertionAlg = 'EdDSA' | 'ES256';

/**
 * The JWS `alg` for a private key: Ed25519 → `EdDSA` (RFC 8037 §3.1), EC P-256 → `ES256` (RFC 7518
 * §3.4). @throws Error for any other key type or curve.
 */
export function assertionAlgOf(key: KeyObject): AssertionAlg {
  if (key.asymmetricKeyType === 'ed25519') return 'EdDSA';
  if (key.asymmetricKeyType === 'ec' && key.asymmetricKeyDetails?.namedCurve === 'prime256v1') return 'ES256';
  throw new Error(`unsupported assertion signing key type ${key.asymmetricKeyType ?? '?'} (want Ed25519 or EC P-256)`);
}

/**
 * Load the signing key (PKCS#8 PEM, Ed25519 → EdDSA or P-256 → ES256) from `keyFile`, or — when
 * `keyFile` is unset or missing — generate an in-memory ES256 key and call `warn` (assertions then
 * stop verifying after a restart, and several sidecar instances would publish different keys).
 *
 * Signing uses node:crypto's synchronous `sign` and builds the JWS Compact Serialization
 * (RFC 7515 §7.1) itself: jose signs through WebCrypto's `subtle.sign`, a thread-pool job per
 * signature that costs more CPU than the signature (measured here: ES256 ~88 µs per assertion via
 * jose, ~38 µs sync; Ed25519 ~23 µs sync). ES256 signatures are R ‖ S (`dsaEncoding: 'ieee-p1363'`,
 * RFC 7518 §3.4). jose verifies them (catalog-api/src/plugins/identity.ts; test/sidecar/assertion-signer.test.ts).
 * @throws Error when the file exists but is not a PKCS#8 PEM Ed25519 or P-256 private key.
 */
export async function createAssertionSigner(opts: {
  keyFile?: string;
  issuer: string;
  audience: string;
  warn: (msg: string) => void;
}): Promise<AssertionSigner> {
  let privateKey: KeyObject;
  let alg: AssertionAlg;
  if (opts.keyFile && existsSync(opts.keyFile)) {
    try {
      privateKey = createPrivateKey({ key: readFileSync(opts.keyFile, 'utf8'), format: 'pem' });
      if (privateKey.type !== 'private') throw new Error('not a private key');
      alg = assertionAlgOf(privateKey);
    } catch (err) {
      throw new Error(`SIDECAR_SIGNING_KEY_FILE ${opts.keyFile}: not a PKCS#8 PEM Ed25519 or P-256 private key`, { cause: err });
    }
  } else {
    opts.warn(
      `SIDECAR_SIGNING_KEY_FILE ${opts.keyFile ? `${opts.keyFile} does not exist` : 'is not set'}: using an ephemeral in-memory signing key`,
    );
    privateKey = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
    alg = 'ES256';
  }
  const publicJwk = createPublicKey(privateKey).export({ format: 'jwk' }) as JWK;
  const kid = await calculateJwkThumbprint(publicJwk);
  const published: JWK = { ...publicJwk, kid, alg, use: 'sig' };
  const header = Buffer.from(JSON.stringify({ alg, kid, typ: 'JWT' })).toString('base64url');
  const signOpts = alg === 'ES256' ? { key: privateKey, dsaEncoding: 'ieee-p1363' as const } : privateKey;
  const digest = alg === 'ES256' ? 'sha256' : null; // Ed25519 hashes internally (RFC 8032)
  return {
    kid,
    alg,
    sign(c) {
      if (c.path.includes('?')) throw new Error('assertion htu must not contain a query string');
      const now = Math.floor(Date.now() / 1000);
      const claims: Record<string, unknown> = { scope: c.scope, request_id: c.requestId, htm: c.method.toUpperCase(), htu: c.path, htq: queryHash(c.query) };
      if (c.publisherId) claims.publisher_id = c.publisherId;
      if (c.sid) claims.sid = c.sid;
      if (c.amr && c.amr.length) claims.amr = c.amr;
      claims.iss = opts.issuer;
      claims.aud = opts.audience;
      claims.sub = c.sub;
      claims.iat = now;
      claims.exp = now + ASSERTION_TTL_SECONDS;
      claims.jti = randomUUID();
      const input = `${header}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}`;
      return `${input}.${sign(digest, Buffer.from(input, 'latin1'), signOpts).toString('base64url')}`;
    },
    jwks: () => ({ keys: [published] }),
  };
}

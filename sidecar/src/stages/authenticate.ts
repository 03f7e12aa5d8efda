/**
 * Stage 3 — authenticate. An {@link Authenticator} turns request credentials into an
 * {@link Identity}; {@link authenticateStage} runs a chain of them (first one that recognises the
 * credentials decides). Today: the JWT bearer authenticator (RFC 6750 bearer tokens carrying
 * RFC 9068 JWT access tokens, verified with jose). Seam for later: an LDAP/AD authenticator
 * (ldapts) implements the same interface — e.g. returning `skip` unless `Authorization: Basic`
 * is present — and is appended to the chain in app.ts; nothing else changes.
 */
import { readFileSync } from 'node:fs';
import { createLocalJWKSet, createRemoteJWKSet, errors as joseErrors, jwtVerify, type JWTVerifyGetKey } from 'jose';
import { createTokenCache } from '../identity/token-cache.ts';
import { ProblemError } from '../problem.ts';
import { isUuid } from './route.ts';

/** Who is calling, after authentication. */
export type Identity = {
  /** User UUID (lower case): the access token's `sub`. */
  subject: string;
  /** Space-separated scopes ('' when none). */
  scope: string;
  /** Which authenticator produced it (e.g. `jwt`). */
  method: string;
  /** All verified claims (never logged). */
  claims: Record<string, unknown>;
};

/** What an authenticator saw in the request headers. */
export type AuthInput = { headers: Record<string, string | string[] | undefined> };

/** `skip`: the credentials are not for this authenticator; `ok`: authenticated. Failures throw. */
export type AuthResult = { kind: 'skip' } | { kind: 'ok'; identity: Identity };

/**
 * One way to authenticate (Oathkeeper-style "authenticator").
 * `authenticate` must throw ProblemError 401 for credentials it recognises but rejects, and 503
 * when it cannot decide because a dependency (JWKS, directory) is unavailable (fail closed).
 */
export type Authenticator = { name: string; authenticate(input: AuthInput): Promise<AuthResult> };

/** The realm in `WWW-Authenticate` challenges. */
export const REALM = 'music-publishing';

/**
 * 401 with an RFC 6750 §3 challenge. With `error` (token present but invalid) the challenge carries
 * `error="invalid_token"`; without (no credentials) it carries only the realm (§3.1: "SHOULD NOT
 * include an error code" when the request lacks authentication information).
 */
export function unauthenticated(detail: string, error?: 'invalid_token' | 'invalid_request'): ProblemError {
  const challenge = error
    ? `Bearer realm="${REALM}", error="${error}", error_description="${detail.replace(/["\\]/g, '')}"`
    : `Bearer realm="${REALM}"`;
  return new ProblemError(401, 'unauthenticated', detail, { headers: { 'www-authenticate': challenge } });
}

/** Options of {@link createJwtAuthenticator}. Durations in milliseconds. */
export type JwtAuthenticatorOptions = {
  issuer: string;
  audience: string;
  /** JWS `alg` allow-list, e.g. ['ES256','EdDSA','RS256']; `none` and HS* are never accepted. */
  algorithms: string[];
  /** Remote JWKS (preferred in production) … */
  jwksUrl?: string;
  /** … or a local JWKS file (read once at start). */
  jwksFile?: string;
  jwksTimeoutMs?: number;
  jwksCooldownMs?: number;
  /** Verified-token cache (identity/token-cache.ts): max life of an entry in ms (0 = off, default 60 s) … */
  cacheTtlMs?: number;
  /** … and its size (default 10 000). */
  cacheMaxEntries?: number;
  /** Called once per bearer token seen: `hit` (verified from the cache) or `miss` (verified by jose, or rejected). */
  onCache?: (result: 'hit' | 'miss') => void;
};

// jose error codes meaning "the token is bad" (401) — anything else (JWKS timeout/invalid JWKS,
// network errors) means "cannot decide" (503).
const TOKEN_ERROR_CODES = new Set([
  'ERR_JWT_EXPIRED',
  'ERR_JWT_CLAIM_VALIDATION_FAILED',
  'ERR_JWT_INVALID',
  'ERR_JWS_INVALID',
  'ERR_JWS_SIGNATURE_VERIFICATION_FAILED',
  'ERR_JOSE_ALG_NOT_ALLOWED',
  'ERR_JOSE_NOT_SUPPORTED',
  'ERR_JWKS_NO_MATCHING_KEY',
  'ERR_JWKS_MULTIPLE_MATCHING_KEYS',
]);

/**
 * The bearer token of an `Authorization` header (RFC 6750 §2.1), `null` when there is no bearer
 * credential (no header, or another scheme).
 * @throws ProblemError 401 (`invalid_request`) for a malformed bearer header or repeated headers.
 */
export function bearerToken(headers: AuthInput['headers']): string | null {
  const h = headers.authorization;
  if (h === undefined) return null;
  if (Array.isArray(h)) throw unauthenticated('Several Authorization headers.', 'invalid_request');
  const m = /^Bearer +([A-Za-z0-9\-._~+/]+=*) *$/i.exec(h);
  if (!m) {
    if (/^Bearer(\s|$)/i.test(h)) throw unauthenticated('Malformed bearer credentials.', 'invalid_request');
    return null;
  }
  return m[1]!;
}

/**
 * The JWT bearer authenticator. Verifies with jose `jwtVerify`: signature with a key from the JWKS
 * (remote via `createRemoteJWKSet` with `timeoutDuration`/`cooldownDuration`, or local file via
 * `createLocalJWKSet`), `algorithms` allow-list, `iss`, `aud`, required `exp` and `sub`,
 * clock tolerance 5 s, and `typ` = `at+jwt` (RFC 9068 §4: resource servers MUST reject other
 * types — this also keeps ID tokens and the sidecar's own assertions out). `sub` must be a UUID.
 *
 * Successful verifications are cached (token-cache.ts) until the earliest of the token's `exp`,
 * `cacheTtlMs` and LRU eviction. A hit is accepted only while the JWKS still resolves the token's
 * `alg`/`kid` to the very key object that verified it (jose reloads a remote set after its max age
 * or on an unknown `kid`; a reloaded set yields new key objects) — so the cache never accepts a
 * token that jose, asked now, would check against a different or missing key. Rejections are never
 * cached.
 * @throws Error at construction when neither `jwksUrl` nor a readable `jwksFile` is given.
 */
export function createJwtAuthenticator(opts: JwtAuthenticatorOptions): Authenticator {
  let keys: JWTVerifyGetKey;
  if (opts.jwksUrl) {
    keys = createRemoteJWKSet(new URL(opts.jwksUrl), {
      timeoutDuration: opts.jwksTimeoutMs ?? 2000,
      cooldownDuration: opts.jwksCooldownMs ?? 30_000,
    });
  } else if (opts.jwksFile) {
    keys = createLocalJWKSet(JSON.parse(readFileSync(opts.jwksFile, 'utf8')));
  } else {
    throw new Error('JWT authenticator: set JWT_JWKS_URL or JWT_JWKS_FILE');
  }
  const algorithms = opts.algorithms.filter((a) => a !== 'none' && !a.startsWith('HS'));
  const cache = createTokenCache<Identity>({ maxTtlMs: opts.cacheTtlMs ?? 60_000, maxEntries: opts.cacheMaxEntries ?? 10_000 });
  const onCache = opts.onCache ?? (() => undefined);

  /** The key the JWKS gives now for a cached token's header, or undefined when it gives none. */
  const currentKey = async (header: { alg: string; kid?: string }): Promise<unknown> => {
    try {
      return await keys(header, undefined as never);
    } catch {
      return undefined; // no/several matching keys, JWKS unreachable: verify in full below
    }
  };

  return {
    name: 'jwt',
    async authenticate({ headers }) {
      const token = bearerToken(headers);
      if (token === null) return { kind: 'skip' };
      const cacheKey = cache.keyOf(token);
      const hit = cache.get(cacheKey);
      if (hit) {
        if ((await currentKey(hit.header)) === hit.key) {
          onCache('hit');
          return { kind: 'ok', identity: hit.value };
        }
        cache.delete(cacheKey);
      }
      onCache('miss');
      let usedKey: unknown;
      let verified: Awaited<ReturnType<typeof jwtVerify>>;
      try {
        verified = await jwtVerify(token, async (h, t) => (usedKey = await keys(h, t)), {
          algorithms,
          issuer: opts.issuer,
          audience: opts.audience,
          requiredClaims: ['exp', 'sub'],
          clockTolerance: 5,
          typ: 'at+jwt',
        });
      } catch (err) {
        const code = (err as { code?: string }).code;
        if (err instanceof joseErrors.JOSEError && code && TOKEN_ERROR_CODES.has(code)) {
          throw unauthenticated(tokenDetail(code), 'invalid_token');
        }
        // JWKS unreachable / timed out / not a key set: we cannot decide → fail closed.
        throw new ProblemError(503, 'pdp-unavailable', 'The token issuer\'s keys cannot be fetched; try again later.', {
          headers: { 'retry-after': '1' },
          cause: err,
        });
      }
      const { payload, protectedHeader } = verified;
      if (!isUuid(payload.sub)) throw unauthenticated('The token subject is not a user id.', 'invalid_token');
      const scope = typeof payload.scope === 'string' ? payload.scope : '';
      // Shared by every request that presents this token while cached: frozen.
      const identity: Identity = Object.freeze({
        subject: payload.sub.toLowerCase(),
        scope,
        method: 'jwt',
        claims: Object.freeze({ ...payload }),
      });
      if (usedKey !== undefined && typeof payload.exp === 'number') {
        const header = protectedHeader.kid === undefined ? { alg: protectedHeader.alg } : { alg: protectedHeader.alg, kid: protectedHeader.kid };
        cache.set(cacheKey, { value: identity, key: usedKey, header, expMs: payload.exp * 1000 });
      }
      return { kind: 'ok', identity };
    },
  };
}

function tokenDetail(code: string): string {
  switch (code) {
    case 'ERR_JWT_EXPIRED':
      return 'The access token has expired.';
    case 'ERR_JWT_CLAIM_VALIDATION_FAILED':
      return 'The access token has invalid claims.';
    case 'ERR_JOSE_ALG_NOT_ALLOWED':
    case 'ERR_JOSE_NOT_SUPPORTED':
      return 'The access token algorithm is not accepted.';
    default:
      return 'The access token is invalid.';
  }
}

/**
 * The authenticate stage: run `authenticators` in order; the first non-`skip` result wins.
 * @returns the caller's identity.
 * @throws ProblemError 401 when no authenticator recognised any credentials (plain `Bearer`
 *   challenge), or whatever the deciding authenticator throws (401 / 503).
 */
export async function authenticateStage(authenticators: Authenticator[], input: AuthInput): Promise<Identity> {
  for (const a of authenticators) {
    const r = await a.authenticate(input);
    if (r.kind === 'ok') return r.identity;
  }
  throw unauthenticated('An access token is required (Authorization: Bearer).');
}

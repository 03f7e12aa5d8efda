/**
 * Stage 3 — authenticate. An {@link Authenticator} turns request credentials into an
 * {@link Identity}; {@link authenticateStage} runs a chain of them (first one that recognises the
 * credentials decides). Today: the JWT bearer authenticator (RFC 6750 bearer tokens carrying
 * RFC 9068 JWT access tokens, verified with jose) for every configured issuer. Seam for later: an
 * LDAP/AD authenticator (ldapts) implements the same interface — e.g. returning `skip` unless
 * `Authorization: Basic` is present — and is appended to the chain in app.ts; nothing else changes.
 */
import { createRemoteJWKSet, customFetch, decodeJwt, errors as joseErrors, jwtVerify, type FetchImplementation, type JWTVerifyGetKey } from 'jose';
import { fetch as undiciFetch, request as undiciRequest } from 'undici';
import { createTokenCache } from '../identity/token-cache.ts';
import { ProblemError, pdpUnavailable } from '../problem.ts';
import { isUuid } from './route.ts';

/** Who is calling, after authentication. */
export type Identity = {
  /** User UUID (lower case): the access token's subject claim. */
  subject: string;
  /** Space-separated scopes ('' when none). */
  scope: string;
  /** Which authenticator produced it (e.g. `jwt`). */
  method: string;
  /** The token's issuer (`iss`). */
  issuer: string;
  /** The sign-in session (`sid`), when the token names one. */
  sid: string | undefined;
  /** How the user authenticated (`amr`, RFC 8176), [] when not stated. */
  amr: readonly string[];
  /** True when the issuer's sessions are revocable: the session stage checks `sid`. */
  sessionBound: boolean;
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

/**
 * One trusted issuer (docs/CONTRACTS.md, "Access token"). Keys come from `jwksUri`, or from the
 * `jwks_uri` of the OpenID Provider metadata at `discoveryUrl` (OpenID Connect Discovery 1.0), whose
 * `issuer` must equal `issuer` (§4.3). Durations in seconds.
 */
export type IssuerConfig = {
  issuer: string;
  /** accepted `aud` value(s) */
  audience: string | string[];
  jwksUri?: string;
  discoveryUrl?: string;
  /** JWS `alg` allow-list; `none` and HS* are never accepted */
  algorithms: string[];
  /** required JWT `typ` header (`at+jwt` per RFC 9068; Entra ID access tokens say `JWT`) */
  typ: string;
  /** the claim holding the platform user id, a UUID (default `sub`; Entra ID: `oid`) */
  subjectClaim: string;
  /** the issuer's sessions are revocable (our own issuer): tokens must carry `sid` */
  sessions: boolean;
  /** tokens older than this (by `iat`) are refused; also rejects `iat` in the future */
  maxTokenAgeS: number;
};

/** Options of {@link createJwtAuthenticator}. Durations in milliseconds. */
export type JwtAuthenticatorOptions = {
  issuers: IssuerConfig[];
  jwksTimeoutMs?: number;
  jwksCooldownMs?: number;
  /** how long a fetched JWKS is used before it is fetched again (jose `cacheMaxAge`, default 5 min) */
  jwksCacheMaxAgeMs?: number;
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
 * The keys of one issuer, however found. `keys()` answers synchronously once they are known (a
 * JWKS URL at once, discovery after it succeeded), so a cached token costs no extra await.
 */
type KeySource = { config: IssuerConfig; algorithms: string[]; keys(): JWTVerifyGetKey | Promise<JWTVerifyGetKey> };

const keysUnavailable = (cause: unknown) =>
  pdpUnavailable("The token issuer's keys cannot be fetched; try again later.", cause);

/** Build the key source of `config` (remote JWKS, directly or through discovery). */
function keySource(config: IssuerConfig, o: JwtAuthenticatorOptions): KeySource {
  const timeoutMs = o.jwksTimeoutMs ?? 2000;
  const cooldownMs = o.jwksCooldownMs ?? 30_000;
  const remote = (url: string) =>
    createRemoteJWKSet(new URL(url), {
      timeoutDuration: timeoutMs,
      cooldownDuration: cooldownMs,
      cacheMaxAge: o.jwksCacheMaxAgeMs ?? 300_000,
      [customFetch]: undiciFetch as unknown as FetchImplementation, // every outbound call through undici
    });
  const algorithms = config.algorithms.filter((a) => a !== 'none' && !a.toUpperCase().startsWith('HS'));
  if (config.jwksUri) {
    const set = remote(config.jwksUri);
    return { config, algorithms, keys: () => set };
  }
  // Discovery: fetched on first use; a failure is remembered for the cooldown, then retried.
  let found: Promise<JWTVerifyGetKey> | null = null;
  let resolved: JWTVerifyGetKey | null = null;
  let failedAt = 0;
  const discover = async (): Promise<JWTVerifyGetKey> => {
    const res = await undiciRequest(config.discoveryUrl!, { method: 'GET', headersTimeout: timeoutMs, bodyTimeout: timeoutMs, signal: AbortSignal.timeout(timeoutMs) });
    if (res.statusCode !== 200) throw new Error(`discovery answered ${res.statusCode}`);
    const meta = (await res.body.json()) as { issuer?: unknown; jwks_uri?: unknown };
    if (meta.issuer !== config.issuer) throw new Error(`discovery names issuer ${String(meta.issuer)}, expected ${config.issuer}`);
    if (typeof meta.jwks_uri !== 'string' || !/^https?:\/\//.test(meta.jwks_uri)) throw new Error('discovery has no jwks_uri');
    return (resolved = remote(meta.jwks_uri));
  };
  const waitForDiscovery = async (): Promise<JWTVerifyGetKey> => {
    if (!found) {
      if (Date.now() - failedAt < cooldownMs) throw keysUnavailable(new Error('discovery failed recently'));
      found = discover();
      found.catch(() => {
        found = null;
        failedAt = Date.now();
      });
    }
    try {
      return await found;
    } catch (err) {
      throw keysUnavailable(err);
    }
  };
  return { config, algorithms, keys: () => resolved ?? waitForDiscovery() };
}

/**
 * The JWT bearer authenticator for every configured issuer. The token's (unverified) `iss` picks
 * the issuer; an issuer that is not configured → 401. Then jose `jwtVerify`: signature with a key
 * from that issuer's JWKS (`createRemoteJWKSet` with `timeoutDuration`, `cooldownDuration`,
 * `cacheMaxAge`, fetched through undici), the issuer's `algorithms` allow-list, `iss`, `aud`,
 * required `exp` and `iat`, `maxTokenAge` (so an `iat` in the future is refused too), clock
 * tolerance 5 s, and `typ` (RFC 9068 §4: `at+jwt` — this also keeps ID tokens and the sidecar's own
 * assertions out). The subject claim must be a UUID.
 *
 * Successful verifications are cached (token-cache.ts) until the earliest of the token's `exp`,
 * `cacheTtlMs` and LRU eviction. A hit is accepted only while the issuer's JWKS still resolves the
 * token's `alg`/`kid` to the very key object that verified it (jose reloads a remote set after its
 * max age or on an unknown `kid`; a reloaded set yields new key objects) — so the cache never
 * accepts a token that jose, asked now, would check against a different or missing key. Rejections
 * are never cached.
 * @throws Error at construction when an issuer has neither or both of `jwksUri` and `discoveryUrl`.
 */
export function createJwtAuthenticator(opts: JwtAuthenticatorOptions): Authenticator {
  const sources = new Map<string, KeySource>();
  for (const c of opts.issuers) {
    if (!c.jwksUri === !c.discoveryUrl) throw new Error(`issuer ${c.issuer}: give exactly one of jwks_uri and discovery_url`);
    sources.set(c.issuer, keySource(c, opts));
  }
  const cache = createTokenCache<Identity>({ maxTtlMs: opts.cacheTtlMs ?? 60_000, maxEntries: opts.cacheMaxEntries ?? 10_000 });
  const onCache = opts.onCache ?? (() => undefined);

  /**
   * The key the issuer's JWKS gives now for a cached token's header, or undefined when it gives none
   * (no or several matching keys: verified in full below).
   * @throws ProblemError 503 when the JWKS cannot be fetched: at once, not after a second fetch by
   *   the full verification (which would double the wait: test/faults/jwks.test.ts)
   */
  const currentKey = async (source: KeySource | undefined, header: { alg: string; kid?: string }): Promise<unknown> => {
    try {
      if (!source) return undefined;
      const keys = source.keys();
      return await (keys instanceof Promise ? await keys : keys)(header, undefined as never);
    } catch (err) {
      if (err instanceof ProblemError) throw err; // discovery unavailable
      const code = (err as { code?: string }).code;
      if (err instanceof joseErrors.JOSEError && code && TOKEN_ERROR_CODES.has(code)) return undefined;
      throw keysUnavailable(err);
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
        if ((await currentKey(sources.get(hit.value.issuer), hit.header)) === hit.key) {
          onCache('hit');
          return { kind: 'ok', identity: hit.value };
        }
        cache.delete(cacheKey);
      }
      onCache('miss');
      let iss: unknown;
      try {
        iss = decodeJwt(token).iss;
      } catch {
        throw unauthenticated('The access token is invalid.', 'invalid_token');
      }
      const source = typeof iss === 'string' ? sources.get(iss) : undefined;
      if (!source) throw unauthenticated('The access token comes from an issuer this service does not trust.', 'invalid_token');
      const c = source.config;
      const keys = await source.keys();
      let usedKey: unknown;
      let verified: Awaited<ReturnType<typeof jwtVerify>>;
      try {
        verified = await jwtVerify(token, async (h, t) => (usedKey = await keys(h, t)), {
          algorithms: source.algorithms,
          issuer: c.issuer,
          audience: c.audience,
          requiredClaims: ['exp', 'iat', c.subjectClaim],
          clockTolerance: 5,
          maxTokenAge: c.maxTokenAgeS,
          typ: c.typ,
        });
      } catch (err) {
        const code = (err as { code?: string }).code;
        if (err instanceof joseErrors.JOSEError && code && TOKEN_ERROR_CODES.has(code)) {
          throw unauthenticated(tokenDetail(code), 'invalid_token');
        }
        // JWKS unreachable / timed out / not a key set: we cannot decide → fail closed.
        throw keysUnavailable(err);
      }
      const { payload, protectedHeader } = verified;
      const subject = payload[c.subjectClaim];
      if (typeof subject !== 'string' || !isUuid(subject)) throw unauthenticated('The token subject is not a user id.', 'invalid_token');
      const amr = Array.isArray(payload.amr) ? payload.amr.filter((x): x is string => typeof x === 'string') : [];
      // Shared by every request that presents this token while cached: frozen.
      const identity: Identity = Object.freeze({
        subject: subject.toLowerCase(),
        scope: typeof payload.scope === 'string' ? payload.scope : '',
        method: 'jwt',
        issuer: c.issuer,
        sid: typeof payload.sid === 'string' ? payload.sid : undefined,
        amr: Object.freeze(amr),
        sessionBound: c.sessions,
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

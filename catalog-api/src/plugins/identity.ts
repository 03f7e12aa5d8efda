/**
 * Identity: the catalog API trusts exactly one thing, the sidecar's signed identity assertion in
 * `X-Identity-Assertion` (docs/CONTRACTS.md, "Identity assertion"). Verified with jose: EdDSA (Ed25519)
 * or ES256 — {@link ASSERTION_ALGORITHMS}, whichever the sidecar's key is —
 * `typ: JWT`, issuer ASSERTION_ISSUER, audience ASSERTION_AUDIENCE, `exp`, `sub` and `jti` required, 5 s clock
 * tolerance; `sub` and (when present) `publisher_id` must be UUIDs; `htm`/`htu` must equal the method
 * and the path (request.url without the query string) of the request carrying it and `htq` the
 * base64url SHA-256 of its raw query string, so an assertion cannot be replayed against another
 * route, method or query; and its `jti` is accepted once (plugins/assertion-replay.ts: Redis
 * `SET NX`; a replay → 401, Redis unavailable → 503). Keys come from the sidecar's JWKS
 * (`createRemoteJWKSet` with a fetch timeout and a refetch cooldown) or from an injected key resolver.
 *
 * Every route under /api/ needs a valid assertion unless it is declared with `config: { public: true }`;
 * routes outside /api/ (docs, health) are public. Missing or invalid → 401 problem+json; JWKS
 * unreachable → 503 (the API cannot tell whether the assertion is good).
 */
import { createHash } from 'node:crypto';
import fp from 'fastify-plugin';
import { createRemoteJWKSet, errors as joseErrors, jwtVerify, type JWTVerifyGetKey } from 'jose';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { problem, ProblemError } from '../errors.ts';
import type { ReplayGuard } from './assertion-replay.ts';

/** The verified caller. */
export type Identity = {
  /** `sub`: the user's UUID */
  userId: string;
  /** `publisher_id` claim, or null when the route needed no publisher context */
  publisherId: string | null;
  /** `scope` claim (space-separated), '' when absent */
  scope: string;
  /** `request_id` claim, when present */
  requestId: string | null;
  /** `jti` claim (required; accepted once) */
  jti: string;
  /** `sid` claim: the sign-in session the access token belongs to (null for other issuers) */
  sid: string | null;
  /** `amr` claim: how the user authenticated (RFC 8176 values; empty when the issuer said nothing) */
  amr: string[];
};

declare module 'fastify' {
  interface FastifyRequest {
    /** Set by the identity plugin on authenticated routes; null on public ones. */
    identity: Identity | null;
  }
  interface FastifyContextConfig {
    /** true: no identity assertion required. */
    public?: boolean;
  }
}

/**
 * The request an assertion must be bound to (docs/CONTRACTS.md, "Identity assertion"; after RFC
 * 9449's `htm`/`htu`): compared exactly with the `htm` and `htu` claims, and `htq` with
 * {@link queryHash}(`query`).
 */
export type RequestBinding = {
  /** the HTTP method as received (upper case) */
  method: string;
  /** the request target's path as received, without the query string (no decoding, no normalisation) */
  path: string;
  /** the request target after the first '?', without it, as received ('' when there is none) */
  query: string;
};

/**
 * The `htq` claim of a raw query string: base64url (no padding) of its SHA-256, over the bytes as
 * received (no decoding, no reordering). The sidecar computes the same (sidecar/src/identity/assertion.ts).
 * @param query the request target after the first '?' ('' when none)
 * @returns 43 characters
 */
export function queryHash(query: string): string {
  return createHash('sha256').update(query, 'latin1').digest('base64url');
}

/** Split a raw request target into the binding's path and query. */
export function bindingOf(method: string, url: string): RequestBinding {
  const q = url.indexOf('?');
  return { method, path: q === -1 ? url : url.slice(0, q), query: q === -1 ? '' : url.slice(q + 1) };
}

/** Options of {@link createAssertionVerifier} and the identity plugin. */
export type AssertionVerifierOptions = {
  issuer: string;
  audience: string;
  /** the sidecar's JWKS URL (ignored when `getKey` is given) */
  jwksUrl?: string;
  /** a key resolver (e.g. `createLocalJWKSet`) instead of fetching `jwksUrl`; for tests */
  getKey?: JWTVerifyGetKey;
  /** JWKS fetch timeout, ms (default 2000) */
  jwksTimeoutMs?: number;
  /** minimum time between refetches on an unknown `kid`, ms (default 30 000) */
  jwksCooldownMs?: number;
  /** allowed clock skew, seconds (default 5) */
  clockToleranceSec?: number;
  /** claims each accepted assertion's `jti` once (assertion-replay.ts); required — replays are never accepted silently */
  replay: ReplayGuard;
};

/**
 * The assertion's accepted JWS algorithms: EdDSA (RFC 8037, the sidecar's keys from scripts/keys.ts)
 * and ES256 (RFC 7518 §3.4, sidecar keys made before; accepted during the transition).
 */
export const ASSERTION_ALGORITHMS = ['EdDSA', 'ES256'];

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
/** A `jti` short and plain enough to be a Redis key part (the sidecar sends UUIDs). */
const JTI = /^[A-Za-z0-9._:-]{1,128}$/;

/**
 * Build the assertion verifier.
 * @returns `verify(token, request)` resolving to the {@link Identity};
 *   it rejects with ProblemError 401 `unauthenticated` for any invalid token (bad signature, unknown
 *   key, wrong alg/typ/iss/aud, expired, missing or malformed claims, `htm`/`htu`/`htq` missing or not
 *   those of `request`, a `jti` already accepted), or 503 when the JWKS cannot be fetched
 *   (`upstream-timeout` / `upstream-unavailable`) or the replay check cannot reach Redis
 *   (`upstream-unavailable`). Only an assertion that passed every other check claims its `jti`.
 * @throws Error when neither `getKey` nor `jwksUrl` is given
 */
export function createAssertionVerifier(opts: AssertionVerifierOptions): (token: string, request: RequestBinding) => Promise<Identity> {
  const getKey =
    opts.getKey ??
    (opts.jwksUrl
      ? createRemoteJWKSet(new URL(opts.jwksUrl), {
          timeoutDuration: opts.jwksTimeoutMs ?? 2000,
          cooldownDuration: opts.jwksCooldownMs ?? 30_000,
        })
      : undefined);
  if (!getKey) throw new Error('createAssertionVerifier: give jwksUrl or getKey');
  const clockTolerance = opts.clockToleranceSec ?? 5;
  return async (token: string, request: RequestBinding) => {
    let payload;
    try {
      ({ payload } = await jwtVerify(token, getKey, {
        algorithms: ASSERTION_ALGORITHMS,
        issuer: opts.issuer,
        audience: opts.audience,
        typ: 'JWT',
        requiredClaims: ['exp', 'sub', 'jti'],
        clockTolerance,
      }));
    } catch (err) {
      throw mapJoseError(err);
    }
    const sub = payload.sub;
    if (typeof sub !== 'string' || !UUID.test(sub)) throw problem.unauthenticated('The identity assertion has no valid subject.');
    const pub = payload.publisher_id;
    if (pub !== undefined && pub !== null && (typeof pub !== 'string' || !UUID.test(pub))) {
      throw problem.unauthenticated('The identity assertion carries an invalid publisher_id.');
    }
    const { htm, htu } = payload;
    if (typeof htm !== 'string' || typeof htu !== 'string' || !htm || !htu) {
      throw problem.unauthenticated('The identity assertion is not bound to a request (htm and htu claims required).');
    }
    if (htm !== request.method) throw problem.unauthenticated('The identity assertion was issued for another request method (htm).');
    if (htu !== request.path) throw problem.unauthenticated('The identity assertion was issued for another request path (htu).');
    const { htq, jti } = payload;
    if (typeof htq !== 'string' || !htq) throw problem.unauthenticated('The identity assertion is not bound to a query string (htq claim required).');
    if (htq !== queryHash(request.query)) throw problem.unauthenticated('The identity assertion was issued for another query string (htq).');
    if (typeof jti !== 'string' || !JTI.test(jti)) throw problem.unauthenticated('The identity assertion has no valid jti.');
    await opts.replay.claim(jti, payload.exp!);
    return {
      userId: sub.toLowerCase(),
      publisherId: typeof pub === 'string' ? pub.toLowerCase() : null,
      scope: typeof payload.scope === 'string' ? payload.scope : '',
      requestId: typeof payload.request_id === 'string' ? payload.request_id : null,
      jti,
      sid: typeof payload.sid === 'string' ? payload.sid : null,
      amr: Array.isArray(payload.amr) ? payload.amr.filter((x): x is string => typeof x === 'string') : [],
    };
  };
}

function mapJoseError(err: unknown): ProblemError {
  if (err instanceof joseErrors.JWKSTimeout) return problem.timeout('The identity assertion keys could not be fetched in time.');
  if (err instanceof joseErrors.JWKSInvalid) return problem.unavailable('The identity assertion keys are unavailable.');
  if (err instanceof joseErrors.JOSEError) {
    // ERR_JOSE_GENERIC is what a remote JWKS answering non-200 raises; everything else is the token's fault.
    if (err.code === 'ERR_JOSE_GENERIC' && /JSON Web Key Set/i.test(err.message)) return problem.unavailable('The identity assertion keys are unavailable.');
    // a missing or bad claim: name it (`exp`, `jti`, `aud` …), never its value
    if (err instanceof joseErrors.JWTClaimValidationFailed) return problem.unauthenticated(`The identity assertion is invalid (${err.code}: ${err.claim}).`);
    return problem.unauthenticated(`The identity assertion is invalid (${err.code}).`);
  }
  // fetch() failures (connection refused, DNS) surface as TypeError from createRemoteJWKSet.
  if (err instanceof TypeError) return problem.unavailable('The identity assertion keys are unavailable.');
  return problem.unauthenticated('The identity assertion is invalid.');
}

/** Read the single `X-Identity-Assertion` header value; repeated or empty headers are rejected. */
function headerToken(request: FastifyRequest): string | null {
  const raw = request.headers['x-identity-assertion'];
  if (Array.isArray(raw)) return null;
  const value = raw?.trim();
  return value ? value : null;
}

/**
 * Fastify plugin: verifies the assertion in an `onRequest` hook for every non-public /api/ route and
 * sets `request.identity`. No other header (X-User-Id, Authorization …) is ever read for identity.
 */
export const identityPlugin = fp(
  async (app: FastifyInstance, opts: AssertionVerifierOptions) => {
    const verify = createAssertionVerifier(opts);
    app.decorateRequest('identity', null);
    // Start with the replay check's Redis connected (at most 2 s; without it requests get 503, not a hang).
    app.addHook('onReady', () => opts.replay.ready(2000));
    app.addHook('onRequest', async (request) => {
      if (request.routeOptions.config?.public) return;
      const binding = bindingOf(request.method, request.url);
      if (!binding.path.startsWith('/api/')) return;
      const token = headerToken(request);
      if (!token) throw problem.unauthenticated('The X-Identity-Assertion header is missing.');
      try {
        request.identity = await verify(token, binding);
      } catch (err) {
        if (err instanceof ProblemError && err.status >= 500) request.log.warn({ kind: err.kind, cause: (err.cause as Error | undefined)?.message }, err.message);
        throw err;
      }
    });
  },
  { name: 'catalog-identity' },
);

/**
 * The verified identity of `request`.
 * @throws ProblemError 401 when the route ran without one (a programming error: a public route used it)
 */
export function requireIdentity(request: FastifyRequest): Identity {
  if (!request.identity) throw problem.unauthenticated();
  return request.identity;
}

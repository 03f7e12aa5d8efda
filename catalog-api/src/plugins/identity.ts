/**
 * Identity: the catalog API trusts exactly one thing, the sidecar's signed identity assertion in
 * `X-Identity-Assertion` (docs/CONTRACTS.md, "Identity assertion"). Verified with jose: ES256 only,
 * `typ: JWT`, issuer ASSERTION_ISSUER, audience ASSERTION_AUDIENCE, `exp` and `sub` required, 5 s clock
 * tolerance; `sub` and (when present) `publisher_id` must be UUIDs; `htm`/`htu` must equal the method
 * and the path (request.url without the query string) of the request carrying it, so an assertion
 * cannot be replayed against another route or method. Keys come from the sidecar's JWKS
 * (`createRemoteJWKSet` with a fetch timeout and a refetch cooldown) or from an injected key resolver.
 *
 * Every route under /api/ needs a valid assertion unless it is declared with `config: { public: true }`;
 * routes outside /api/ (docs, health) are public. Missing or invalid → 401 problem+json; JWKS
 * unreachable → 503 (the API cannot tell whether the assertion is good).
 */
import fp from 'fastify-plugin';
import { createRemoteJWKSet, errors as joseErrors, jwtVerify, type JWTVerifyGetKey } from 'jose';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { problem, ProblemError } from '../errors.ts';

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
  /** `jti` claim, when present */
  jti: string | null;
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
 * 9449's `htm`/`htu`): compared exactly with the `htm` and `htu` claims.
 */
export type RequestBinding = {
  /** the HTTP method as received (upper case) */
  method: string;
  /** the request target's path as received, without the query string (no decoding, no normalisation) */
  path: string;
};

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
};

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * Build the assertion verifier.
 * @returns `verify(token, request)` resolving to the {@link Identity};
 *   it rejects with ProblemError 401 `unauthenticated` for any invalid token (bad signature, unknown
 *   key, wrong alg/typ/iss/aud, expired, missing or malformed claims, `htm`/`htu` missing or not those
 *   of `request`), or 503 when the JWKS cannot be
 *   fetched (`upstream-timeout` / `upstream-unavailable`).
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
  return async (token: string, request: RequestBinding) => {
    let payload;
    try {
      ({ payload } = await jwtVerify(token, getKey, {
        algorithms: ['ES256'],
        issuer: opts.issuer,
        audience: opts.audience,
        typ: 'JWT',
        requiredClaims: ['exp', 'sub'],
        clockTolerance: opts.clockToleranceSec ?? 5,
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
    return {
      userId: sub.toLowerCase(),
      publisherId: typeof pub === 'string' ? pub.toLowerCase() : null,
      scope: typeof payload.scope === 'string' ? payload.scope : '',
      requestId: typeof payload.request_id === 'string' ? payload.request_id : null,
      jti: typeof payload.jti === 'string' ? payload.jti : null,
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
    app.addHook('onRequest', async (request) => {
      if (request.routeOptions.config?.public) return;
      const path = request.url.split('?', 1)[0]!;
      if (!path.startsWith('/api/')) return;
      const token = headerToken(request);
      if (!token) throw problem.unauthenticated('The X-Identity-Assertion header is missing.');
      request.identity = await verify(token, { method: request.method, path });
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

/**
 * Problem details (RFC 9457) for every error the catalog API returns, with the stable `type` URIs of
 * docs/CONTRACTS.md ("Errors"). Throw a {@link ProblemError} anywhere; the error handler in
 * `plugins/problems.ts` renders it as `application/problem+json`.
 */

/** Prefix of every problem `type`. */
export const PROBLEM_TYPE_BASE = 'https://errors.music-publishing.example/';

/** The contract's error kinds (the last path segment of `type`). */
export type ProblemKind =
  | 'bad-request'
  | 'validation'
  | 'non-canonical-path'
  | 'unauthenticated'
  | 'forbidden'
  | 'not-found'
  | 'conflict'
  | 'publisher-context'
  | 'pdp-unavailable'
  | 'upstream-unavailable'
  | 'upstream-timeout'
  | 'payload-too-large'
  | 'internal'
  // identity (docs/CONTRACTS.md, "Identity")
  | 'too-many-requests'
  | 'account-locked'
  | 'account-disabled'
  | 'account-expired'
  | 'directory-account-locked'
  | 'password-expired'
  | 'password-must-change'
  | 'no-directory-role'
  | 'auth-method-not-allowed'
  | 'mfa-required'
  | 'directory-unavailable'
  | 'invalid-grant'
  // administration (docs/CONTRACTS.md, "Administration")
  | 'publisher-suspended'
  | 'publisher-archived'
  | 'seats-exhausted'
  | 'last-admin'
  // accounts (docs/CONTRACTS.md, "Accounts and usage")
  | 'publisher-read-only'
  | 'seats-in-use'
  // authorization administration (docs/CONTRACTS.md, "Authorization administration")
  | 'shadow-changes';

const TITLES: Record<ProblemKind, string> = {
  'bad-request': 'Bad request',
  validation: 'Validation failed',
  'non-canonical-path': 'Non-canonical path',
  unauthenticated: 'Unauthenticated',
  forbidden: 'Forbidden',
  'not-found': 'Not found',
  conflict: 'Conflict',
  'publisher-context': 'Publisher context required or invalid',
  'pdp-unavailable': 'Authorization service unavailable',
  'upstream-unavailable': 'Dependency unavailable',
  'upstream-timeout': 'Dependency timed out',
  'payload-too-large': 'Payload too large',
  internal: 'Internal error',
  'too-many-requests': 'Too many requests',
  'account-locked': 'Account locked',
  'account-disabled': 'Account disabled',
  'account-expired': 'Account expired',
  'directory-account-locked': 'Account locked by the directory',
  'password-expired': 'Password expired',
  'password-must-change': 'Password must be changed',
  'no-directory-role': 'No role from the directory',
  'auth-method-not-allowed': 'Sign-in method not allowed',
  'mfa-required': 'Second factor required',
  'directory-unavailable': 'Directory unavailable',
  'invalid-grant': 'Invalid or expired token',
  'publisher-suspended': 'Publisher suspended',
  'publisher-archived': 'Publisher archived',
  'seats-exhausted': 'No seat left',
  'last-admin': 'A publisher keeps at least one admin',
  'publisher-read-only': 'Publisher is read-only',
  'seats-in-use': 'More seats in use than the plan allows',
  'shadow-changes': 'The candidate model changes recent decisions',
};

/** One offending input: `field` is a dotted path (`songwriters[1].role`), `reason` says why. */
export type FieldError = { field: string; reason: string };

/** The JSON body of a problem response. */
export type ProblemBody = {
  type: string;
  title: string;
  status: number;
  detail: string;
  instance?: string;
  errors?: FieldError[];
};

/** An error that becomes exactly one problem response (status, kind, detail, field errors). */
export class ProblemError extends Error {
  readonly status: number;
  readonly kind: ProblemKind;
  readonly errors: FieldError[] | undefined;
  /** Extra response headers (e.g. `Retry-After`). */
  readonly headers: Record<string, string>;

  /**
   * @param status HTTP status (4xx/5xx)
   * @param kind   contract error kind → `type`
   * @param detail human-readable explanation (never secrets, tokens or SQL)
   * @param errors field errors, for `validation`/`bad-request`
   * @param headers extra response headers
   */
  constructor(status: number, kind: ProblemKind, detail: string, errors?: FieldError[], headers: Record<string, string> = {}) {
    super(detail);
    this.name = 'ProblemError';
    this.status = status;
    this.kind = kind;
    this.errors = errors;
    this.headers = headers;
  }

  /** The RFC 9457 body; `instance` is the request path when given. */
  toBody(instance?: string): ProblemBody {
    const body: ProblemBody = { type: PROBLEM_TYPE_BASE + this.kind, title: TITLES[this.kind], status: this.status, detail: this.message };
    if (instance) body.instance = instance;
    if (this.errors) body.errors = this.errors;
    return body;
  }
}

/** Shorthands for the problems the API raises. Each returns (does not throw) a {@link ProblemError}. */
export const problem = {
  /** 400: malformed input (JSON, types, required fields, ranges checked by the schema). */
  badRequest: (detail: string, errors?: FieldError[]) => new ProblemError(400, 'bad-request', detail, errors),
  /** 422: well-formed but semantically invalid input (check digits, share sums, unknown references). */
  validation: (errors: FieldError[], detail = 'The request is well-formed but some values are invalid.') =>
    new ProblemError(422, 'validation', detail, errors),
  /** 401: missing or invalid identity assertion. */
  unauthenticated: (detail = 'A valid identity assertion is required.') => new ProblemError(401, 'unauthenticated', detail),
  /** 403: the caller has no (sufficient) membership. */
  forbidden: (detail = 'You have no access to this publisher or action.') => new ProblemError(403, 'forbidden', detail),
  /** 404: no such resource, or not visible under the caller's RLS context. */
  notFound: (detail = 'The resource does not exist.') => new ProblemError(404, 'not-found', detail),
  /** 409: a uniqueness or state conflict. */
  conflict: (detail: string, errors?: FieldError[]) => new ProblemError(409, 'conflict', detail, errors),
  /** 400: the route needs a publisher context and the assertion carries none. */
  publisherContext: (detail = 'This route needs a publisher context (X-Publisher-Id).') => new ProblemError(400, 'publisher-context', detail),
  /** 503: a dependency (JWKS, database) is unavailable. */
  unavailable: (detail: string) => new ProblemError(503, 'upstream-unavailable', detail),
  /** 504-like timeout of a dependency; reported as 503 so clients retry. */
  timeout: (detail: string) => new ProblemError(503, 'upstream-timeout', detail),
  /** 500: anything unexpected (details only in the log). */
  internal: () => new ProblemError(500, 'internal', 'An unexpected error occurred.'),
  /** 401 for every failed sign-in whose cause must not be told apart (unknown user, wrong password, disabled). */
  signInFailed: () => new ProblemError(401, 'unauthenticated', 'The email or password is incorrect.'),
  /** 429 `account-locked` with Retry-After (seconds, rounded up). */
  accountLocked: (retryAfterMs: number) =>
    new ProblemError(429, 'account-locked', 'Too many failed sign-ins: the account is locked for a while.', undefined, {
      'retry-after': String(Math.max(1, Math.ceil(retryAfterMs / 1000))),
    }),
  /** 503 `directory-unavailable`: the publisher's directory did not answer in time. */
  directoryUnavailable: (detail = 'The directory server is unavailable; try again later.') =>
    new ProblemError(503, 'directory-unavailable', detail, undefined, { 'retry-after': '5' }),
  /**
   * `invalid-grant`: an unknown, used, expired or revoked one-time token — 401 for refresh tokens
   * and MFA challenges (credentials), 400 for reset and verification links.
   */
  invalidGrant: (status: 400 | 401, detail = 'The token is invalid, expired or already used.') => new ProblemError(status, 'invalid-grant', detail),
  /** 403 `publisher-read-only`: the account's trial ended without a plan (or it is cancelled); reads still work. */
  readOnly: () =>
    new ProblemError(403, 'publisher-read-only', "This publisher is read-only: its account's trial has ended (or the account is cancelled). Reads still work; an admin chooses a plan with PUT /api/v1/publishers/{id}/account/plan."),
};

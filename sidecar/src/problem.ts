/**
 * RFC 9457 problem details (`application/problem+json`) for every error the sidecar answers.
 * Contract: docs/CONTRACTS.md, "Errors" — `type` is `https://errors.music-publishing.example/<kind>`.
 */
import type { FastifyReply } from 'fastify';

/** The stable error kinds of docs/CONTRACTS.md. */
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
  | 'publisher-read-only'
  | 'api-call-limit-exceeded'
  | 'too-many-requests';

/** Base of every problem `type` URI. */
export const PROBLEM_TYPE_BASE = 'https://errors.music-publishing.example/';

const TITLES: Record<ProblemKind, string> = {
  'bad-request': 'Bad request',
  validation: 'Validation failed',
  'non-canonical-path': 'Non-canonical request target',
  unauthenticated: 'Authentication required',
  forbidden: 'Forbidden',
  'not-found': 'Not found',
  conflict: 'Conflict',
  'publisher-context': 'Invalid publisher context',
  'pdp-unavailable': 'Authorization service unavailable',
  'upstream-unavailable': 'Upstream unavailable',
  'upstream-timeout': 'Upstream timeout',
  'payload-too-large': 'Payload too large',
  internal: 'Internal error',
  'publisher-read-only': 'Publisher is read-only',
  'api-call-limit-exceeded': 'Monthly API-call limit exceeded',
  'too-many-requests': 'Too many requests',
};

/** A problem body (RFC 9457 §3) plus the project's `errors` list and the request id extension. */
export type ProblemBody = {
  type: string;
  title: string;
  status: number;
  detail: string;
  instance?: string;
  request_id?: string;
  errors?: { field: string; reason: string }[];
};

/**
 * An error that a pipeline stage throws to stop the request with a problem response.
 * `headers` are added to the response (e.g. `WWW-Authenticate` for 401, RFC 6750 §3).
 */
export class ProblemError extends Error {
  readonly status: number;
  readonly kind: ProblemKind;
  readonly headers: Record<string, string>;
  readonly errors?: { field: string; reason: string }[];

  /**
   * @param status HTTP status code (4xx/5xx).
   * @param kind the contract's error kind (last segment of `type`).
   * @param detail human-readable explanation; must not contain tokens or assertions.
   * @param opts.headers extra response headers; opts.errors field errors (kind `validation`).
   */
  constructor(
    status: number,
    kind: ProblemKind,
    detail: string,
    opts: { headers?: Record<string, string>; errors?: { field: string; reason: string }[]; cause?: unknown } = {},
  ) {
    super(detail, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'ProblemError';
    this.status = status;
    this.kind = kind;
    this.headers = opts.headers ?? {};
    if (opts.errors) this.errors = opts.errors;
  }
}

/** 503 `pdp-unavailable` with `Retry-After: 1`: a decision cannot be made now (fail closed). */
export function pdpUnavailable(detail: string, cause?: unknown): ProblemError {
  return new ProblemError(503, 'pdp-unavailable', detail, { headers: { 'retry-after': '1' }, cause });
}

/** Build the RFC 9457 body for `kind`/`status`/`detail` (title from the kind). */
export function problemBody(
  status: number,
  kind: ProblemKind,
  detail: string,
  extra: { requestId?: string; errors?: { field: string; reason: string }[] } = {},
): ProblemBody {
  const body: ProblemBody = { type: PROBLEM_TYPE_BASE + kind, title: TITLES[kind], status, detail };
  if (extra.requestId) body.request_id = extra.requestId;
  if (extra.errors) body.errors = extra.errors;
  return body;
}

/**
 * Send a problem response on `reply` (content type `application/problem+json`).
 * Headers already set on the reply (e.g. `Deprecation`) are kept.
 */
export function sendProblem(reply: FastifyReply, err: ProblemError, requestId?: string): FastifyReply {
  for (const [k, v] of Object.entries(err.headers)) reply.header(k, v);
  return reply
    .code(err.status)
    .type('application/problem+json')
    .send(problemBody(err.status, err.kind, err.message, { requestId, errors: err.errors }));
}

/** Map an HTTP status of a framework error (Fastify 400/404/413/415 …) to a contract kind. */
export function kindForStatus(status: number): ProblemKind {
  if (status === 404) return 'not-found';
  if (status === 413) return 'payload-too-large';
  if (status === 401) return 'unauthenticated';
  if (status === 403) return 'forbidden';
  if (status === 409) return 'conflict';
  if (status >= 400 && status < 500) return 'bad-request';
  return 'internal';
}

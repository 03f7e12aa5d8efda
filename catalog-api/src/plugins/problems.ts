/**
 * Error rendering: every error leaves the API as `application/problem+json` (RFC 9457) with the
 * contract's stable `type` URIs. Maps Fastify's own errors (body parsing, size limit, schema
 * validation) and PostgreSQL errors (SQLSTATE) to problems; anything else is a logged 500 without
 * internals in the body.
 */
import fp from 'fastify-plugin';
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { hasZodFastifySchemaValidationErrors, isResponseSerializationError } from 'fastify-type-provider-zod';
import { ProblemError, problem, type FieldError } from '../errors.ts';

/** The problem content type. */
export const PROBLEM_CONTENT_TYPE = 'application/problem+json; charset=utf-8';

/** JSON-pointer `/songwriters/0/role` → `songwriters[0].role`; prefixed by the request part. */
function fieldOf(instancePath: string, context: string | undefined): string {
  const parts = instancePath.split('/').filter(Boolean);
  let out = '';
  for (const p of parts) out += /^\d+$/.test(p) ? `[${p}]` : out ? `.${p}` : p;
  if (context && context !== 'body') return out ? `${context}.${out}` : context;
  return out || context || '';
}

/** Socket errors of a dependency that cannot be reached (Node's `code`). */
const UNREACHABLE_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN']);
/** What `pg` / `pg-pool` say when a connection is lost, cannot be made in time, or is unusable. */
const PG_CONNECTION_LOST = /^(Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error|Client was closed and is not queryable)/;

/**
 * The database (or another dependency) is unreachable: 503 `upstream-unavailable` with
 * `Retry-After: 1`; a statement the client gave up waiting for (`pg` query_timeout, db/orm.ts) is
 * 503 `upstream-timeout`. SQLSTATE class 08 (connection exception), 57P01–57P03 (shutdown, cannot
 * connect now) and 53300 (too many connections) count as unreachable.
 * @returns the problem, or null when `e` is no such error
 */
function unreachable(e: { code?: string; message?: string }): ProblemError | null {
  const retry = { 'retry-after': '1' };
  if (e.message === 'Query read timeout') return new ProblemError(503, 'upstream-timeout', 'The database did not answer in time.', undefined, retry);
  const code = typeof e.code === 'string' ? e.code : '';
  if (UNREACHABLE_CODES.has(code) || code.startsWith('08') || ['57P01', '57P02', '57P03', '53300'].includes(code) || PG_CONNECTION_LOST.test(e.message ?? '')) {
    return new ProblemError(503, 'upstream-unavailable', 'A service the API depends on is unavailable; try again later.', undefined, retry);
  }
  return null;
}

/**
 * Translate any thrown value into the problem to send.
 * @returns a ProblemError (unchanged when it already is one)
 */
export function toProblem(err: unknown): { problem: ProblemError; unexpected: boolean } {
  if (err instanceof ProblemError) return { problem: err, unexpected: false };
  if (hasZodFastifySchemaValidationErrors(err)) {
    const ctx = (err as { validationContext?: string }).validationContext;
    const errors: FieldError[] = err.validation.map((v) => {
      const params = v.params as { issue?: { path?: PropertyKey[]; code?: string; message?: string } } | undefined;
      const path = params?.issue?.path;
      const field = path && path.length ? fieldOf('/' + path.map(String).join('/'), ctx) : fieldOf(v.instancePath, ctx);
      return { field, reason: v.message ?? 'invalid' };
    });
    return { problem: problem.badRequest('The request does not match the schema.', errors), unexpected: false };
  }
  if (isResponseSerializationError(err)) return { problem: problem.internal(), unexpected: true };
  const e = err as Partial<FastifyError> & { code?: string; constraint?: string; detail?: string };
  // migration 0006's trigger: demoting or removing the last admin of a publisher
  if (e.code === '23514' && e.constraint === 'user_publishers_keep_admin') {
    return { problem: new ProblemError(409, 'last-admin', 'A publisher must keep at least one admin: promote another member first.'), unexpected: false };
  }
  const down = unreachable(e);
  if (down) return { problem: down, unexpected: false };
  switch (e.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return { problem: new ProblemError(413, 'payload-too-large', 'The request body exceeds 1 MiB.'), unexpected: false };
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return { problem: new ProblemError(415, 'bad-request', 'Send the body as application/json.'), unexpected: false };
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return { problem: problem.badRequest('The request body is not valid JSON.'), unexpected: false };
    // PostgreSQL SQLSTATEs (Appendix A of the PostgreSQL manual)
    case '23505':
      return { problem: problem.conflict('A row with the same unique value already exists.', e.constraint ? [{ field: constraintField(e.constraint), reason: 'already exists' }] : undefined), unexpected: false };
    case '23503':
      return { problem: problem.validation([{ field: e.constraint ? constraintField(e.constraint) : '', reason: 'references a row that does not exist' }]), unexpected: false };
    case '23514':
    case '23502':
    case '22001':
    case '22003':
    case '22007':
    case '22008':
      return { problem: problem.validation([{ field: e.constraint ? constraintField(e.constraint) : '', reason: 'violates a database rule' }]), unexpected: false };
    case '22P02':
      return { problem: problem.badRequest('A value has the wrong format.'), unexpected: false };
    case '42501':
      return { problem: problem.forbidden('The database refused the change for your access scope.'), unexpected: false };
    case '57014':
      return { problem: problem.timeout('The database did not answer in time.'), unexpected: true };
    case '40001':
    case '40P01':
      return { problem: problem.conflict('A concurrent change interfered; retry the request.'), unexpected: false };
  }
  if (typeof e.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 500) {
    return { problem: new ProblemError(e.statusCode, 'bad-request', e.message ?? 'Bad request.'), unexpected: false };
  }
  return { problem: problem.internal(), unexpected: true };
}

/** A constraint name like `works_publisher_id_iswc_key` → the likeliest API field (`iswc`). */
function constraintField(constraint: string): string {
  for (const f of ['iswc', 'isrc', 'ipi_name_number', 'slug', 'email', 'work_id', 'songwriter_id', 'owner_user_id', 'user_id']) {
    if (constraint.includes(f)) return f;
  }
  return constraint;
}

/** Send `p` as problem+json for `request`. */
export function sendProblem(reply: FastifyReply, request: FastifyRequest, p: ProblemError): FastifyReply {
  for (const [k, v] of Object.entries(p.headers)) reply.header(k, v);
  if (p.status === 401) reply.header('www-authenticate', 'Assertion realm="catalog-api"');
  return reply.status(p.status).type(PROBLEM_CONTENT_TYPE).send(p.toBody(request.url.split('?', 1)[0]));
}

/** Fastify plugin installing the error and not-found handlers. */
export const problemsPlugin = fp(
  async (app: FastifyInstance) => {
    app.setErrorHandler((err, request, reply) => {
      const { problem: p, unexpected } = toProblem(err);
      if (unexpected) request.log.error({ err }, 'request failed');
      else if (p.status >= 500) request.log.warn({ err }, 'request failed');
      else request.log.info({ status: p.status, kind: p.kind }, 'request rejected');
      return sendProblem(reply, request, p);
    });
    app.setNotFoundHandler((request, reply) => sendProblem(reply, request, problem.notFound('No such route.')));
  },
  { name: 'catalog-problems' },
);

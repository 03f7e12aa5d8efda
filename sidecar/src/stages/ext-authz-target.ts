/**
 * Which request an `/ext-authz` call asks about (the method and raw target the pipeline decides on).
 *
 * - Envoy ext_authz HTTP service (`path_prefix: /ext-authz`): the auth request IS the original
 *   request re-targeted — method = the auth request's method, target = the rest after `/ext-authz`.
 * - Header mode, `/ext-authz` itself (nginx `auth_request`, Traefik `forwardAuth`): the original
 *   method AND target come from headers, both REQUIRED — X-Original-Method + X-Original-URI (nginx)
 *   or X-Forwarded-Method + X-Forwarded-Uri (Traefik). The auth request's own method is never used
 *   (nginx's auth subrequest is always a GET, whatever the client sent). Missing, repeated or
 *   malformed → 400 `bad-request`; both families present and different → 400 (one of them came
 *   from the client).
 *
 * The proxy in front MUST set — overwrite, never pass through — both headers on every auth
 * request; a client-supplied value must never reach the sidecar. nginx:
 *   proxy_set_header X-Original-Method $request_method;
 *   proxy_set_header X-Original-URI $request_uri;
 * Traefik's forwardAuth sets X-Forwarded-Method/-Uri itself; keep `trustForwardHeader: false` so
 * it overwrites client values.
 */
import type { IncomingHttpHeaders } from 'node:http';
import { ProblemError } from '../problem.ts';

/** The path prefix of the ext_authz endpoints. */
export const EXT_AUTHZ = '/ext-authz';

/** A method token (RFC 9110 §9.1), restricted to upper-case letters as the route rules use. */
const METHOD_TOKEN = /^[A-Z]{1,20}$/;

/** The original request an ext_authz call asks about. */
export type OriginalRequest = { method: string; target: string };

function oneHeader(headers: IncomingHttpHeaders, name: string): string | undefined {
  const v = headers[name];
  if (Array.isArray(v)) throw new ProblemError(400, 'bad-request', `${name} must be sent once.`);
  return v;
}

function pick(headers: IncomingHttpHeaders, nginx: string, traefik: string, what: string): string | undefined {
  const a = oneHeader(headers, nginx);
  const b = oneHeader(headers, traefik);
  if (a !== undefined && b !== undefined && a !== b) throw new ProblemError(400, 'bad-request', `Conflicting original ${what} headers.`);
  return a ?? b;
}

/**
 * Resolve the original request of an ext_authz call.
 * @param method the auth request's method (used only in the Envoy path-prefix mode).
 * @param rawUrl the auth request's raw target (`/ext-authz…`).
 * @param headers the auth request's headers.
 * @returns the method and raw target to run the pipeline on (the target is checked there).
 * @throws ProblemError 400 `bad-request` in header mode when a header is missing, repeated,
 *   conflicting, or the method is not a token.
 */
export function extAuthzTarget(method: string, rawUrl: string, headers: IncomingHttpHeaders): OriginalRequest {
  if (rawUrl.startsWith(`${EXT_AUTHZ}/`)) return { method, target: rawUrl.slice(EXT_AUTHZ.length) };
  const target = pick(headers, 'x-original-uri', 'x-forwarded-uri', 'URI');
  if (target === undefined) throw new ProblemError(400, 'bad-request', 'Missing X-Original-URI / X-Forwarded-Uri (or use /ext-authz/<path>).');
  const original = pick(headers, 'x-original-method', 'x-forwarded-method', 'method');
  if (original === undefined) throw new ProblemError(400, 'bad-request', 'Missing X-Original-Method / X-Forwarded-Method.');
  if (!METHOD_TOKEN.test(original)) throw new ProblemError(400, 'bad-request', 'Invalid original method.');
  return { method: original, target };
}

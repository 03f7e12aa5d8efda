/**
 * Stage 6 — mutate headers (Oathkeeper-style "mutator"). Builds the header set the upstream
 * receives from the client's headers:
 * 1. drop hop-by-hop fields (RFC 9110 §7.6.1: Connection, Keep-Alive, Proxy-Connection, TE,
 *    Transfer-Encoding, Upgrade, Trailer, Proxy-Authorization, Proxy-Authenticate) and every field
 *    named in `Connection` (so a client cannot smuggle e.g. `Connection: x-user-id` past a proxy
 *    that would strip the listed field only after we forwarded it);
 * 2. drop identity-bearing fields (docs/CONTRACTS.md): X-Identity-Assertion, X-User-Id,
 *    X-User-Email, X-Forwarded-User, X-Auth-*, X-Remote-User, Authorization — plus the publisher
 *    and request-id fields, which are re-added normalised, `Host` (the upstream's own is used;
 *    the client's goes to X-Forwarded-Host), `Expect` (the sidecar answers 100-continue itself),
 *    and client-supplied X-Forwarded-* / Forwarded (the sidecar is the edge and sets them);
 *    and the fields some frameworks read as another method or path than the one authorized
 *    ({@link MEANING_CHANGING_HEADERS}: X-HTTP-Method-Override and kin, X-Original-URL,
 *    X-Rewrite-URL, X-Original-URI/-Method), so the upstream acts on exactly the request the route rule decided;
 * 3. add `X-Identity-Assertion`, `X-Request-Id`, `X-Publisher-Id`, `X-Forwarded-For/-Proto/-Host`.
 */
import { randomUUID } from 'node:crypto';
import { MEANING_CHANGING_HEADERS } from '../../../policies/src/routes.ts';

/** Hop-by-hop fields (RFC 9110 §7.6.1, plus the legacy Keep-Alive/Proxy-Connection). */
export const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'te',
  'transfer-encoding',
  'upgrade',
  'trailer',
  'proxy-authorization',
  'proxy-authenticate',
]);

/** Identity-bearing request fields that never reach the upstream from the client. */
export const IDENTITY_HEADERS = new Set([
  'x-identity-assertion',
  'x-user-id',
  'x-user-email',
  'x-forwarded-user',
  'x-remote-user',
  'authorization',
]);

export { MEANING_CHANGING_HEADERS };

const ALSO_REPLACED = new Set(['x-publisher-id', 'x-tenant-id', 'x-request-id', 'host', 'expect', 'forwarded', 'x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', 'x-forwarded-port', 'x-real-ip']);

/** Headers as Node gives them (lower-case names). */
export type HeaderMap = Record<string, string | string[] | undefined>;

/**
 * Names listed in the `Connection` field(s) (RFC 9110 §7.6.1), lower-cased.
 */
export function connectionTokens(headers: HeaderMap): Set<string> {
  const v = headers.connection;
  const list = Array.isArray(v) ? v.join(',') : (v ?? '');
  return new Set(list.split(',').map((s) => s.trim().toLowerCase()).filter(Boolean));
}

/**
 * Remove hop-by-hop fields and the fields `Connection` names. Returns a new object.
 * Used for requests (here) and upstream responses (forward.ts).
 */
export function stripHopByHop(headers: HeaderMap): HeaderMap {
  const named = connectionTokens(headers);
  const out: HeaderMap = {};
  for (const [k, v] of Object.entries(headers)) {
    const name = k.toLowerCase();
    if (v === undefined || HOP_BY_HOP.has(name) || named.has(name)) continue;
    out[name] = v;
  }
  return out;
}

const SAFE_REQUEST_ID = /^[A-Za-z0-9._:=+/@-]{1,200}$/;

/**
 * The request id: the client's `X-Request-Id` when it is one value of ≤ 200 safe characters
 * (`A-Z a-z 0-9 . _ : = + / @ -`), else a new UUID.
 */
export function requestIdFrom(headers: HeaderMap): string {
  const v = headers['x-request-id'];
  return typeof v === 'string' && SAFE_REQUEST_ID.test(v) ? v : randomUUID();
}

/**
 * Build the upstream request headers.
 * @param inbound the client's headers.
 * @param add.assertion the signed identity assertion (omitted for public routes);
 *   add.requestId; add.publisherId normalised context (omitted when none);
 *   add.clientIp the TCP peer; add.proto `http`/`https`; add.host the client's Host;
 *   add.forward the route rule's `forward_headers` (meaning-changing fields it lets through).
 * @returns a fresh header map safe to send upstream.
 */
export function mutateHeaders(
  inbound: HeaderMap,
  add: { assertion?: string; requestId: string; publisherId?: string; clientIp?: string; proto: string; host?: string; forward?: readonly string[] },
): HeaderMap {
  const out: HeaderMap = {};
  for (const [name, v] of Object.entries(stripHopByHop(inbound))) {
    // every client X-Forwarded-* (not only -For/-Proto/-Host: -Prefix and -Path move an app's base path, -Uri/-Method are forwardAuth's)
    if (IDENTITY_HEADERS.has(name) || name.startsWith('x-auth-') || name === 'x-auth' || ALSO_REPLACED.has(name) || name.startsWith('x-forwarded-')) continue;
    if (MEANING_CHANGING_HEADERS.has(name) && !add.forward?.includes(name)) continue;
    out[name] = v;
  }
  if (add.assertion) out['x-identity-assertion'] = add.assertion;
  out['x-request-id'] = add.requestId;
  if (add.publisherId) out['x-publisher-id'] = add.publisherId;
  if (add.clientIp) out['x-forwarded-for'] = add.clientIp;
  out['x-forwarded-proto'] = add.proto;
  if (add.host) out['x-forwarded-host'] = add.host;
  return out;
}

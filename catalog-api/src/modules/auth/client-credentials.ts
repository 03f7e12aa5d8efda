/**
 * The OAuth 2.0 client credentials grant (RFC 6749 §4.4) for API clients: `POST /api/v1/auth/token`
 * with `grant_type=client_credentials`, the client authenticated by HTTP Basic (`client_secret_basic`,
 * §2.3.1: id and secret form-url-encoded, then base64) or by `client_id` + `client_secret` in the body
 * (`client_secret_post`). The answer is an RFC 9068 access token whose `sub` and `client_id` are the
 * client's id, bound to a session like a person's (so rotating or revoking the client ends it).
 *
 * An unknown client, a wrong secret, a revoked client, a client without its membership, and a
 * suspended or archived publisher all get the same 401; secrets are compared as SHA-256 digests in
 * constant time.
 */
import { timingSafeEqual } from 'node:crypto';
import type { EntityManager } from '@mikro-orm/postgresql';
import { ProblemError, problem } from '../../errors.ts';
import { ApiClient } from '../api-clients/api-client.entity.ts';
import { isUuid } from '../common/http.ts';
import { Publisher } from '../publishers/publisher.entity.ts';
import { Membership } from '../users/membership.entity.ts';
import { User } from '../users/user.entity.ts';
import type { AuthDeps } from './deps.ts';
import { digest } from './secrets.ts';
import { clientMeta, openClientSession, type ClientInfo, type ClientTokenResponse } from './sessions.service.ts';
import { recordAuditEvent } from '../audit/audit.service.ts';

/** The client's credentials from an `Authorization: Basic` header (RFC 6749 §2.3.1), or null. */
export function basicCredentials(header: string | undefined): { id: string; secret: string } | null {
  const m = /^Basic ([A-Za-z0-9+/=]+)$/i.exec(header?.trim() ?? '');
  if (!m) return null;
  const text = Buffer.from(m[1]!, 'base64').toString('utf8');
  const colon = text.indexOf(':');
  if (colon < 0) return null;
  try {
    return { id: decodeURIComponent(text.slice(0, colon).replace(/\+/g, ' ')), secret: decodeURIComponent(text.slice(colon + 1).replace(/\+/g, ' ')) };
  } catch {
    return null;
  }
}

/**
 * Issue an access token to the API client `clientId` presenting `secret`.
 * @throws ProblemError 401 `unauthenticated` (one answer for every failure, see the module comment)
 */
export async function clientCredentialsGrant(deps: AuthDeps, clientId: string, secret: string, client: ClientInfo): Promise<ClientTokenResponse> {
  const rejected = () => problem.unauthenticated('The client credentials are invalid.');
  const id = isUuid(clientId) ? clientId.toLowerCase() : null;
  try {
    if (!id) throw rejected();
    return await issue(deps, id, secret, client, rejected);
  } catch (err) {
    // sign-in events: the platform chain; the client id is only claimed, so nobody is the actor
    if (err instanceof ProblemError && err.status === 401) {
      await deps.orm.em.fork().transactional((em: EntityManager) =>
        recordAuditEvent(em, { id: null, kind: 'anonymous' }, clientMeta(client), { action: 'auth.client_auth_failed', objectType: 'api_client', objectId: id, publisherId: null, after: { reason: 'invalid-client' } }),
      );
    }
    throw err;
  }
}

/** The grant's transaction: check the client, open its session, append `auth.client_token_issued`. */
async function issue(deps: AuthDeps, id: string, secret: string, client: ClientInfo, rejected: () => ProblemError): Promise<ClientTokenResponse> {
  return deps.orm.em.fork().transactional(async (em: EntityManager) => {
    const c = await em.findOne(ApiClient, { id });
    const presented = Buffer.from(digest(secret));
    const stored = Buffer.from(c?.secretHash ?? digest(`no client ${id}`));
    const secretOk = presented.length === stored.length && timingSafeEqual(presented, stored);
    if (!c || !secretOk || c.revokedAt) throw rejected();
    const subject = await em.findOne(User, { id, kind: 'api_client', status: 'active' });
    const membership = await em.findOne(Membership, { publisherId: c.publisherId, userId: id, role: 'api_user' });
    const publisher = await em.findOne(Publisher, { id: c.publisherId });
    if (!subject || !membership || !publisher || !['active', 'trial'].includes(publisher.status)) throw rejected();
    c.lastUsedAt = new Date();
    const tokens = await openClientSession(deps, em, id, client);
    await recordAuditEvent(em, { id, kind: 'api_client' }, clientMeta(client), { action: 'auth.client_token_issued', objectType: 'api_client', objectId: id, publisherId: null });
    return tokens;
  });
}

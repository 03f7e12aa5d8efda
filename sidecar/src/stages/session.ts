/**
 * Stage 3b — session (after authenticate): a token from an issuer whose sessions the platform
 * revokes (`sessions: true` in its configuration — our own issuer) must name its session (`sid`),
 * and that session must not be revoked. Answered from the in-process revoked-session view
 * (identity/session-revocations.ts): no network round trip per request.
 */
import type { SessionRevocations } from '../identity/session-revocations.ts';
import { pdpUnavailable } from '../problem.ts';
import { unauthenticated, type Identity } from './authenticate.ts';

/**
 * Check the identity's session.
 * @throws ProblemError 401 (`invalid_token`) when the session is revoked or the token names none;
 *   503 `pdp-unavailable` (Retry-After: 1) when the revocation view is staler than its bound
 */
export function sessionStage(revocations: SessionRevocations, identity: Identity): void {
  if (!identity.sessionBound) return;
  const sid = identity.sid;
  if (!sid) throw unauthenticated('The access token names no session.', 'invalid_token');
  const state = revocations.check(sid);
  if (state === 'revoked') throw unauthenticated('The session has ended; sign in again.', 'invalid_token');
  if (state === 'unknown') {
    throw pdpUnavailable('Session revocations cannot be checked right now; try again shortly.');
  }
}

/**
 * The session-revocation channel between the issuer (catalog API, sign-in service) and every
 * enforcement point (sidecar) — docs/CONTRACTS.md, "Session revocation". Kept here, beside the
 * decision-cache epochs, because both sides use it and neither may import the other.
 *
 * - Redis sorted set {@link REVOKED_SESSIONS_KEY}: member = session id (`sid` claim), score = the
 *   time (ms since the epoch) after which no access token of that session can still be valid
 *   (revocation + access-token lifetime + skew). Entries past their score are pruned.
 * - Redis pub/sub channel {@link SESSION_REVOKED_CHANNEL}: one message per revocation, the JSON of
 *   {@link RevocationMessage}, so enforcement points learn of it without polling. A subscriber that
 *   was disconnected re-reads the whole set, which is the source of truth.
 */

/** Sorted set of revoked session ids, scored by when they stop mattering (ms since the epoch). */
export const REVOKED_SESSIONS_KEY = 'auth:revoked-sessions';

/** Pub/sub channel announcing each revocation. */
export const SESSION_REVOKED_CHANNEL = 'auth:session-revoked';

/** One revocation: the session id and the time (ms since the epoch) until which it must be refused. */
export type RevocationMessage = { sid: string; until: number };

/** Encode a revocation for the channel. */
export function encodeRevocation(m: RevocationMessage): string {
  return JSON.stringify({ sid: m.sid, until: m.until });
}

/**
 * Decode a channel message.
 * @returns undefined for anything that is not a well-formed revocation (ignored by subscribers)
 */
export function decodeRevocation(text: string): RevocationMessage | undefined {
  try {
    const v = JSON.parse(text) as { sid?: unknown; until?: unknown };
    if (typeof v.sid === 'string' && v.sid.length > 0 && v.sid.length <= 200 && typeof v.until === 'number' && Number.isFinite(v.until)) {
      return { sid: v.sid, until: v.until };
    }
  } catch {
    /* not JSON */
  }
  return undefined;
}

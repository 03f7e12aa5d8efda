/**
 * Stage 5 — authorize (Oathkeeper-style "authorizer"). For a relation rule: Check
 * `user:<sub>` `relation` `<object>` through the decision cache → OpenFGA. Public and
 * authenticated-only rules need no check.
 */
import { ProblemError, pdpUnavailable } from '../problem.ts';
import type { RouteMatch } from './route.ts';
import { objectFor } from './route.ts';
import type { Identity } from './authenticate.ts';
import type { DecisionCache, Decision } from '../pdp/decision-cache.ts';
import { PdpUnavailableError } from '../pdp/openfga.ts';
import { READ_ONLY_BLOCKED_RELATIONS } from '../../../policies/src/permissions.ts';

/**
 * Authorize the request.
 * @param match the route match; identity the caller (undefined only for public rules);
 *   publisherId the publisher context (needed when the object template uses `{publisher}`).
 * @returns the decision (`undefined` when the rule needs no check).
 * @throws ProblemError 403 `forbidden` on deny — `publisher-read-only` when the denied relation is
 *   one a read-only publisher refuses (policies/src/permissions.ts READ_ONLY_BLOCKED_RELATIONS), the
 *   publisher (of a `publisher:` object, else the context) is read-only and the caller is one of
 *   its members (`publishers_read`), so nobody else learns its account state (two more cached
 *   Checks, on deny paths only); 400 `publisher-context` when the object needs a
 *   missing publisher context; 503 `pdp-unavailable` (with `Retry-After: 1`) when OpenFGA cannot
 *   answer — fail closed, never cached.
 */
export async function authorizeStage(
  cache: DecisionCache,
  match: RouteMatch,
  identity: Identity | undefined,
  publisherId: string | undefined,
): Promise<Decision | undefined> {
  const { rule } = match;
  if (rule.public || rule.authenticated) return undefined;
  if (!rule.relation || !identity) throw new ProblemError(500, 'internal', 'Route rule without relation or identity.');
  const object = objectFor(match, publisherId)!;
  const user = `user:${identity.subject}`;
  const decision = await decide(cache, { user, relation: rule.relation, object });
  if (decision.allowed) return decision;
  const publisher = object.startsWith('publisher:') ? object : publisherId ? `publisher:${publisherId}` : undefined;
  if (
    publisher &&
    READ_ONLY_BLOCKED_RELATIONS.has(rule.relation) &&
    (await decide(cache, { user, relation: 'read_only', object: publisher })).allowed &&
    (await decide(cache, { user, relation: 'publishers_read', object: publisher })).allowed
  ) {
    throw new ProblemError(403, 'publisher-read-only', "This publisher is read-only: its account's trial has ended (or the account is cancelled). Reads still work; an admin chooses a plan with PUT /api/v1/publishers/{id}/account/plan.");
  }
  throw new ProblemError(403, 'forbidden', `Not permitted: ${rule.relation} on ${object.split(':')[0]}.`);
}

/** One decision; OpenFGA unreachable → 503 (fail closed, never cached). */
async function decide(cache: DecisionCache, check: { user: string; relation: string; object: string }): Promise<Decision> {
  try {
    return await cache.decide(check);
  } catch (err) {
    if (err instanceof PdpUnavailableError) {
      throw pdpUnavailable('The authorization service is unavailable; try again later.', err);
    }
    throw err;
  }
}

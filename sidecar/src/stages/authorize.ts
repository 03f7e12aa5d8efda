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

/**
 * Authorize the request.
 * @param match the route match; identity the caller (undefined only for public rules);
 *   publisherId the publisher context (needed when the object template uses `{publisher}`).
 * @returns the decision (`undefined` when the rule needs no check).
 * @throws ProblemError 403 `forbidden` on deny — `publisher-read-only` when the denied relation
 *   changes something and the publisher (of a `publisher:` object, else the context) is read-only
 *   (its trial ended without a plan; one more cached Check, on deny paths only); 400 `publisher-context` when the object needs a
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
  if (publisher && isWrite(rule.relation) && (await decide(cache, { user, relation: 'read_only', object: publisher })).allowed) {
    throw new ProblemError(403, 'publisher-read-only', "This publisher is read-only: its account's trial has ended (or the account is cancelled). Reads still work; an admin chooses a plan with PUT /api/v1/publishers/{id}/account/plan.");
  }
  throw new ProblemError(403, 'forbidden', `Not permitted: ${rule.relation} on ${object.split(':')[0]}.`);
}

/** Reads are never refused for being read-only (policies/model.fga: only `frozen` permissions are). */
function isWrite(relation: string): boolean {
  return relation !== 'can_read' && !relation.endsWith('_read');
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

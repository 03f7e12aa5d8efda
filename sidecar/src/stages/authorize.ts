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
 * @throws ProblemError 403 `forbidden` on deny; 400 `publisher-context` when the object needs a
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
  let decision: Decision;
  try {
    decision = await cache.decide({ user: `user:${identity.subject}`, relation: rule.relation, object });
  } catch (err) {
    if (err instanceof PdpUnavailableError) {
      throw pdpUnavailable('The authorization service is unavailable; try again later.', err);
    }
    throw err;
  }
  if (!decision.allowed) throw new ProblemError(403, 'forbidden', `Not permitted: ${rule.relation} on ${object.split(':')[0]}.`);
  return decision;
}

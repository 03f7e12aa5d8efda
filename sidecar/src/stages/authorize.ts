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
import { PdpUnavailableError, type CheckQuery } from '../pdp/openfga.ts';
import { READ_ONLY_BLOCKED_RELATIONS } from '../../../policies/src/permissions.ts';
import { conditionContext } from '../pdp/condition-context.ts';

/**
 * Told of the rule's Check once it is decided (allowed or denied, before a deny is thrown; not of
 * the extra read_only checks): the decision log (decision-log.ts). `startedAt` is performance.now()
 * before the decision, `latencyMs` its duration in ms. Not called when OpenFGA cannot answer.
 */
export type DecisionObserver = (d: { user: string; relation: string; object: string; context?: Record<string, unknown>; decision: Decision; startedAt: number; latencyMs: number }) => void;

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
 * @param observe told of the rule's decision ({@link DecisionObserver}).
 * @param request.clientIp the client's address (PipelineInput.clientIp); request.timeBucketMs
 *   CONDITION_TIME_BUCKET_MS (default 30,000): every Check carries the condition context
 *   (`current_time`, `client_ip`; pdp/condition-context.ts, which states the caching bound).
 */
export async function authorizeStage(
  cache: DecisionCache,
  match: RouteMatch,
  identity: Identity | undefined,
  publisherId: string | undefined,
  observe?: DecisionObserver,
  request: { clientIp?: string; timeBucketMs?: number } = {},
): Promise<Decision | undefined> {
  const { rule } = match;
  if (rule.public || rule.authenticated) return undefined;
  if (!rule.relation || !identity) throw new ProblemError(500, 'internal', 'Route rule without relation or identity.');
  const object = objectFor(match, publisherId)!;
  const user = `user:${identity.subject}`;
  const { context, key: contextKey } = conditionContext(request.clientIp, Date.now(), request.timeBucketMs ?? 30_000);
  const startedAt = performance.now();
  const decision = await decide(cache, { user, relation: rule.relation, object, context, contextKey });
  observe?.({ user, relation: rule.relation, object, context, decision, startedAt, latencyMs: performance.now() - startedAt });
  if (decision.allowed) return decision;
  const publisher = object.startsWith('publisher:') ? object : publisherId ? `publisher:${publisherId}` : undefined;
  if (
    publisher &&
    READ_ONLY_BLOCKED_RELATIONS.has(rule.relation) &&
    (await decide(cache, { user, relation: 'read_only', object: publisher, context, contextKey })).allowed &&
    (await decide(cache, { user, relation: 'publishers_read', object: publisher, context, contextKey })).allowed
  ) {
    throw new ProblemError(403, 'publisher-read-only', "This publisher is read-only: its account's trial has ended (or the account is cancelled). Reads still work; an admin chooses a plan with PUT /api/v1/publishers/{id}/account/plan.");
  }
  throw new ProblemError(403, 'forbidden', `Not permitted: ${rule.relation} on ${object.split(':')[0]}.`);
}

/** One decision; OpenFGA unreachable → 503 (fail closed, never cached). */
async function decide(cache: DecisionCache, check: CheckQuery): Promise<Decision> {
  try {
    return await cache.decide(check);
  } catch (err) {
    if (err instanceof PdpUnavailableError) {
      throw pdpUnavailable('The authorization service is unavailable; try again later.', err);
    }
    throw err;
  }
}

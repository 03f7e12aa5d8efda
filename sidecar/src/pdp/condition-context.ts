/**
 * The condition context of a request's Checks (policies/model.fga "Conditional grants",
 * policies/src/conditions.ts): `current_time` and `client_ip`, sent with every Check because
 * OpenFGA answers an error, not a deny, when a conditional tuple on the path lacks a parameter.
 *
 * Caching: the decision cache keys a decision by its context too (policies/src/epochs.ts
 * `decisionKey`, the context slot). The time is rounded DOWN to a bucket of
 * `CONDITION_TIME_BUCKET_MS` (default 30,000 ms) and that bucket start is what OpenFGA is asked about,
 * so the key is `<client ip>|<bucket start ms>` (one string concatenation, hashed with the rest of
 * the key) and every decision cached under a key was made for exactly that key's context.
 * Bound: a grant that ends at E (`non_expired_grant`, `current_time < grant_expires_at`) is honoured
 * for requests before E + bucket at most — the request at time t is decided at floor(t) ≤ t, and
 * floor(t) < E only while t < E + bucket. Nothing else can make a cached allow outlive it: the
 * next bucket is a new key.
 */
import { conditionClientIp, type CheckContext } from '../../../policies/src/conditions.ts';

/** A request's condition context and its cache-key form. */
export type ConditionContext = { context: CheckContext; key: string };

/**
 * The condition context of a request at `nowMs` (ms since the epoch) from `clientIp` (the address
 * the pipeline resolved: PipelineInput.clientIp; unknown → `0.0.0.0`, outside every office network).
 * @param bucketMs the time bucket in ms (≥ 1; CONDITION_TIME_BUCKET_MS).
 * @returns `{ context: { current_time: RFC 3339 of the bucket start, client_ip }, key: '<ip>|<bucket start ms>' }`.
 */
export function conditionContext(clientIp: string | undefined, nowMs: number, bucketMs: number): ConditionContext {
  const ip = conditionClientIp(clientIp);
  const start = nowMs - (nowMs % bucketMs);
  return { context: { current_time: new Date(start).toISOString(), client_ip: ip }, key: `${ip}|${start}` };
}

/**
 * Stage 5b — meter (docs/CONTRACTS.md, "Metering"): count an authorized call against its publisher
 * (metering/meter.ts) and apply the publisher's monthly API-call limit.
 *
 * Which calls count: those that passed authorization under a relation rule and carry a publisher —
 * the publisher the rule's object names (`publisher:{publisherId}`: the path's), else the publisher
 * context (X-Publisher-Id). Public and authenticated-only rules, rules on `system:` objects (the
 * platform's own operations) and calls without a publisher are not metered; neither are denied or
 * blocked calls. A call by an API client (its access token's `client_id` is its own subject, as the
 * client credentials grant issues them) is also counted per client.
 *
 * Over the limit: `block` → 429 `api-call-limit-exceeded` with `Retry-After` (seconds until the next
 * UTC month) and `X-API-Call-Limit-Exceeded: <limit>`; `warn` → the call passes with that header.
 * Routes in `neverBlock` (the account routes, so an admin can still choose a larger plan) are
 * counted and warned, never blocked.
 */
import { nextMonthStartMs } from '../../../policies/src/metering.ts';
import type { Meter } from '../metering/meter.ts';
import { ProblemError } from '../problem.ts';
import type { Identity } from './authenticate.ts';
import type { RouteMatch, RouteRule } from './route.ts';

/** The response header of a call over its publisher's monthly limit; its value is the limit. */
export const LIMIT_EXCEEDED_HEADER = 'x-api-call-limit-exceeded';

/** What the stage needs (built once, app.ts). */
export type MeteringDeps = {
  meter: Meter;
  /** route-rule paths (templates as in routes.yaml) that are never blocked by the limit */
  neverBlock: ReadonlySet<string>;
  overLimit: { blocked: { inc(): void }; warned: { inc(): void } };
};

/** Per rule: the path parameter naming the publisher, '' = the publisher context, null = not metered. */
const sources = new WeakMap<RouteRule, string | null>();

function sourceOf(rule: RouteRule): string | null {
  let s = sources.get(rule);
  if (s === undefined) {
    const object = rule.object ?? '';
    const param = /^publisher:\{([^}]+)\}$/.exec(object)?.[1];
    s = object === '' || object.startsWith('system:') ? null : param !== undefined && param !== 'publisher' ? param : '';
    sources.set(rule, s);
  }
  return s;
}

/**
 * Meter one authorized call.
 * @param contextPublisher the publisher context (X-Publisher-Id), if any
 * @param setResponseHeader for the warning header
 * @throws ProblemError 429 `api-call-limit-exceeded` (with `Retry-After`) when the publisher is past a
 *   `block` limit — the call is then not counted
 */
export function meterStage(
  deps: MeteringDeps,
  match: RouteMatch,
  identity: Identity,
  contextPublisher: string | undefined,
  setResponseHeader: (name: string, value: string) => void,
): void {
  const source = sourceOf(match.rule);
  if (source === null) return;
  const publisherId = source === '' ? contextPublisher : match.params[source];
  if (publisherId === undefined) return;
  const clientId = identity.claims.client_id === identity.subject ? identity.subject : undefined;
  const now = Date.now();
  const verdict = deps.meter.record(publisherId, clientId, now, !deps.neverBlock.has(match.rule.path));
  if (verdict === 'ok') return;
  const limit = String(deps.meter.limitOf(publisherId)?.callsPerMonth ?? 0);
  if (verdict === 'warn') {
    deps.overLimit.warned.inc();
    setResponseHeader(LIMIT_EXCEEDED_HEADER, limit);
    return;
  }
  deps.overLimit.blocked.inc();
  const resetsAt = nextMonthStartMs(now);
  throw new ProblemError(
    429,
    'api-call-limit-exceeded',
    `This publisher has used the ${limit} API calls its plan allows this month; the limit resets at ${new Date(resetsAt).toISOString()}. An admin can choose a larger plan with PUT /api/v1/publishers/{id}/account/plan.`,
    { headers: { 'retry-after': String(Math.max(1, Math.ceil((resetsAt - now) / 1000))), [LIMIT_EXCEEDED_HEADER]: limit } },
  );
}

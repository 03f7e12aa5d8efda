/**
 * The request pipeline (docs/CONTRACTS.md, README "Architecture"): one ordered walk through
 * small stages, each in its own module —
 * canonical-path → header checks → route rule → rate limit (ip) → authenticate → session → rate limit (subject)
 * → publisher context → authorize → rate limit (publisher) → meter → mutate headers
 * (→ forward, done by the caller: the proxy route forwards, `/ext-authz` answers instead).
 * A stage stops the walk by throwing a ProblemError; nothing reaches the upstream before
 * every earlier stage passed.
 */
import type { AssertionSigner } from './identity/assertion.ts';
import type { DecisionCache, Decision } from './pdp/decision-cache.ts';
import { authenticateStage, type Authenticator, type Identity } from './stages/authenticate.ts';
import { authorizeStage } from './stages/authorize.ts';
import { checkCanonicalPath, type CanonicalTarget } from './stages/canonical-path.ts';
import { checkRequestHeaders } from './stages/request-headers.ts';
import { meterStage, type MeteringDeps } from './stages/meter.ts';
import { mutateHeaders, type HeaderMap } from './stages/mutate-headers.ts';
import { resolvePublisherContext } from './stages/publisher-context.ts';
import { sessionStage } from './stages/session.ts';
import type { SessionRevocations } from './identity/session-revocations.ts';
import { routeStage, type RouteMatch, type RouteMatcher } from './stages/route.ts';
import { rateLimitStage, type RateLimits } from './stages/rate-limit.ts';
import type { DecisionLog } from './decision-log.ts';

/** What the pipeline needs, built once per process (app.ts). */
export type PipelineDeps = {
  routes: RouteMatcher;
  authenticators: Authenticator[];
  cache: DecisionCache;
  signer: AssertionSigner;
  revocations: SessionRevocations;
  metering: MeteringDeps;
  rateLimits: RateLimits;
  /** CONDITION_TIME_BUCKET_MS: the request time's bucket in the Checks' condition context (pdp/condition-context.ts); default 30,000. */
  conditionTimeBucketMs?: number;
  /** Told of every rule's decision (decision-log.ts); none = not logged. */
  decisionLog?: DecisionLog;
};

/** One request as the pipeline sees it. */
export type PipelineInput = {
  method: string;
  /** Raw request target (origin-form) exactly as received. */
  rawTarget: string | undefined;
  /** `rawTarget` already checked and split by {@link checkCanonicalPath} (the proxy's onRequest hook did); else checked here. */
  canonical?: CanonicalTarget;
  /**
   * Prepended to the path for the assertion's `htu` so that it equals the path the upstream
   * receives: the upstream base path (UPSTREAM_URL's path) for the proxy; '' for ext_authz, where
   * `htu` is the original request's path.
   */
  htuPrefix: string;
  headers: HeaderMap;
  /** Node's raw header list (name, value, …): repeated fields Node folds or drops are visible here. */
  rawHeaders: readonly string[];
  requestId: string;
  /** The client's address: the TCP peer, or the client a trusted proxy names (TRUSTED_PROXIES). */
  clientIp?: string;
  proto: string;
  /** Called for response headers a stage wants on the answer whatever happens (e.g. Deprecation). */
  setResponseHeader: (name: string, value: string) => void;
};

/** The outcome of a request that passed every stage. */
export type PipelineResult = {
  path: string;
  query: string;
  match: RouteMatch;
  identity?: Identity;
  publisherId?: string;
  decision?: Decision;
  assertion?: string;
  /** The headers to send upstream (mutate-headers output). */
  upstreamHeaders: HeaderMap;
  /** The client's address (the input's `clientIp`). */
  clientIp?: string;
};

/**
 * Run the stages up to and including mutate-headers.
 * @returns the result, whose `upstreamHeaders` are ready to forward.
 * @throws ProblemError from the first stage that rejects (400/401/403/404/429/503 …).
 */
export async function runPipeline(deps: PipelineDeps, input: PipelineInput): Promise<PipelineResult> {
  const { path, query } = input.canonical ?? checkCanonicalPath(input.rawTarget);
  checkRequestHeaders(input.rawHeaders);
  const match = routeStage(deps.routes, input.method, path);
  const { rule } = match;
  const setHeader = input.setResponseHeader;
  let limited = await rateLimitStage(deps.rateLimits, match, { kind: 'ip', address: input.clientIp }, undefined, setHeader);

  let identity: Identity | undefined;
  let publisherId: string | undefined;
  let decision: Decision | undefined;
  if (!rule.public) {
    identity = await authenticateStage(deps.authenticators, { headers: input.headers });
    sessionStage(deps.revocations, identity);
    limited = await rateLimitStage(deps.rateLimits, match, { kind: 'subject', identity }, limited, setHeader);
    // Authenticated-only rules carry no publisher context (CONTRACTS.md, "Route rules").
    if (!rule.authenticated) {
      const ctx = resolvePublisherContext(input.headers);
      for (const [k, v] of Object.entries(ctx.responseHeaders)) input.setResponseHeader(k, v);
      publisherId = ctx.publisherId;
      const dlog = deps.decisionLog;
      const ctxPublisher = publisherId;
      decision = await authorizeStage(deps.cache, match, identity, publisherId, dlog && ((d) => dlog.observe({ ...d, requestId: input.requestId, publisherId: ctxPublisher, rule })), {
        clientIp: input.clientIp,
        timeBucketMs: deps.conditionTimeBucketMs,
      });
      // after authorization: only a publisher's own members spend its budget
      await rateLimitStage(deps.rateLimits, match, { kind: 'publisher', contextPublisher: publisherId }, limited, setHeader);
      meterStage(deps.metering, match, identity, publisherId, input.setResponseHeader);
    }
  }

  const assertion = identity
    ? deps.signer.sign({
        sub: identity.subject,
        publisherId,
        scope: identity.scope,
        sid: identity.sid,
        amr: identity.amr,
        requestId: input.requestId,
        method: input.method,
        path: input.htuPrefix + path,
        query, // htq: the raw query, the same for the upstream (proxy) and the original request (ext_authz)
      })
    : undefined;
  const host = typeof input.headers.host === 'string' ? input.headers.host : undefined;
  const upstreamHeaders = mutateHeaders(input.headers, {
    assertion,
    requestId: input.requestId,
    publisherId,
    clientIp: input.clientIp,
    proto: input.proto,
    host,
    forward: rule.forward_headers,
  });
  return { path, query, match, identity, publisherId, decision, assertion, upstreamHeaders, clientIp: input.clientIp };
}

/**
 * Prometheus metrics of one sidecar instance (its own prom-client Registry, so several instances in
 * one process — tests — do not collide). Served at `GET /metrics`.
 */
import { Counter, Gauge, Registry, collectDefaultMetrics, type Aggregator } from 'prom-client';
import type { PdpMetrics } from './pdp/openfga.ts';

/** Where a decision came from. */
export type DecisionSource = 'lru' | 'redis' | 'pdp';

/** The instance's registry and counters. */
export type SidecarMetrics = {
  registry: Registry;
  /** `sidecar_decisions_total{source, allowed}`: every authorization decision made. */
  decisions: Counter<'source' | 'allowed'>;
  /** Record one decision. */
  decision(source: DecisionSource, allowed: boolean): void;
  /** `sidecar_token_cache_total{result}`: bearer tokens verified from the cache (`hit`) or by jose (`miss`). */
  tokenCache: Counter<'result'>;
  /** The API-call metering (metering/flusher.ts, stages/meter.ts). */
  metering: MeteringMetrics;
  /** Upstream admission and body buffering (stages/forward.ts). */
  upstream: UpstreamMetrics;
  /** `sidecar_rate_limited_total{kind}`: requests refused with 429 by a rate limit (stages/rate-limit.ts), by key kind. */
  rateLimited: Counter<'kind'>;
  /** `sidecar_rate_limit_local_total{kind}`: requests counted in process because Redis failed or was too slow. */
  rateLimitLocal: Counter<'kind'>;
  /** `sidecar_rate_limit_reservations_total{kind}`: leases reserved in Redis (one command each; stages/rate-limit-leases.ts). */
  rateLimitReservations: Counter<'kind'>;
  /** Count one Check by consistency (`sidecar_openfga_check_consistency_total{consistency}`): true = HIGHER_CONSISTENCY (pdp/decision-cache.ts). */
  pdpConsistency(higher: boolean): void;
  /** `sidecar_pdp_coalesced_total`: decisions that waited for an identical miss already in flight instead of asking Redis/OpenFGA themselves (pdp/decision-cache.ts). */
  pdpCoalesced: Counter;
  /**
   * The in-process epoch view (pdp/epoch-view.ts): give `sidecar_epoch_view_stale_seconds` its
   * source (0 while the view is fresh; > EPOCH_STALENESS_MS/1000 while decisions read their epochs
   * from Redis instead). Without a view the gauge stays -1.
   */
  epochView: { observe(source: () => { staleSeconds: number }): void };
  /** The decision log (decision-log.ts). */
  decisionLog: DecisionLogMetrics;
  /** The authorization model in use (policies/src/active-model.ts). */
  model: ModelMetrics;
  /** `sidecar_access_log_total{outcome}`: answered requests by access-log outcome (access-log.ts): `written`, `sampled_out`, `capped`. */
  accessLog: Counter<'outcome'>;
  /**
   * Per OpenFGA instance (pdp/openfga.ts): `sidecar_openfga_instance_healthy{instance}` (1 / 0) and
   * `sidecar_openfga_checks_total{instance, result}` (Check attempts: `ok`, `error`).
   */
  openfga: PdpMetrics;
};

/** What the active-model watcher reports (docs/CONTRACTS.md, "Active model"). */
export type ModelMetrics = {
  /** Set `sidecar_authorization_model_info{model_id}` to 1 for `modelId` only (the previous id's series is removed). */
  use(modelId: string): void;
  /** `sidecar_authorization_model_switches_total`: switches to another model id since start. */
  switches: Counter;
  /** `sidecar_authorization_model_rejected_total`: published model ids refused (unknown to the store, or route rules naming a relation it lacks). */
  rejected: Counter;
};

/** What the decision log reports (docs/CONTRACTS.md, "Decision log"). */
export type DecisionLogMetrics = {
  /** `sidecar_decision_log_records_total{sink}`: records written to each sink: `log` (the pino line), `buffer` (the ring), `stream` (confirmed by Redis), `span` (a recording OpenTelemetry span). */
  records: Counter<'sink'>;
  /** `sidecar_decision_log_dropped_total{reason}`: records that did not reach the stream: `redis` (the flush failed), `backlog` (more waiting than DECISION_LOG_STREAM_MAXLEN). */
  dropped: Counter<'reason'>;
};

/** What the forwarder reports (docs/CONTRACTS.md, "Upstream admission"). */
export type UpstreamMetrics = {
  /** `sidecar_upstream_waits_total{reason}`: requests that had to queue for a slot: `pool` (all in use), `subject_share` / `publisher_share` (their subject's / publisher's share in use). */
  waits: Counter<'reason'>;
  /** `sidecar_upstream_rejected_total{reason}`: 503s of admission: `queue_timeout` (no slot in time), `buffer_full` (no room to buffer the request body). */
  rejected: Counter<'reason'>;
  /** `sidecar_proxy_responses_total{mode}`: upstream responses `buffered` (read whole, slot freed before writing to the client) or `streamed`. */
  responses: Counter<'mode'>;
  /**
   * Give the gauges their source, read at every scrape: `sidecar_upstream_slots_in_use`,
   * `sidecar_upstream_slots_waiting` and `sidecar_proxy_buffered_bytes` (request and response body
   * bytes held in memory).
   */
  observe(source: () => { slotsInUse: number; slotsWaiting: number; bufferedBytes: number }): void;
};

/** What the metering reports (docs/CONTRACTS.md, "Metering"). */
export type MeteringMetrics = {
  /** `sidecar_metering_flushes_total{result}`: flush rounds in which Redis confirmed every batch (`ok`) or not (`failed`). */
  flushes: Counter<'result'>;
  /** `sidecar_metering_limit_reloads_total{result}`: reads of the published limits (`ok` / `failed`). */
  limitReloads: Counter<'result'>;
  /** `sidecar_metering_over_limit_total{outcome}`: calls over their publisher's monthly limit, `blocked` (429) or `warned`. */
  overLimit: Counter<'outcome'>;
  /** `sidecar_metering_dropped_total`: calls not counted because the in-process bound was reached. */
  dropped: Counter;
  /**
   * Give the gauges their source, read at every scrape: `sidecar_metering_flush_lag_seconds` (since
   * the last round Redis confirmed in full), `sidecar_metering_unflushed_calls` (counted, not yet
   * confirmed) and `sidecar_metering_limits_age_seconds` (since the limits were last read; -1: never).
   */
  observe(source: () => { lagSeconds: number; unflushedCalls: number; limitsAgeSeconds: number }): void;
};

/** Create a registry with process default metrics and the sidecar counters. */
export function createMetrics(): SidecarMetrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const decisions = new Counter({
    name: 'sidecar_decisions_total',
    help: 'Authorization decisions by source (lru = in-process cache, redis = shared cache, pdp = OpenFGA Check) and result',
    labelNames: ['source', 'allowed'] as const,
    registers: [registry],
  });
  // Label children bound once: no label hashing per request.
  const children = new Map<string, { inc(): void }>();
  for (const s of ['lru', 'redis', 'pdp'] as const) {
    for (const a of ['true', 'false']) {
      decisions.inc({ source: s, allowed: a }, 0);
      children.set(`${s}:${a}`, decisions.labels(s, a));
    }
  }
  const tokenCache = new Counter({
    name: 'sidecar_token_cache_total',
    help: 'Bearer tokens by verified-token cache result (hit = accepted from the cache, miss = verified or rejected by jose)',
    labelNames: ['result'] as const,
    registers: [registry],
  });
  for (const r of ['hit', 'miss']) tokenCache.inc({ result: r }, 0);
  const byKind = (name: string, help: string) => labelledCounter(registry, name, help, 'kind', ['ip', 'subject', 'publisher']) as Counter<'kind'>;
  const rateLimited = byKind('sidecar_rate_limited_total', 'Requests refused with 429 by a rate limit, by key kind (ip, subject, publisher)');
  const rateLimitLocal = byKind('sidecar_rate_limit_local_total', 'Requests counted against a rate limit in process because Redis failed or was too slow, by key kind');
  const rateLimitReservations = byKind('sidecar_rate_limit_reservations_total', 'Rate-limit leases reserved in Redis (one command each, for up to RATE_LIMIT_LEASE_MAX requests), by key kind');
  const consistency = labelledCounter(registry, 'sidecar_openfga_check_consistency_total', 'OpenFGA Checks by consistency preference: higher_consistency (epochs changed recently or unknown: OpenFGA caches bypassed) or minimize_latency', 'consistency', ['higher_consistency', 'minimize_latency']) as Counter<'consistency'>;
  const higherConsistency = consistency.labels('higher_consistency');
  const minimizeLatency = consistency.labels('minimize_latency');
  return {
    registry,
    decisions,
    decision: (source, allowed) => children.get(`${source}:${allowed}`)!.inc(),
    tokenCache,
    metering: meteringMetrics(registry),
    upstream: upstreamMetrics(registry),
    rateLimited,
    rateLimitLocal,
    rateLimitReservations,
    pdpConsistency: (higher) => (higher ? higherConsistency : minimizeLatency).inc(),
    pdpCoalesced: new Counter({ name: 'sidecar_pdp_coalesced_total', help: 'Decisions that shared an identical cache miss (Redis GET + OpenFGA Check) already in flight', registers: [registry] }),
    epochView: epochViewMetrics(registry),
    decisionLog: {
      records: labelledCounter(registry, 'sidecar_decision_log_records_total', 'Decision-log records by sink (log = pino line, buffer = in-process ring, stream = confirmed by Redis, span = OpenTelemetry span)', 'sink', ['log', 'buffer', 'stream', 'span']) as Counter<'sink'>,
      dropped: labelledCounter(registry, 'sidecar_decision_log_dropped_total', 'Decision-log records that did not reach the Redis stream (redis = flush failed, backlog = too many waiting)', 'reason', ['redis', 'backlog']) as Counter<'reason'>,
    },
    model: modelMetrics(registry),
    accessLog: labelledCounter(registry, 'sidecar_access_log_total', 'Answered requests by access-log outcome (written = a line, sampled_out = not sampled, capped = over ACCESS_LOG_MAX_PER_S)', 'outcome', ['written', 'sampled_out', 'capped']) as Counter<'outcome'>,
    openfga: openfgaMetrics(registry),
  };
}

/** The per-instance OpenFGA gauge and counter (label children bound once per instance). */
function openfgaMetrics(registry: Registry): PdpMetrics {
  const healthy = new Gauge({ name: 'sidecar_openfga_instance_healthy', help: 'Whether an OpenFGA instance is in the rotation (1) or taken out (0)', labelNames: ['instance'] as const, aggregator: 'min', registers: [registry] });
  const checks = new Counter({ name: 'sidecar_openfga_checks_total', help: 'OpenFGA Check attempts by instance and result (ok = answered, error = failed)', labelNames: ['instance', 'result'] as const, registers: [registry] });
  const bound = new Map<string, { inc(): void }>();
  return {
    healthy: (instance, up) => healthy.set({ instance }, up ? 1 : 0),
    check: (instance, result) => {
      const k = `${instance} ${result}`;
      let c = bound.get(k);
      if (!c) bound.set(k, (c = checks.labels(instance, result)));
      c.inc();
    },
  };
}

/** The epoch view's staleness gauge, read at every scrape. */
function epochViewMetrics(registry: Registry): SidecarMetrics['epochView'] {
  const { gauge, observe } = scrapedGauges(registry, { staleSeconds: -1 });
  gauge('sidecar_epoch_view_stale_seconds', 'Seconds since the in-process epoch view was last known complete (0 = fresh; -1 = no view)', (s) => s.staleSeconds, 'max');
  return { observe };
}

/** The authorization-model gauge and counters. */
function modelMetrics(registry: Registry): ModelMetrics {
  const info = new Gauge({ name: 'sidecar_authorization_model_info', help: 'The authorization model id this sidecar decides with (value 1)', labelNames: ['model_id'] as const, aggregator: 'max', registers: [registry] });
  return {
    use: (modelId) => {
      info.reset();
      info.set({ model_id: modelId }, 1);
    },
    switches: new Counter({ name: 'sidecar_authorization_model_switches_total', help: 'Switches to another authorization model id without a restart', registers: [registry] }),
    rejected: new Counter({ name: 'sidecar_authorization_model_rejected_total', help: 'Published authorization model ids refused (unknown to the store, or route rules name a relation the model lacks)', registers: [registry] }),
  };
}

/** A counter with one label whose `values` are all exported from the start (at 0). */
function labelledCounter(registry: Registry, name: string, help: string, label: string, values: string[]): Counter {
  const c = new Counter({ name, help, labelNames: [label], registers: [registry] });
  for (const v of values) c.inc({ [label]: v }, 0);
  return c;
}

/**
 * Gauges read at every scrape from a source set later (`observe`): returns the gauge factory and
 * the setter. `initial` answers until a source is given. `aggregator`: how SIDECAR_WORKERS > 1
 * combines the workers' values (prom-client AggregatorRegistry; default `sum`, `max` for ages).
 */
function scrapedGauges<S>(registry: Registry, initial: S) {
  let source: () => S = () => initial;
  const gauge = (name: string, help: string, pick: (s: S) => number, aggregator: Aggregator = 'sum') =>
    new Gauge({
      name,
      help,
      aggregator,
      registers: [registry],
      collect() {
        this.set(pick(source()));
      },
    });
  return { gauge, observe: (s: () => S) => void (source = s) };
}

function meteringMetrics(registry: Registry): MeteringMetrics {
  const { gauge, observe } = scrapedGauges(registry, { lagSeconds: 0, unflushedCalls: 0, limitsAgeSeconds: -1 });
  gauge('sidecar_metering_flush_lag_seconds', 'Seconds since the last metering flush round that Redis confirmed in full', (s) => s.lagSeconds, 'max');
  gauge('sidecar_metering_unflushed_calls', 'API calls counted in process and not yet confirmed by Redis', (s) => s.unflushedCalls);
  gauge('sidecar_metering_limits_age_seconds', 'Seconds since the published API-call limits were last read (-1: never)', (s) => s.limitsAgeSeconds, 'max');
  return {
    flushes: labelledCounter(registry, 'sidecar_metering_flushes_total', 'Metering flush rounds by result (ok = Redis confirmed every batch)', 'result', ['ok', 'failed']),
    limitReloads: labelledCounter(registry, 'sidecar_metering_limit_reloads_total', 'Reads of the published API-call limits by result', 'result', ['ok', 'failed']),
    overLimit: labelledCounter(registry, 'sidecar_metering_over_limit_total', "Calls over their publisher's monthly API-call limit (blocked = 429, warned = passed with a header)", 'outcome', ['blocked', 'warned']),
    dropped: new Counter({ name: 'sidecar_metering_dropped_total', help: 'API calls not counted because the in-process metering bound was reached', registers: [registry] }),
    observe,
  };
}

function upstreamMetrics(registry: Registry): UpstreamMetrics {
  const { gauge, observe } = scrapedGauges(registry, { slotsInUse: 0, slotsWaiting: 0, bufferedBytes: 0 });
  gauge('sidecar_upstream_slots_in_use', 'Upstream connection slots held by proxied requests', (s) => s.slotsInUse);
  gauge('sidecar_upstream_slots_waiting', 'Proxied requests waiting for an upstream connection slot', (s) => s.slotsWaiting);
  gauge('sidecar_proxy_buffered_bytes', 'Request and response body bytes the proxy holds in memory', (s) => s.bufferedBytes);
  return {
    waits: labelledCounter(registry, 'sidecar_upstream_waits_total', 'Proxied requests that queued for an upstream slot, by what they waited for', 'reason', ['pool', 'subject_share', 'publisher_share']),
    rejected: labelledCounter(registry, 'sidecar_upstream_rejected_total', 'Proxied requests answered 503 by admission (queue_timeout = no slot in time, buffer_full = no room for the body)', 'reason', ['queue_timeout', 'buffer_full']),
    responses: labelledCounter(registry, 'sidecar_proxy_responses_total', 'Upstream responses by how they were relayed (buffered = read whole, slot freed first; streamed)', 'mode', ['buffered', 'streamed']),
    observe,
  };
}

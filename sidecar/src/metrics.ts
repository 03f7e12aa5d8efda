/**
 * Prometheus metrics of one sidecar instance (its own prom-client Registry, so several instances in
 * one process — tests — do not collide). Served at `GET /metrics`.
 */
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';

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
  return { registry, decisions, decision: (source, allowed) => children.get(`${source}:${allowed}`)!.inc(), tokenCache, metering: meteringMetrics(registry) };
}

function meteringMetrics(registry: Registry): MeteringMetrics {
  const labelled = (name: string, help: string, label: string, values: string[]) => {
    const c = new Counter({ name, help, labelNames: [label], registers: [registry] });
    for (const v of values) c.inc({ [label]: v }, 0);
    return c;
  };
  type Source = Parameters<MeteringMetrics['observe']>[0];
  let source: Source = () => ({ lagSeconds: 0, unflushedCalls: 0, limitsAgeSeconds: -1 });
  const gauge = (name: string, help: string, pick: (s: ReturnType<Source>) => number) =>
    new Gauge({
      name,
      help,
      registers: [registry],
      collect() {
        this.set(pick(source()));
      },
    });
  gauge('sidecar_metering_flush_lag_seconds', 'Seconds since the last metering flush round that Redis confirmed in full', (s) => s.lagSeconds);
  gauge('sidecar_metering_unflushed_calls', 'API calls counted in process and not yet confirmed by Redis', (s) => s.unflushedCalls);
  gauge('sidecar_metering_limits_age_seconds', 'Seconds since the published API-call limits were last read (-1: never)', (s) => s.limitsAgeSeconds);
  return {
    flushes: labelled('sidecar_metering_flushes_total', 'Metering flush rounds by result (ok = Redis confirmed every batch)', 'result', ['ok', 'failed']),
    limitReloads: labelled('sidecar_metering_limit_reloads_total', 'Reads of the published API-call limits by result', 'result', ['ok', 'failed']),
    overLimit: labelled('sidecar_metering_over_limit_total', "Calls over their publisher's monthly API-call limit (blocked = 429, warned = passed with a header)", 'outcome', ['blocked', 'warned']),
    dropped: new Counter({ name: 'sidecar_metering_dropped_total', help: 'API calls not counted because the in-process metering bound was reached', registers: [registry] }),
    observe: (s) => void (source = s),
  };
}

/**
 * Prometheus metrics of one sidecar instance (its own prom-client Registry, so several instances in
 * one process — tests — do not collide). Served at `GET /metrics`.
 */
import { Counter, Registry, collectDefaultMetrics } from 'prom-client';

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
  return { registry, decisions, decision: (source, allowed) => children.get(`${source}:${allowed}`)!.inc(), tokenCache };
}

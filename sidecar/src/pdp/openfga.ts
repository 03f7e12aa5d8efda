/**
 * The policy decision point: OpenFGA Check (`POST /stores/{store_id}/check`, OpenFGA HTTP API),
 * pinned to one store and to the authorization model id the active-model watcher holds
 * (policies/src/active-model.ts): a newly written model changes answers only once it is published
 * as the active one, and each Check names the id it was decided by.
 *
 * Sent with undici Pools (keep-alive, up to `connections` sockets per instance) rather than the
 * SDK's axios client: the SDK costs ~340 µs of client CPU per Check against ~80 µs here (measured
 * at 32 concurrent Checks), and on a shared host that CPU is taken from OpenFGA itself.
 *
 * Several OpenFGA instances (issue 11 §1; all serving the same datastore, so any of them may
 * answer any Check): one Pool per instance, round-robin over the healthy ones. undici's
 * BalancedPool does not say which upstream served (or failed) a request, so it could neither take
 * the failing instance out nor count per instance: the selection below is ours, the sockets
 * undici's. Health: every instance's `GET /healthz` (OpenFGA's health endpoint) every
 * `healthIntervalMs`; a Check attempt that fails with a network error, a timeout or a 5xx takes its
 * instance out at once, the health check brings it back. When no instance is healthy, all are
 * tried anyway (a single instance behaves as before: decided again as soon as it answers).
 *
 * Retry policy (unchanged): per attempt `OPENFGA_TIMEOUT_MS` (undici connect/headers/body
 * timeouts); at most one retry on a network error, timeout, 429 or 5xx (not 501) — on another
 * instance at once when there is one, else on the same after 50–100 ms — within an outer guard of
 * 2×timeout + 100 ms (our own timers: undici's run on ~500 ms ticks). So a down instance costs a
 * Check at most one attempt's timeout.
 * Any other failure (4xx, a body without a boolean `allowed`) → {@link PdpUnavailableError};
 * callers answer 503 and never cache it.
 */
import { Pool } from 'undici';
import type { ModelRef } from '../../../policies/src/active-model.ts';

/**
 * A relationship question: may `user` `relation` `object`? (`user:<uuid>`, `<type>:<id>`).
 * `modelId`: the authorization model to decide by (default: the PDP's current one) — the decision
 * cache passes the id its key was computed with, so a switch mid-request cannot mix two models.
 */
export type CheckQuery = {
  user: string;
  relation: string;
  object: string;
  modelId?: string;
  /**
   * The condition context sent with the Check (OpenFGA Check `context`; policies/src/conditions.ts
   * CheckContext: `current_time`, `client_ip`). `contextKey`: what the decision cache keys that
   * context by (pdp/condition-context.ts; default: a hash of `context`).
   */
  context?: Record<string, unknown>;
  contextKey?: string;
  /**
   * OpenFGA's consistency preference: HIGHER_CONSISTENCY skips OpenFGA's caches (decision-cache.ts
   * sends it for decisions whose epochs changed recently); absent = OpenFGA's default
   * (MINIMIZE_LATENCY: its caches when enabled).
   */
  consistency?: 'HIGHER_CONSISTENCY';
};

/** One OpenFGA instance as the PDP sees it: `url` its origin (the metrics label), `healthy` its state now. */
export type PdpInstance = { url: string; healthy: boolean };

/** The decision point's interface (OpenFGA today; a fake in unit tests). */
export type Pdp = {
  /** @returns whether allowed. @throws PdpUnavailableError when no answer could be obtained. */
  check(q: CheckQuery): Promise<boolean>;
  /** Close the connection pools (and stop the health checks). */
  close?(): Promise<void>;
  /** The instances and their health as last seen (attempts and health checks). */
  instances?(): PdpInstance[];
  /**
   * Health-check every instance now (`GET /healthz`, within `timeoutMs` ms), updating their state.
   * @returns how many answered healthy (readiness: ≥ 1)
   */
  probe?(timeoutMs: number): Promise<number>;
};

/** What the PDP reports per instance (sidecar/src/metrics.ts `openfga`). */
export type PdpMetrics = {
  /** Set `sidecar_openfga_instance_healthy{instance}` to 1 or 0. */
  healthy(instance: string, healthy: boolean): void;
  /** Count one Check attempt on `instance`: `ok` (an answer) or `error` (failed, maybe retried elsewhere). */
  check(instance: string, result: 'ok' | 'error'): void;
};

/** OpenFGA could not answer (unreachable, timeout, 5xx, or rejected the request). */
export class PdpUnavailableError extends Error {
  constructor(message: string, cause?: unknown) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'PdpUnavailableError';
  }
}

/** One failed attempt, whether trying again may help, and whether it says the instance is down. */
class AttemptError extends Error {
  retryable: boolean;
  down: boolean;
  constructor(message: string, retryable: boolean, down: boolean, cause?: unknown) {
    super(message, cause === undefined ? undefined : { cause });
    this.retryable = retryable;
    this.down = down;
  }
}

type Instance = { url: string; pool: Pool; path: string; healthy: boolean; probing: boolean };

/**
 * The OpenFGA instances of `OPENFGA_API_URL` / `OPENFGA_API_URLS`: a comma-separated list of
 * HTTP(S) URLs (one is the single-instance case). @throws Error on an empty list or a bad URL.
 */
export function parseApiUrls(value: string): string[] {
  const urls = value.split(',').map((s) => s.trim()).filter(Boolean);
  if (urls.length === 0) throw new Error('no OpenFGA API URL given');
  for (const u of urls) {
    const p = new URL(u);
    if (p.protocol !== 'http:' && p.protocol !== 'https:') throw new Error(`protocol ${p.protocol} is not http(s)`);
  }
  return urls;
}

/**
 * Create the OpenFGA PDP.
 * @param opts.apiUrl one OpenFGA HTTP API URL, or opts.apiUrls several (instances on one
 *   datastore; apiUrls wins when both are given); opts.storeId the store; opts.modelId the model
 *   id, fixed or a {@link ModelRef} read at every Check (the active-model watcher);
 *   opts.timeoutMs per-attempt timeout in ms (default 1000); opts.connections max sockets per
 *   instance (default 32); opts.healthIntervalMs the health-check period in ms (default 1000;
 *   0 = none: instances come back only by a successful attempt when none is healthy);
 *   opts.metrics per-instance metrics.
 * @throws Error when no URL is given
 */
export function createOpenFgaPdp(opts: {
  apiUrl?: string;
  apiUrls?: string[];
  storeId: string;
  modelId: string | ModelRef;
  timeoutMs?: number;
  connections?: number;
  healthIntervalMs?: number;
  metrics?: PdpMetrics;
}): Pdp {
  const timeoutMs = opts.timeoutMs ?? 1000;
  const model: ModelRef = typeof opts.modelId === 'string' ? { current: opts.modelId } : opts.modelId;
  const urls = opts.apiUrls?.length ? opts.apiUrls : opts.apiUrl ? [opts.apiUrl] : [];
  if (urls.length === 0) throw new Error('createOpenFgaPdp: no OpenFGA API URL');
  const metrics = opts.metrics;
  const instances: Instance[] = urls.map((u) => {
    const base = new URL(u);
    const prefix = base.pathname.replace(/\/+$/, '');
    return {
      url: base.origin,
      path: prefix,
      healthy: true,
      probing: false,
      pool: new Pool(base.origin, {
        connections: opts.connections ?? 32,
        connectTimeout: timeoutMs,
        headersTimeout: timeoutMs,
        bodyTimeout: timeoutMs,
        keepAliveTimeout: 4_000,
      }),
    };
  });
  const checkPath = `/stores/${encodeURIComponent(opts.storeId)}/check`;
  for (const i of instances) metrics?.healthy(i.url, true);

  const setHealthy = (i: Instance, healthy: boolean) => {
    if (i.healthy === healthy) return;
    i.healthy = healthy;
    metrics?.healthy(i.url, healthy);
  };

  let next = 0;
  /** Round-robin over the healthy instances other than `not`; none healthy → over all others; none → `not`. */
  const pick = (not?: Instance): Instance => {
    const n = instances.length;
    let fallback: Instance | undefined;
    for (let k = 0; k < n; k++) {
      const i = instances[(next + k) % n]!;
      if (i === not) continue;
      if (i.healthy) {
        next = (next + k + 1) % n;
        return i;
      }
      fallback ??= i;
    }
    next = (next + 1) % n;
    return fallback ?? not ?? instances[0]!;
  };

  /**
   * One Check attempt on `i`, aborted after `ms` by our own timer: undici's headers/body timeouts
   * run on its coarse timer (~500 ms ticks), so a 1 s timeout could take 1.5 s; they stay as a backstop.
   * `full`: `ms` is the whole per-attempt timeout (not cut short by the Check's deadline), so a
   * timeout says the instance is slow.
   */
  const attempt = async (i: Instance, body: string, ms: number, full: boolean): Promise<boolean> => {
    const ac = new AbortController();
    const timer = setTimeout(() => ac.abort(), ms);
    try {
      let res;
      try {
        res = await i.pool.request({ method: 'POST', path: i.path + checkPath, headers: { 'content-type': 'application/json' }, body, signal: ac.signal });
      } catch (err) {
        const timedOut = ac.signal.aborted;
        throw new AttemptError(timedOut ? `OpenFGA check timed out after ${Math.round(ms)} ms` : `OpenFGA check failed: ${(err as Error).message}`, true, full || !timedOut, err);
      }
      let json: unknown;
      try {
        json = await res.body.json();
      } catch (err) {
        const server = res.statusCode >= 500;
        // a body cut off or timed out says the instance is in trouble; a malformed one does not
        const down = server || (!(err instanceof SyntaxError) && (full || !ac.signal.aborted));
        throw new AttemptError(`OpenFGA check answered ${res.statusCode} with an unreadable body`, server || ac.signal.aborted, down, err);
      }
      if (res.statusCode !== 200) {
        const server = res.statusCode >= 500 && res.statusCode !== 501;
        throw new AttemptError(`OpenFGA check answered ${res.statusCode}`, server || res.statusCode === 429, server);
      }
      const allowed = (json as { allowed?: unknown } | null)?.allowed;
      if (typeof allowed !== 'boolean') throw new AttemptError('OpenFGA check returned no decision', false, false);
      return allowed;
    } finally {
      clearTimeout(timer);
    }
  };

  /** GET /healthz of one instance within `ms`; updates its state. @returns whether healthy */
  const probeOne = async (i: Instance, ms: number): Promise<boolean> => {
    let ok = false;
    try {
      const res = await i.pool.request({ method: 'GET', path: `${i.path}/healthz`, signal: AbortSignal.timeout(ms) });
      await res.body.dump();
      ok = res.statusCode === 200;
    } catch {
      ok = false;
    }
    setHealthy(i, ok);
    return ok;
  };

  let closed = false;
  const interval = opts.healthIntervalMs ?? 1000;
  const timer =
    interval > 0
      ? setInterval(() => {
          for (const i of instances) {
            if (i.probing || closed) continue; // a probe still waiting (up to timeoutMs) is not doubled
            i.probing = true;
            void probeOne(i, timeoutMs).finally(() => (i.probing = false));
          }
        }, interval)
      : undefined;
  timer?.unref();

  return {
    async check(q) {
      const body = JSON.stringify({ tuple_key: { user: q.user, relation: q.relation, object: q.object }, authorization_model_id: q.modelId ?? model.current, context: q.context, consistency: q.consistency });
      // Each attempt within timeoutMs, both within the Check's deadline of 2 × timeoutMs + 100 ms.
      const deadline = performance.now() + 2 * timeoutMs + 100;
      let inst = pick();
      for (let tries = 1; ; tries++) {
        const left = deadline - performance.now();
        if (left <= 0) throw new PdpUnavailableError('OpenFGA check timed out');
        try {
          const allowed = await attempt(inst, body, Math.min(timeoutMs, left), left >= timeoutMs);
          metrics?.check(inst.url, 'ok');
          setHealthy(inst, true);
          return allowed;
        } catch (err) {
          const e = err as AttemptError;
          metrics?.check(inst.url, 'error');
          if (e.down) setHealthy(inst, false);
          if (tries >= 2 || !e.retryable) throw new PdpUnavailableError(e.message, e.cause ?? err);
          const other = pick(inst);
          if (other === inst) await new Promise((r) => setTimeout(r, 50 + Math.random() * 50));
          inst = other;
        }
      }
    },
    instances: () => instances.map((i) => ({ url: i.url, healthy: i.healthy })),
    probe: async (ms) => (await Promise.all(instances.map((i) => probeOne(i, ms)))).filter(Boolean).length,
    close: async () => {
      closed = true;
      if (timer) clearInterval(timer);
      await Promise.all(instances.map((i) => i.pool.close()));
    },
  };
}

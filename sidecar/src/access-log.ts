/**
 * The sidecar's access log (issue 8 §1): one `request completed` line per logged request instead of
 * Fastify's two per request (`incoming request` + `request completed`, turned off with
 * `disableRequestLogging`), and bounded: answers with status ≥ 400 are always eligible, the others
 * with probability ACCESS_LOG_SAMPLE; at most ACCESS_LOG_MAX_PER_S lines are written per second
 * (a fixed one-second window), the rest are counted, not written. Every request is still counted in
 * the metrics (`sidecar_access_log_total{outcome}`; decisions in `sidecar_decisions_total`), so
 * sampling loses no numbers, only examples. Lines go through the app's pino logger at level info:
 * `{req: {method, url, host, remoteAddress}, res: {statusCode}, responseTime}` (ms), the URL passed
 * through policies/src/routes.ts `loggedRequest` (credential path segments redacted), plus `reqId`.
 */

/** Minimal pino-compatible logger: the request's child logger (carries `reqId`). */
type Log = { info(obj: object, msg?: string): void };

/** What happened to one request's access-log line. */
export type AccessLogOutcome = 'written' | 'sampled_out' | 'capped';

/** Options of {@link createAccessLog}. */
export type AccessLogOptions = {
  /** probability (0..1) that a request answered below 400 is logged (ACCESS_LOG_SAMPLE) */
  sample: number;
  /** most lines written per second (ACCESS_LOG_MAX_PER_S; 0 = none) */
  maxPerSecond: number;
  /** false when the log level is above info: nothing is written, every request `sampled_out` */
  enabled: boolean;
  /** counts each request's outcome (metrics.ts `accessLog`) */
  count: (outcome: AccessLogOutcome) => void;
  /** 0 ≤ x < 1 (default Math.random) */
  random?: () => number;
  /** ms clock (default Date.now) */
  now?: () => number;
};

/** The fields one line reports; `req` is built only for a line that is written. */
export type AccessLogEntry = { req: () => object; statusCode: number; responseTimeMs: number };

/** The access log: `record` once per answered request (Fastify `onResponse`). */
export type AccessLog = {
  /**
   * Decide and maybe write the line for one request; never throws.
   * @returns the outcome (also counted)
   */
  record(log: Log, entry: AccessLogEntry): AccessLogOutcome;
};

/** Create the access log. */
export function createAccessLog(o: AccessLogOptions): AccessLog {
  const random = o.random ?? Math.random;
  const now = o.now ?? Date.now;
  let windowStart = 0;
  let written = 0;
  return {
    record(log, e) {
      let outcome: AccessLogOutcome;
      if (!o.enabled || (e.statusCode < 400 && !(o.sample >= 1 || random() < o.sample))) outcome = 'sampled_out';
      else {
        const t = now();
        if (t - windowStart >= 1000) {
          windowStart = t;
          written = 0;
        }
        if (written >= o.maxPerSecond) outcome = 'capped';
        else {
          written++;
          outcome = 'written';
          log.info({ req: e.req(), res: { statusCode: e.statusCode }, responseTime: e.responseTimeMs }, 'request completed');
        }
      }
      o.count(outcome);
      return outcome;
    },
  };
}

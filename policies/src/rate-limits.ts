/**
 * Request rate limits of the enforcement points (docs/CONTRACTS.md, "Route rules" and "Rate
 * limits"): their text form, shared by the route rules (`rate_limit:` in policies/routes.yaml) and
 * the sidecar's defaults (RATE_LIMIT_IP, RATE_LIMIT_SUBJECT, RATE_LIMIT_PUBLISHER), and their Redis
 * keys. Kept here because the route-rule loader and the sidecar both need it.
 *
 * Text form: `<requests>/<window>` where the window is `s`, `min` or `h`, optionally with a count
 * (`600/min`, `20/s`, `100/10s`, `5000/h`, `900/15min`): at most <requests> per fixed window of
 * that length; or `off` (no limit of that kind). Windows run from 1 s to 24 h.
 *
 * Redis keys: `<prefix>:{<kind>:<value>}:<bucket>` — `{…}` is a Redis Cluster hash tag, so each
 * counted key is on its own slot; `<bucket>` is `default` (the limit from the environment, shared
 * by every rule without a limit of that kind) or the rule's own (`<METHOD>:<path>` with `{x}`
 * written `:x`, so no brace of the path ends up in the hash tag).
 */
import { z } from 'zod';

/** What a limit counts: requests per client IP, per authenticated subject, per publisher. */
export const RATE_LIMIT_KINDS = ['ip', 'subject', 'publisher'] as const;
export type RateLimitKind = (typeof RATE_LIMIT_KINDS)[number];

/** A limit: at most `points` requests per fixed window of `seconds`. */
export type RateLimit = { points: number; seconds: number };

/** A limit, or `'off'` (that kind is not limited). */
export type RateLimitSetting = RateLimit | 'off';

/** Per-rule limits (`rate_limit:` of a route rule); a kind left out uses the default. */
export type RuleRateLimits = Partial<Record<RateLimitKind, RateLimitSetting>>;

const UNITS: Record<string, number> = { s: 1, min: 60, h: 3600 };
const TEXT = /^([1-9][0-9]{0,8})\/([1-9][0-9]{0,4})?(s|min|h)$/;
/** Longest window, seconds (one day). */
export const MAX_WINDOW_S = 86_400;

/**
 * Parse the text form of a limit.
 * @param text e.g. `600/min`, `100/10s`, `off` (surrounding white space ignored).
 * @returns the limit (`points`, `seconds`) or `'off'`.
 * @throws Error `rate limit "<text>" must be <requests>/<window> …` for anything else, including a
 *   window over 24 h and more than 999,999,999 requests.
 */
export function parseRateLimit(text: string): RateLimitSetting {
  const t = text.trim();
  if (t === 'off') return 'off';
  const m = TEXT.exec(t);
  const seconds = m ? Number(m[2] ?? 1) * UNITS[m[3]!]! : 0;
  if (!m || seconds > MAX_WINDOW_S) {
    throw new Error(`rate limit "${text}" must be <requests>/<window> with a window of s, min or h (e.g. 600/min, 100/10s; at most 24 h), or off`);
  }
  return { points: Number(m[1]), seconds };
}

/** The text form of a setting (inverse of {@link parseRateLimit}, in seconds, minutes or hours). */
export function formatRateLimit(s: RateLimitSetting): string {
  if (s === 'off') return 'off';
  const unit = s.seconds % 3600 === 0 ? 'h' : s.seconds % 60 === 0 ? 'min' : 's';
  const n = s.seconds / UNITS[unit]!;
  return `${s.points}/${n === 1 ? '' : n}${unit}`;
}

/** zod: a string in the text form → {@link RateLimitSetting}; the issue message is parseRateLimit's. */
export const rateLimitText = z.string({ error: 'a rate limit must be a string such as 600/min, or off' }).transform((s, ctx) => {
  try {
    return parseRateLimit(s);
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: (err as Error).message });
    return z.NEVER;
  }
});

/** The bucket of a rule's own limit: `<METHOD>:<path>` with `{x}` written `:x`. */
export function ruleBucket(method: string, path: string): string {
  return `${method}:${path.replace(/\{([^}]*)\}/g, ':$1')}`;
}

/** The Redis key of one counter: `<prefix>:{<kind>:<value>}:<bucket>` (value without braces). */
export function rateLimitKey(prefix: string, kind: RateLimitKind, value: string, bucket: string): string {
  return `${prefix}:{${kind}:${value}}:${bucket}`;
}

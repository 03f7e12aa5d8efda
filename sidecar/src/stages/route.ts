/**
 * Stage 2 — route rule. Compiles the policies' `RouteRule[]` (docs/CONTRACTS.md, "Route rules";
 * loaded by `policies/src/routes.ts`) into a matcher over the canonical raw path.
 *
 * Matching semantics (byte-exact, case-sensitive; no default allow — no rule → 404):
 * - a literal segment matches itself; `{name}` matches exactly one segment that must be a UUID
 *   (RFC 9562 textual form, any case; the value is lower-cased for the authorization object);
 * - a trailing `/*` matches `<prefix>/` followed by any rest (also empty); `<prefix>` alone needs
 *   its own rule (policies/routes.yaml lists `/docs` and `/docs/*`);
 * - HEAD: a request matches an explicit HEAD rule if one exists, else the GET rule of the same path
 *   (RFC 9110 §9.3.2: HEAD is GET without content, so it needs the same permission);
 * - when several rules match, the most specific wins: no wildcard over wildcard, then literal
 *   segments over parameters from left to right, then the longer wildcard prefix.
 */
import type { RouteRule } from '../../../policies/src/routes.ts';
import { ProblemError } from '../problem.ts';

export type { RouteRule };

/** A successful match: the rule and its (lower-cased UUID) path parameters by name. */
export type RouteMatch = { rule: RouteRule; params: Record<string, string> };

/** The compiled rule set. */
export type RouteMatcher = {
  /** The best rule for `method` + raw canonical `path`, or undefined. */
  match(method: string, path: string): RouteMatch | undefined;
};

const UUID = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;
/** True when `s` is a UUID in the 8-4-4-4-12 hex form (any version, any case). */
export function isUuid(s: string | undefined): s is string {
  return typeof s === 'string' && UUID.test(s);
}

type Segment = { literal: string } | { param: string };
type Compiled = { rule: RouteRule; method: string; segments: Segment[]; wildcard: boolean; score: number[] };

function compileOne(rule: RouteRule): Compiled {
  let parts = rule.path.split('/').slice(1);
  const wildcard = parts[parts.length - 1] === '*';
  if (wildcard) parts = parts.slice(0, -1);
  if (parts.length === 1 && parts[0] === '') parts = []; // "/"
  const segments: Segment[] = parts.map((p) => {
    const m = /^\{([A-Za-z_][A-Za-z0-9_]*)\}$/.exec(p);
    return m ? { param: m[1]! } : { literal: p };
  });
  // Higher sorts first: [not wildcard, segment count for wildcards, literal(1)/param(0) per segment].
  const score = [wildcard ? 0 : 1, wildcard ? segments.length : 0, ...segments.map((s) => ('literal' in s ? 1 : 0))];
  return { rule, method: rule.method.toUpperCase(), segments, wildcard, score };
}

function compare(a: number[], b: number[]): number {
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    const d = (b[i] ?? -1) - (a[i] ?? -1);
    if (d !== 0) return d;
  }
  return 0;
}

function tryMatch(c: Compiled, parts: string[]): Record<string, string> | undefined {
  if (c.wildcard ? parts.length <= c.segments.length : parts.length !== c.segments.length) return undefined;
  const params: Record<string, string> = {};
  for (let i = 0; i < c.segments.length; i++) {
    const seg = c.segments[i]!;
    const part = parts[i]!;
    if ('literal' in seg) {
      if (seg.literal !== part) return undefined;
    } else {
      if (!isUuid(part)) return undefined;
      params[seg.param] = part.toLowerCase();
    }
  }
  return params;
}

/**
 * Compile route rules into a matcher.
 * @param rules validated rules (as `loadRouteRules` returns them).
 * @returns a {@link RouteMatcher}; matching costs O(rules) per request.
 * @throws Error when a rule's object template names a placeholder that is neither a path parameter
 *   nor `{publisher}` (defence in depth; policies' loader already rejects it).
 */
export function compileRoutes(rules: RouteRule[]): RouteMatcher {
  const compiled = rules.map(compileOne);
  for (const c of compiled) {
    const ph = c.rule.object ? /\{([^}]+)\}/.exec(c.rule.object)?.[1] : undefined;
    if (ph && ph !== 'publisher' && !c.segments.some((s) => 'param' in s && s.param === ph)) {
      throw new Error(`route ${c.rule.method} ${c.rule.path}: object ${c.rule.object} uses unknown {${ph}}`);
    }
  }
  const byMethod = new Map<string, Compiled[]>();
  for (const c of compiled) byMethod.set(c.method, [...(byMethod.get(c.method) ?? []), c]);
  for (const list of byMethod.values()) list.sort((a, b) => compare(a.score, b.score));

  const find = (method: string, parts: string[]): RouteMatch | undefined => {
    for (const c of byMethod.get(method) ?? []) {
      const params = tryMatch(c, parts);
      if (params) return { rule: c.rule, params };
    }
    return undefined;
  };
  return {
    match(method, path) {
      // "/a/b" → ["a","b"]; "/docs/" → ["docs",""] (the wildcard's empty rest).
      const parts = path === '/' ? [] : path.split('/').slice(1);
      return find(method, parts) ?? (method === 'HEAD' ? find('GET', parts) : undefined);
    },
  };
}

/**
 * The route stage: match or throw.
 * @throws ProblemError 404 `not-found` when no rule matches (deny by default).
 */
export function routeStage(matcher: RouteMatcher, method: string, path: string): RouteMatch {
  const m = matcher.match(method, path);
  if (!m) throw new ProblemError(404, 'not-found', 'No route rule matches this method and path.');
  return m;
}

/**
 * The OpenFGA object of a relation rule: its template with `{param}` replaced by the matched path
 * parameter, or `{publisher}` by the publisher context.
 * @returns undefined when the rule has no object (public/authenticated rules).
 * @throws ProblemError 400 `publisher-context` when the template needs `{publisher}` and the
 *   request has none (CONTRACTS.md, "Route rules").
 */
export function objectFor(match: RouteMatch, publisherId: string | undefined): string | undefined {
  const tpl = match.rule.object;
  if (!tpl) return undefined;
  return tpl.replace(/\{([^}]+)\}/g, (_all, name: string) => {
    if (name === 'publisher') {
      if (!publisherId) throw new ProblemError(400, 'publisher-context', 'This route needs a publisher context: send X-Publisher-Id.');
      return publisherId;
    }
    const v = match.params[name];
    if (!v) throw new ProblemError(500, 'internal', `Route parameter {${name}} is missing.`);
    return v;
  });
}

/** True when the rule's object template uses the publisher context. */
export function needsPublisher(rule: RouteRule): boolean {
  return rule.object?.includes('{publisher}') ?? false;
}

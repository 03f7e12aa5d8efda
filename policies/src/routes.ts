/**
 * Route rules (policies/routes.yaml): which relation on which object a request needs.
 * Format and semantics: docs/CONTRACTS.md, "Route rules". The sidecar matches a request against
 * these rules; this module only loads and validates them.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { POLICIES_DIR, type ModelJson } from './model.ts';
import { RATE_LIMIT_KINDS, rateLimitText, type RuleRateLimits } from './rate-limits.ts';

/** Default route rules file: policies/routes.yaml. */
export const DEFAULT_ROUTES_FILE = resolve(POLICIES_DIR, 'routes.yaml');

/** Methods a rule may name (RFC 9110 §9 plus PATCH, RFC 5789); upper case only. */
export const HTTP_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'] as const;

/**
 * Request fields some upstream frameworks (Express method-override, Symfony, IIS URL Rewrite,
 * Spring's HiddenHttpMethodFilter kin, nginx auth_request's original-request fields) read as
 * another method or path than the one the sidecar authorized. The sidecar never forwards them,
 * except those a rule names in `forward_headers` (lower case).
 */
export const MEANING_CHANGING_HEADERS: ReadonlySet<string> = new Set([
  'x-http-method-override',
  'x-http-method',
  'x-method-override',
  'x-original-url',
  'x-rewrite-url',
  'x-original-uri',
  'x-original-method',
]);

/**
 * One route rule. Exactly one of: `public: true` (no identity, no check), `authenticated: true`
 * (identity only), or `relation` + `object` (an OpenFGA Check of `relation` on `object`, where the
 * object is a template `<type>:{param}` or a fixed object `<type>:<id>` such as `system:platform`;
 * `{publisher}` is the request's publisher context). `rate_limit` overrides the sidecar's default
 * request rate limits for this rule (policies/src/rate-limits.ts): `ip` on every rule, `subject`
 * when the rule authenticates, `publisher` only on relation rules. `forward_headers` lets named
 * {@link MEANING_CHANGING_HEADERS} through to the upstream for this rule only (its author accepts
 * that the upstream may act on them).
 */
export type RouteRule = {
  method: string;
  path: string;
  public?: boolean;
  authenticated?: boolean;
  relation?: string;
  object?: string;
  rate_limit?: RuleRateLimits;
  forward_headers?: string[];
};

const PARAM = /^\{([A-Za-z_][A-Za-z0-9_]*)\}$/;
const LITERAL_SEGMENT = /^[A-Za-z0-9._~!$&'()+,;=:@-]+$/; // RFC 3986 pchar without % and * (no encoded or wildcard chars)
const OBJECT_TEMPLATE = /^([a-z][a-z0-9_-]*):\{([A-Za-z_][A-Za-z0-9_]*)\}$/;
/** A fixed object, e.g. `system:platform` (the platform's own relations). */
const OBJECT_LITERAL = /^[a-z][a-z0-9_-]*:[A-Za-z0-9_-]+$/;
const RELATION = /^[a-z][a-z0-9_]*$/;

const ruleSchema = z
  .object({
    method: z.enum(HTTP_METHODS, { error: `method must be one of ${HTTP_METHODS.join(', ')}` }),
    path: z.string().startsWith('/', { error: 'path must start with "/"' }),
    public: z.literal(true, { error: 'public must be true when present' }).optional(),
    authenticated: z.literal(true, { error: 'authenticated must be true when present' }).optional(),
    relation: z.string().regex(RELATION, { error: 'relation must be an OpenFGA relation name' }).optional(),
    object: z.string().optional(),
    rate_limit: z
      .strictObject(
        { ip: rateLimitText.optional(), subject: rateLimitText.optional(), publisher: rateLimitText.optional() },
        {
          error: (iss) =>
            iss.code === 'unrecognized_keys'
              ? `unknown kind ${iss.keys.map((k) => `"${k}"`).join(', ')}; the kinds are ${RATE_LIMIT_KINDS.join(', ')}`
              : `must map ${RATE_LIMIT_KINDS.join(', ')} to limits such as 600/min`,
        },
      )
      .optional(),
    forward_headers: z
      .array(
        z.string().refine((h) => MEANING_CHANGING_HEADERS.has(h), {
          error: `forward_headers names only these (lower case): ${[...MEANING_CHANGING_HEADERS].join(', ')}`,
        }),
      )
      .min(1, { error: 'forward_headers: name at least one header' })
      .optional(),
  })
  .strict();

const fileSchema = z
  .object({
    version: z.literal(1, { error: 'version must be 1' }),
    routes: z.array(z.unknown()).min(1, { error: 'routes must list at least one rule' }),
  })
  .strict();

/** Path parameter names of a path template; validates each segment. @throws Error (message without index). */
function pathParams(path: string): string[] {
  const segments = path.split('/').slice(1);
  const params: string[] = [];
  segments.forEach((seg, i) => {
    if (seg === '*') {
      if (i !== segments.length - 1) throw new Error(`path ${path}: "*" is only allowed as the last segment ("/*")`);
      return;
    }
    if (seg === '' && !(segments.length === 1)) throw new Error(`path ${path}: empty segment (double or trailing "/")`);
    if (seg === '') return; // the root path "/"
    const m = PARAM.exec(seg);
    if (m) {
      const name = m[1]!;
      if (name === 'publisher') throw new Error(`path ${path}: {publisher} is reserved for the publisher context`);
      if (params.includes(name)) throw new Error(`path ${path}: parameter {${name}} appears twice`);
      params.push(name);
    } else if (!LITERAL_SEGMENT.test(seg)) {
      throw new Error(`path ${path}: segment "${seg}" must be a literal or a whole-segment {name} parameter`);
    }
  });
  return params;
}

/** The rule's shape key for duplicate detection: parameter names do not matter (/a/{x} = /a/{y}). */
function routeKey(method: string, path: string): string {
  return `${method} ${path.replace(/\{[^/}]*\}/g, '{}')}`;
}

/** Validate one parsed rule. @throws Error (message without the index). */
function checkRule(raw: unknown): RouteRule {
  const parsed = ruleSchema.safeParse(raw);
  if (!parsed.success) {
    throw new Error(parsed.error.issues.map((i) => (i.path.length ? `${i.path.join('.')}: ${i.message}` : i.message)).join('; '));
  }
  const rule = parsed.data;
  const params = pathParams(rule.path);
  const modes = [rule.public === true, rule.authenticated === true, rule.relation !== undefined || rule.object !== undefined];
  if (modes.filter(Boolean).length !== 1) {
    throw new Error('a rule must have exactly one of public: true, authenticated: true, or relation + object');
  }
  if ((rule.relation === undefined) !== (rule.object === undefined)) {
    throw new Error('relation and object must be given together');
  }
  // A limit that can never apply is a mistake in the file, not a no-op.
  if (rule.rate_limit && Object.keys(rule.rate_limit).length === 0) {
    throw new Error(`rate_limit: name at least one of ${RATE_LIMIT_KINDS.join(', ')}`);
  }
  if (rule.public && (rule.rate_limit?.subject || rule.rate_limit?.publisher)) {
    throw new Error('rate_limit: a public rule has no subject or publisher to limit (only ip)');
  }
  if (rule.authenticated && rule.rate_limit?.publisher) {
    throw new Error('rate_limit: an authenticated-only rule has no publisher to limit (only ip, subject)');
  }
  if (rule.object !== undefined && OBJECT_LITERAL.test(rule.object)) return rule;
  if (rule.object !== undefined) {
    const m = OBJECT_TEMPLATE.exec(rule.object);
    if (!m) throw new Error(`object "${rule.object}" must be a template <type>:{param} or a fixed object <type>:<id>`);
    const param = m[2]!;
    if (param !== 'publisher' && !params.includes(param)) {
      throw new Error(`object "${rule.object}" uses {${param}}, which is neither a path parameter nor {publisher}`);
    }
  }
  return rule;
}

/**
 * Parse and validate route rules from YAML text.
 * @param text the YAML (`version: 1`, `routes: [...]`).
 * @param source a name for error messages (a file path).
 * @returns the rules in file order.
 * @throws Error `<source>: routes[<index>] (<METHOD> <path>): <reason>` for a bad rule, including a
 *   duplicate method + path (parameter names ignored), or `<source>: <reason>` for a bad file.
 */
export function parseRouteRules(text: string, source = 'routes'): RouteRule[] {
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (err) {
    throw new Error(`${source}: invalid YAML: ${(err as Error).message}`, { cause: err });
  }
  const file = fileSchema.safeParse(doc);
  if (!file.success) {
    throw new Error(`${source}: ${file.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ')}`);
  }
  const seen = new Map<string, number>();
  return file.data.routes.map((raw, index) => {
    const label = describe(raw);
    try {
      const rule = checkRule(raw);
      const key = routeKey(rule.method, rule.path);
      const first = seen.get(key);
      if (first !== undefined) throw new Error(`duplicate of routes[${first}] (same method and path)`);
      seen.set(key, index);
      return rule;
    } catch (err) {
      throw new Error(`${source}: routes[${index}]${label}: ${(err as Error).message}`, { cause: err });
    }
  });
}

function describe(raw: unknown): string {
  if (raw && typeof raw === 'object') {
    const { method, path } = raw as { method?: unknown; path?: unknown };
    if (typeof method === 'string' && typeof path === 'string') return ` (${method} ${path})`;
  }
  return '';
}

/**
 * Load route rules from a YAML file (default policies/routes.yaml).
 * @throws Error as {@link parseRouteRules}, or when the file cannot be read.
 */
export function loadRouteRules(file: string = DEFAULT_ROUTES_FILE): RouteRule[] {
  return parseRouteRules(readFileSync(file, 'utf8'), file);
}

/**
 * Check that every relation + object rule names a type that exists in the model and a relation
 * defined on that type (so the sidecar never sends a Check that OpenFGA would reject with 400).
 * @throws Error listing every offending rule as `routes[<index>] (<METHOD> <path>): <reason>`.
 */
export function validateRoutesAgainstModel(rules: RouteRule[], model: Pick<ModelJson, 'type_definitions'>): void {
  const relations = new Map(model.type_definitions.map((t) => [t.type, new Set(Object.keys(t.relations ?? {}))]));
  const problems: string[] = [];
  rules.forEach((rule, index) => {
    if (rule.relation === undefined || rule.object === undefined) return;
    const type = rule.object.slice(0, rule.object.indexOf(':'));
    const rels = relations.get(type);
    const where = `routes[${index}] (${rule.method} ${rule.path})`;
    if (!rels) problems.push(`${where}: type "${type}" is not in the model`);
    else if (!rels.has(rule.relation)) problems.push(`${where}: type "${type}" has no relation "${rule.relation}"`);
  });
  if (problems.length) throw new Error(`route rules do not match the model:\n  ${problems.join('\n  ')}`);
}

/**
 * Path segments that are credentials (a route whose parameter is a secret, e.g. the invitation
 * token of `POST /api/v1/invitations/{token}/accept`): logs show `[redacted]` instead. Both the
 * sidecar and the catalog API pass every logged URL through {@link redactPath}.
 */
const CREDENTIAL_PATH = /^((?:\/ext-authz)?\/api\/v1\/invitations\/)[^/?#]+/;

/** `url` with credential path segments replaced by `[redacted]`. */
export function redactPath(url: string): string {
  return url.replace(CREDENTIAL_PATH, '$1[redacted]');
}

/**
 * Pino's request serializer for both services: method, URL through {@link redactPath}, host and
 * client address.
 */
export function loggedRequest(req: { method?: string; url?: string; headers?: Record<string, unknown>; ip?: string }) {
  const host = req.headers?.host;
  return { method: req.method, url: redactPath(req.url ?? ''), host: typeof host === 'string' ? host : undefined, remoteAddress: req.ip };
}

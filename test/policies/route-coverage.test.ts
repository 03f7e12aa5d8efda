/**
 * Route coverage (issue 10, "Route coverage"): the sidecar's route rules (policies/routes.yaml) and
 * the catalog API's routes describe the same API.
 *
 * - every operation of the catalog API's OpenAPI document (built from the routes, as
 *   `npm run openapi` builds docs/openapi.json) has a route rule that the sidecar's own matcher
 *   (sidecar/src/stages/route.ts) picks for it — with path parameters as the API takes them: a
 *   UUID, or a value of the parameter's documented `pattern` when a UUID does not fit it (OpenFGA
 *   model ids are ULIDs);
 * - a rule is public exactly when its operation says it needs no identity (`security: []`);
 * - every rule is the sidecar's pick for at least one operation, or for one of the routes the
 *   document hides from itself ({@link HIDDEN}, each with its reason) — no dead rule.
 */
import t from 'tap';
import { loadRouteRules, type RouteRule } from '../../policies/src/routes.ts';
import { compileRoutes } from '../../sidecar/src/stages/route.ts';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { renderOpenApi } from '../../scripts/openapi.ts';
import { buildCatalogApi } from '../../catalog-api/src/app.ts';
import { loadConfig } from '../../catalog-api/src/config.ts';
import { ensureKekFile } from '../../catalog-api/src/modules/auth/secrets.ts';

/** A path parameter value of each kind. */
const SAMPLE_UUID = '0b0c7a4e-52d2-4a86-9a65-3f3fbd5f8a11';
const SAMPLE_ULID = '01JCW8ZK3Q4N5R6S7T8V9WXYZA';

/**
 * Routes the catalog API serves but leaves out of its OpenAPI document, and what the sidecar does
 * with each: `public` = a public rule forwards it; `none` = no rule (the sidecar answers 404, or
 * answers the path itself), so it is not reachable through the sidecar.
 */
const HIDDEN: { method: string; path: string; rule: 'public' | 'none'; reason: string }[] = [
  { method: 'GET', path: '/api/v1/openapi.json', rule: 'public', reason: 'the document itself (hide: true in plugins/openapi.ts)' },
  { method: 'GET', path: '/docs', rule: 'public', reason: 'the Swagger UI (@fastify/swagger-ui hides its routes)' },
  { method: 'GET', path: '/docs/static/index.html', rule: 'public', reason: "the Swagger UI's files (/docs/*)" },
  { method: 'GET', path: '/explorer', rule: 'public', reason: "the access explorer's page (static, no data; modules/explorer)" },
  { method: 'GET', path: '/explorer/app.js', rule: 'public', reason: "the access explorer's static files (/explorer/*)" },
  { method: 'GET', path: '/healthz', rule: 'none', reason: 'the sidecar answers /healthz itself; the API\'s is for its own supervisor' },
  { method: 'GET', path: '/readyz', rule: 'none', reason: 'the sidecar answers /readyz itself' },
  { method: 'GET', path: '/metrics', rule: 'none', reason: 'scraped next to the API, never forwarded (docs/CONTRACTS.md, "Runtime and layout")' },
];

type Operation = { method: string; path: string; concrete: string; public: boolean };

/** The document's operations with a concrete request path each. */
function operations(doc: { paths: Record<string, Record<string, { security?: unknown[]; parameters?: { in: string; name: string; schema?: { pattern?: string } }[] }>> }): Operation[] {
  const out: Operation[] = [];
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(item)) {
      const concrete = path.replace(/\{([^}]+)\}/g, (_all, name: string) => {
        const pattern = op.parameters?.find((p) => p.in === 'path' && p.name === name)?.schema?.pattern;
        if (!pattern || new RegExp(pattern).test(SAMPLE_UUID)) return SAMPLE_UUID;
        if (new RegExp(pattern).test(SAMPLE_ULID)) return SAMPLE_ULID;
        throw new Error(`${method} ${path}: no sample value for {${name}} (pattern ${pattern})`);
      });
      out.push({ method: method.toUpperCase(), path, concrete, public: Array.isArray(op.security) && op.security.length === 0 });
    }
  }
  return out;
}

const ruleName = (r: RouteRule) => `${r.method} ${r.path}`;

t.test('every route has a rule and every rule a route', async (t) => {
  const { json } = await renderOpenApi();
  const ops = operations(JSON.parse(json));
  t.ok(ops.length >= 70, `${ops.length} operations in the document`);
  const rules = loadRouteRules();
  const matcher = compileRoutes(rules);
  const used = new Set<RouteRule>();

  for (const op of ops) {
    const m = matcher.match(op.method, op.concrete);
    if (!t.ok(m, `${op.method} ${op.path}: a route rule matches (${op.concrete})`)) continue;
    used.add(m!.rule);
    t.equal(m!.rule.public === true, op.public, `${op.method} ${op.path}: rule ${ruleName(m!.rule)} is ${m!.rule.public ? 'public' : 'not public'}, the operation's security says ${op.public ? 'none needed' : 'identity needed'}`);
  }

  for (const h of HIDDEN) {
    t.notOk(ops.some((op) => op.method === h.method && op.path === h.path), `${h.method} ${h.path} is hidden from the document (${h.reason})`);
    const m = matcher.match(h.method, h.path);
    if (h.rule === 'none') {
      t.notOk(m, `${h.method} ${h.path}: no rule (${h.reason})`);
    } else if (t.ok(m?.rule.public, `${h.method} ${h.path}: a public rule (${h.reason})`)) {
      used.add(m!.rule);
    }
  }

  const dead = rules.filter((r) => !used.has(r)).map(ruleName);
  t.same(dead, [], 'every rule is the pick for some route (a dead rule names a route that does not exist)');
});

t.test('the hidden routes are served by the catalog API (they are not stale entries)', async (t) => {
  // built as scripts/openapi.ts builds it: no service is contacted except where a route needs one
  const unused = 'postgres://nobody:unused@127.0.0.1:1/none';
  const dir = mkdtempSync(join(tmpdir(), 'route-coverage-'));
  const kek = join(dir, 'kek.key');
  ensureKekFile(kek);
  const config = loadConfig({ DATABASE_URL: unused, AUTH_DATABASE_URL: unused, JOBS_DATABASE_URL: unused, OUTBOX_RELAY: 'false', LOG_LEVEL: 'silent', ISSUER_KEK_FILE: kek, REDIS_URL: 'redis://127.0.0.1:1', DB_CONNECT_TIMEOUT_MS: '200' });
  const app = await buildCatalogApi(config, { logger: false, relationshipSink: null });
  t.teardown(async () => {
    await app.close();
    rmSync(dir, { recursive: true, force: true });
  });
  await app.ready();
  for (const h of HIDDEN) {
    const res = await app.inject({ method: h.method as 'GET', url: h.path });
    t.not(res.statusCode, 404, `${h.method} ${h.path} is a route of the API (${res.statusCode})`);
  }
});

t.test('a rule is a pick only for the routes it was written for: the check finds a gap and a dead rule', async (t) => {
  // the same check on a hand-made pair, so the test above cannot pass vacuously
  const rules: RouteRule[] = [
    { method: 'GET', path: '/api/v1/works', relation: 'works_read', object: 'publisher:{publisher}' } as RouteRule,
    { method: 'GET', path: '/api/v1/gone', authenticated: true } as RouteRule,
  ];
  const matcher = compileRoutes(rules);
  const ops = operations({ paths: { '/api/v1/works': { get: {} }, '/api/v1/works/{id}': { get: {} } } });
  const picks = ops.map((op) => matcher.match(op.method, op.concrete)?.rule);
  t.same(picks.map((r) => r && ruleName(r)), ['GET /api/v1/works', undefined], 'GET /api/v1/works/{id} has no rule');
  t.same(rules.filter((r) => !picks.includes(r)).map(ruleName), ['GET /api/v1/gone'], 'GET /api/v1/gone is dead');
});

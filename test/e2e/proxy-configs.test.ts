/**
 * The shipped Envoy (examples/envoy/envoy.yaml) and Traefik (examples/traefik/) configurations,
 * checked as far as the tools here allow — neither proxy is packaged for Debian (nginx is run for
 * real by test/e2e/nginx.test.ts):
 * - Envoy: tools/envoy-validate decodes the file strictly into Envoy's API types (go-control-plane)
 *   and applies their validation rules; it must also refuse broken copies (so it can fail);
 * - both: the fields the ext_authz contract depends on (docs/CONTRACTS.md, "ext_authz"): the
 *   endpoint, fail-closed, the filter/middleware order, every spoofable header the sidecar strips
 *   on its own proxy route removed before the decision, the credentials removed after it, no retries;
 * - both: a real sidecar (OpenFGA, Redis) is asked exactly as each proxy asks — built from the
 *   configuration's own header lists — and its answers must fit those lists: the headers the
 *   catalog API needs are among those passed upstream, the ones of a refusal among those passed to
 *   the client.
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { parse } from 'yaml';
import { raw, useSidecarFixture, ROOT, tempDir } from '../sidecar/helpers.ts';
import { IDENTITY_HEADERS, MEANING_CHANGING_HEADERS } from '../../sidecar/src/stages/mutate-headers.ts';
import { EXT_AUTHZ } from '../../sidecar/src/stages/ext-authz-target.ts';
import { TYPE } from '../support/demo-ids.ts';

const ENVOY_FILE = join(ROOT, 'examples/envoy/envoy.yaml');
const TRAEFIK_STATIC = join(ROOT, 'examples/traefik/traefik.yml');
const TRAEFIK_DYNAMIC = join(ROOT, 'examples/traefik/dynamic.yml');

/** What the sidecar's /ext-authz answers an allowed request with, for the upstream (CONTRACTS "ext_authz"). */
const UPSTREAM_HEADERS = ['x-identity-assertion', 'x-publisher-id', 'x-request-id'];
/** The client's headers that must never reach the catalog API and that the sidecar does not need. */
const SPOOFABLE = [...[...IDENTITY_HEADERS].filter((h) => h !== 'authorization'), ...MEANING_CHANGING_HEADERS, 'x-original-method', 'x-original-uri', 'x-forwarded-method', 'x-forwarded-uri'];
/** What the proxy must drop after the decision: the sidecar read them, the catalog API must not. */
const CREDENTIALS = ['authorization', 'x-tenant-id'];
/** Response headers every HTTP answer has, which no proxy list needs to name. */
const FRAMING = new Set(['content-length', 'date', 'connection', 'keep-alive', 'transfer-encoding']);

const user = randomUUID();
const publisher = randomUUID();
const fx = useSidecarFixture(t, { tuples: [{ user: `user:${user}`, relation: 'viewer', object: `publisher:${publisher}` }] });

// --- Envoy -------------------------------------------------------------------------------------
const envoy = parse(readFileSync(ENVOY_FILE, 'utf8'));
type Matcher = { exact?: string; prefix?: string };
/** Envoy's StringMatcher (the exact/prefix forms the example uses; header names are lower case). */
const matches = (patterns: Matcher[], name: string) => patterns.some((p) => (p.exact !== undefined ? p.exact === name : p.prefix !== undefined && name.startsWith(p.prefix)));
const hcm = envoy.static_resources.listeners[0].filter_chains[0].filters.find((f: any) => f.name === 'envoy.filters.network.http_connection_manager').typed_config;
const httpFilters: any[] = hcm.http_filters;
const typeOf = (f: any) => String(f.typed_config['@type']).split('.').at(-1);
const extAuthz = httpFilters.find((f) => typeOf(f) === 'ExtAuthz').typed_config;
const removed = (f: any) => {
  const m: any[] = f.typed_config.mutations.request_mutations;
  return { names: m.filter((x) => x.remove).map((x) => x.remove as string), prefixes: m.filter((x) => x.remove_on_match).map((x) => x.remove_on_match.key_matcher.prefix as string) };
};

function envoyValidate(...files: string[]) {
  const bin = process.env.ENVOY_VALIDATE_BIN;
  const r = bin
    ? spawnSync(bin, files, { encoding: 'utf8' })
    : spawnSync('bash', ['-c', `source "${ROOT}/scripts/lib.sh" && "$(ensure_envoy_validate_bin)" "$@"`, 'envoy-validate', ...files], { encoding: 'utf8' });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

t.test('Envoy: the configuration is valid against Envoy’s API (and the checker refuses broken ones)', async (t) => {
  const ok = envoyValidate(ENVOY_FILE);
  t.equal(ok.status, 0, ok.out);
  t.match(ok.out, /^ok .*envoy\.yaml$/m);
  const tmp = tempDir();
  t.teardown(() => tmp.cleanup());
  const text = readFileSync(ENVOY_FILE, 'utf8');
  const broken: [string, string, RegExp][] = [
    ['unknown field', text.replace('normalize_path: false', 'normalise_path: false'), /unknown field "normalise_path"/],
    ['out-of-range value', text.replace('timeout: 3s', 'timeout: -3s'), /HttpUri\.Timeout: value must be inside range/],
    ['unknown enum value', text.replace('KEEP_UNCHANGED', 'KEEP_AS_IS'), /invalid value for enum/],
    ['deprecated field', text.replace('path_prefix: /ext-authz\n', 'path_prefix: /ext-authz\n                        authorization_request: { allowed_headers: { patterns: [{ exact: x-a }] } }\n'), /allowed_headers: deprecated/],
    ['unknown typed_config', text.replace('header_mutation.v3.HeaderMutation', 'header_mutation.v3.HeaderMutations'), /typed_config|unable to resolve/],
  ];
  for (const [name, body, why] of broken) {
    t.not(body, text, `${name}: the copy differs`);
    const f = join(tmp.dir, `${name.replace(/\W+/g, '-')}.yaml`);
    writeFileSync(f, body);
    const r = envoyValidate(f);
    t.equal(r.status, 1, `${name} → refused`);
    t.match(r.out, why, `${name}: says why`);
  }
});

t.test('Envoy: the fields the ext_authz contract depends on', async (t) => {
  t.same(
    httpFilters.map((f) => f.name),
    ['strip-client-identity', 'envoy.filters.http.ext_authz', 'strip-credentials', 'envoy.filters.http.router'],
    'strip the client’s identity → decide → strip the credentials → route',
  );
  const strip = removed(httpFilters[0]);
  for (const h of SPOOFABLE) t.ok(strip.names.includes(h) || strip.prefixes.some((p) => h.startsWith(p)), `${h} is removed before the decision`);
  t.ok(strip.prefixes.includes('x-auth-'), 'the whole X-Auth-* family too');
  for (const h of [...CREDENTIALS, 'x-publisher-id', 'x-request-id']) t.notOk(strip.names.includes(h), `${h} still reaches the sidecar`);
  t.same(removed(httpFilters[2]).names.sort(), [...CREDENTIALS].sort(), 'the credentials are removed after the decision');

  t.equal(extAuthz.failure_mode_allow, false, 'fail closed');
  t.same(extAuthz.status_on_error, { code: 'ServiceUnavailable' }, 'the sidecar unreachable → 503');
  t.notOk(extAuthz.with_request_body, 'the body never goes to the sidecar');
  t.equal(extAuthz.http_service.path_prefix, EXT_AUTHZ, 'HTTP-service mode on the sidecar’s path prefix');
  const clusters = envoy.static_resources.clusters.map((c: any) => c.name);
  t.ok(clusters.includes(extAuthz.http_service.server_uri.cluster), 'the sidecar’s cluster exists');
  for (const h of ['x-publisher-id', 'x-tenant-id']) t.ok(matches(extAuthz.allowed_headers.patterns, h), `${h} goes to the sidecar`);
  for (const h of UPSTREAM_HEADERS) t.ok(matches(extAuthz.http_service.authorization_response.allowed_upstream_headers.patterns, h), `${h} of the answer goes upstream`);

  t.equal(hcm.normalize_path, false, 'no path normalisation: the upstream gets the target the sidecar decided on');
  t.equal(hcm.merge_slashes, false);
  t.equal(hcm.path_with_escaped_slashes_action, 'KEEP_UNCHANGED');
  t.equal(hcm.use_remote_address, true, 'the edge: X-Forwarded-For is the peer');
  t.equal(hcm.common_http_protocol_options.headers_with_underscores_action, 'REJECT_REQUEST');
  const routes = hcm.route_config.virtual_hosts.flatMap((v: any) => v.routes);
  for (const r of routes) {
    t.ok(clusters.includes(r.route.cluster), `route ${JSON.stringify(r.match)} → an existing cluster`);
    t.notOk(r.route.retry_policy, 'no retries (an assertion is accepted once)');
  }
});

// --- Traefik -----------------------------------------------------------------------------------
const traefikStatic = parse(readFileSync(TRAEFIK_STATIC, 'utf8'));
const traefik = parse(readFileSync(TRAEFIK_DYNAMIC, 'utf8')).http;
const forwardAuth = traefik.middlewares['sidecar-ext-authz'].forwardAuth;
/** forwardAuth's options in Traefik v3.7 (the fields of its dynamic.ForwardAuth). */
const FORWARD_AUTH_OPTIONS = ['address', 'tls', 'trustForwardHeader', 'authResponseHeaders', 'authResponseHeadersRegex', 'authRequestHeaders', 'maxResponseBodySize', 'addAuthCookiesToResponse', 'headerField', 'forwardBody', 'maxBodySize', 'preserveLocationHeader', 'preserveRequestMethod', 'authSigninURL'];
const lower = (xs: string[]) => xs.map((x) => x.toLowerCase());
const clearedBy = (name: string) => {
  const h = traefik.middlewares[name].headers.customRequestHeaders as Record<string, string>;
  return Object.entries(h).filter(([, v]) => v === '').map(([k]) => k.toLowerCase());
};

t.test('Traefik: the fields the ext_authz contract depends on', async (t) => {
  t.equal(traefikStatic.providers.file.filename, 'dynamic.yml', 'the static configuration loads the dynamic one');
  t.equal(traefikStatic.entryPoints.web.forwardedHeaders.insecure, false, 'the client’s X-Forwarded-* are not believed');
  for (const [name, router] of Object.entries<any>(traefik.routers)) {
    t.same(router.middlewares, ['strip-client-identity', 'sidecar-ext-authz', 'strip-credentials'], `${name}: strip → decide → strip the credentials`);
    t.ok(traefik.services[router.service], `${name}: its service exists`);
    for (const ep of router.entryPoints) t.ok(traefikStatic.entryPoints[ep], `${name}: entry point ${ep} exists`);
  }
  for (const m of Object.values<any>(traefik.middlewares)) t.notOk(m.retry, 'no retry middleware (an assertion is accepted once)');
  const cleared = clearedBy('strip-client-identity');
  for (const h of SPOOFABLE) t.ok(cleared.includes(h), `${h} is removed before the decision`);
  for (const h of [...CREDENTIALS, 'x-publisher-id', 'x-request-id']) t.notOk(cleared.includes(h), `${h} still reaches the sidecar`);
  t.same(clearedBy('strip-credentials').sort(), [...CREDENTIALS].sort(), 'the credentials are removed after the decision');

  for (const k of Object.keys(forwardAuth)) t.ok(FORWARD_AUTH_OPTIONS.includes(k), `forwardAuth.${k} is a Traefik option`);
  t.equal(new URL(forwardAuth.address).pathname, EXT_AUTHZ, 'header mode on /ext-authz');
  t.equal(forwardAuth.trustForwardHeader, false, 'Traefik overwrites the client’s X-Forwarded-Method/-Uri');
  t.notOk(forwardAuth.forwardBody, 'the body never goes to the sidecar');
  for (const h of ['authorization', 'x-publisher-id', 'x-tenant-id']) t.ok(lower(forwardAuth.authRequestHeaders).includes(h), `${h} goes to the sidecar`);
  for (const h of UPSTREAM_HEADERS) t.ok(lower(forwardAuth.authResponseHeaders).includes(h), `${h} of the answer goes upstream`);
});

// --- the sidecar, asked as each proxy asks -----------------------------------------------------
/** The client request both proxies receive. */
const clientHeaders = async (publisherId: string): Promise<Record<string, string>> => ({
  authorization: `Bearer ${await fx.issuer.token(user)}`,
  'x-publisher-id': publisherId,
  'x-request-id': 'edge-test-1',
  'user-agent': 'edge-test',
  cookie: 'session=never-sent',
  'x-user-id': randomUUID(),
});
const pick = (headers: Record<string, string>, allowed: (name: string) => boolean) => Object.fromEntries(Object.entries(headers).filter(([k]) => allowed(k)));

t.test('the sidecar asked as Envoy asks: its answers fit the configuration’s lists', async (t) => {
  const ask = async (publisherId: string, target: string) => {
    const client = await clientHeaders(publisherId);
    // Envoy always sends Host, Method, Path, Content-Length and Authorization, plus allowed_headers
    const headers = pick(client, (k) => k === 'authorization' || matches(extAuthz.allowed_headers.patterns, k));
    return raw(fx.sidecar.port, 'GET', `${extAuthz.http_service.path_prefix}${target}`, headers);
  };
  const before = fx.upstream.received.length;
  const allowed = await ask(publisher, '/api/v1/works?limit=1');
  t.equal(allowed.status, 200);
  const resp = extAuthz.http_service.authorization_response;
  for (const h of UPSTREAM_HEADERS) {
    t.ok(allowed.headers[h], `the sidecar answers ${h}`);
    t.ok(matches(resp.allowed_upstream_headers.patterns, h), `… and Envoy passes it upstream`);
  }
  t.equal(allowed.headers['x-request-id'], 'edge-test-1', 'the request id Envoy sent');
  for (const [status, got] of [
    [403, await ask(randomUUID(), '/api/v1/works')],
    [401, await raw(fx.sidecar.port, 'GET', `${EXT_AUTHZ}/api/v1/works`, { 'x-publisher-id': publisher })],
    [400, await ask(publisher, '/api/v1/works/%2e%2e/users')],
  ] as const) {
    t.equal(got.status, status, `refused: ${status}`);
    t.equal(got.json().status, status);
    for (const h of Object.keys(got.headers).filter((h) => !FRAMING.has(h))) t.ok(matches(resp.allowed_client_headers.patterns, h), `${status}: Envoy passes ${h} to the client`);
  }
  t.equal(fx.upstream.received.length, before, '/ext-authz never forwards');
});

t.test('the sidecar asked as Traefik asks: its answers fit the configuration’s lists', async (t) => {
  const ask = async (publisherId: string, method: string, target: string) => {
    const client = await clientHeaders(publisherId);
    const wanted = lower(forwardAuth.authRequestHeaders);
    // forwardAuth: GET <address>, the listed client headers, and the X-Forwarded-* it sets itself
    return raw(fx.sidecar.port, 'GET', new URL(forwardAuth.address).pathname, {
      ...pick(client, (k) => wanted.includes(k)),
      'x-forwarded-method': method,
      'x-forwarded-uri': target,
      'x-forwarded-proto': 'http',
      'x-forwarded-host': 'edge.example',
      'x-forwarded-for': '192.0.2.10',
    });
  };
  const allowed = await ask(publisher, 'GET', '/api/v1/works?limit=1');
  t.equal(allowed.status, 200);
  for (const h of UPSTREAM_HEADERS) t.ok(allowed.headers[h] && lower(forwardAuth.authResponseHeaders).includes(h), `the sidecar answers ${h} and Traefik passes it upstream`);
  const write = await ask(publisher, 'POST', '/api/v1/works');
  t.equal(write.status, 403, 'the original method decides (Traefik’s auth request is always a GET)');
  t.equal(write.json().type, TYPE('forbidden'));
  const other = await ask(randomUUID(), 'GET', '/api/v1/works');
  t.equal(other.status, 403);
  t.match(String(other.headers['content-type']), /^application\/problem\+json/, 'Traefik hands the problem+json to the client as it is');
});

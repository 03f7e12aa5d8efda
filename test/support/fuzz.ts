/**
 * Property-based fuzzing of the sidecar (issue 9 §4), shared by the test command
 * (test/sidecar/fuzz.test.ts, a few thousand cases) and the bench mode (bench/fuzz.bench.ts,
 * `npm run bench -- fuzz`, 100,000 cases per transport).
 *
 * What is fuzzed (fast-check arbitraries below): raw request targets (dot segments, encoded
 * slashes and dots, %00, overlong UTF-8, `//`, backslashes, `;`, very long, raw unicode, absolute
 * and asterisk form), header sets (duplicates, odd casing, spoofed X-Identity-Assertion /
 * X-Publisher-Id / X-Original-URI / method overrides / X-Forwarded-*, oversize) and access tokens
 * (valid tokens with header/payload/signature bit flips, `alg` swaps, truncation, re-ordered
 * segments, garbage, correctly signed tokens with bad claims or a foreign key), on the proxy path
 * and on `/ext-authz` (Envoy path-prefix and nginx header mode).
 *
 * Where they go: the real pipeline of a sidecar built with `buildSidecar` against real OpenFGA and
 * Redis and a recording upstream, through two transports —
 * - `inject`: in process, light-my-request (Fastify's inject library) straight into the server's
 *   request listener with the raw target put back on `req.url` (Fastify's `app.inject` would
 *   normalise it through the WHATWG URL parser);
 * - `http`: a sidecar child process (sidecar/src/main.ts) over raw TCP sockets (node:net), so the
 *   request line and header bytes are exactly what the case says and Node's own parser runs.
 *
 * Invariants checked for every case ({@link checkCase}):
 * 1. no 5xx: with healthy dependencies none of the documented 502/503/504 applies; every answer
 *    arrives (no hang) and errors are `application/problem+json`;
 * 2. a target that {@link isUnambiguousTarget} refuses is answered 400 and never reaches the
 *    upstream; one it accepts is never refused as `non-canonical-path`;
 * 3. the upstream is called only when {@link forwardPermitted} (the route-rule / token / publisher
 *    context / OpenFGA model of the fixture, written out from docs/CONTRACTS.md) allows it, at
 *    most once, with exactly the raw target and method, the sidecar's own identity assertion
 *    (verified with its JWKS; `sub`, `htm`, `htu` right) and none of the client's identity,
 *    method/path-override or X-Forwarded-* headers;
 * 4. a "good" case (an allowed route, a valid token, a clean context, and only noise the sidecar
 *    must strip) reaches the upstream with its exact target and answers 200;
 * 5. `/ext-authz` never calls the upstream, and says 200 only when the original request would
 *    have been forwarded;
 * 6. no crash: the child is alive and `/healthz` answers 200 after the run (and the in-process
 *    run has no unhandled rejection — tap fails on one).
 * A failure reports fast-check's seed and path (replay: FUZZ_SEED, FUZZ_PATH) and the case.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { connect } from 'node:net';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { IncomingMessage, ServerResponse } from 'node:http';
import fc from 'fast-check';
import inject from 'light-my-request';
import { Redis } from 'ioredis';
import { SignJWT, base64url, createLocalJWKSet, exportPKCS8, generateKeyPair, jwtVerify, type JSONWebKeySet, type JWTVerifyGetKey } from 'jose';
import type { FastifyInstance } from 'fastify';
import { RelationshipWriter } from '../../policies/src/relationships.ts';
import { AUDIENCE, ISSUER, OPENFGA_API_URL, REDIS_URL, ROOT, createIssuer, createTestStore, startSidecar, startUpstream, type Issuer, type Sidecar, type TestStore, type Upstream } from '../sidecar/helpers.ts';
import { freePort, waitHttp } from './http.ts';

// ---------------------------------------------------------------------------------------------
// The fixture's world: one user who is a viewer at one publisher, one work of that publisher,
// another user with no relationship at all.

/** The route rules the fuzzed sidecars run with (no `/slow/*`: a fuzzed target must not stall the upstream). */
export const FUZZ_ROUTES = `version: 1
routes:
  - { method: GET, path: /docs/*, public: true }
  - { method: GET, path: /api/v1/users/me, authenticated: true }
  - { method: GET, path: /api/v1/works, relation: works_read, object: "publisher:{publisher}" }
  - { method: POST, path: /api/v1/works, relation: works_create, object: "publisher:{publisher}" }
  - { method: GET, path: "/api/v1/works/{id}", relation: can_read, object: "work:{id}" }
  - { method: DELETE, path: "/api/v1/works/{id}", relation: can_delete, object: "work:{id}" }
`;

/** Ids of the fixture's world (fresh per fixture). */
export type World = { user: string; stranger: string; publisher: string; work: string };

/** Access tokens of the fixture, made once (signing per case would dominate the run time). */
export type TokenPool = {
  /** Genuine tokens and their subject. */
  valid: { token: string; sub: string }[];
  /** Correctly formed, but each must be refused (bad claims, foreign key, `alg: none` …). */
  refused: string[];
  /** A forged identity assertion (the attacker's key) for spoofing X-Identity-Assertion. */
  forgedAssertion: string;
};

// ---------------------------------------------------------------------------------------------
// The target oracle: written from RFC 3986 / RFC 9112 and the WHATWG URL reading, not from
// sidecar/src/stages/canonical-path.ts, so the two can disagree (and the fuzzer says so).

const UNRESERVED = /^[A-Za-z0-9\-._~]$/;

/**
 * Whether every reader of `target` — the sidecar's byte-exact route matching, a percent-decoding
 * router, the WHATWG URL parser, a server that merges slashes or strips `;` parameters — sees the
 * same path, so a decision on the raw bytes is a decision on what the upstream will serve.
 * True when: origin-form; visible ASCII only (RFC 9112 §3.2, RFC 3986 §2); no `#`, no `\`; in the
 * path no `;`, no empty segment except a trailing one, every %-escape well-formed and the decoded
 * bytes valid UTF-8 (RFC 3629: overlong forms are invalid), no decoded segment `.`/`..` or one
 * holding `/`, `\` or a control character, no %-encoded unreserved character (RFC 3986 §6.2.2.2:
 * equivalent to its decoded form, so another route for a normalising reader); the WHATWG reading
 * of the path decodes to the same segments; in the query every %-escape well-formed.
 * @param target the raw request target as the server receives it.
 */
export function isUnambiguousTarget(target: string): boolean {
  if (!target.startsWith('/')) return false;
  if (!/^[\x21-\x7e]+$/.test(target)) return false;
  if (target.includes('#') || target.includes('\\')) return false;
  const q = target.indexOf('?');
  const path = q === -1 ? target : target.slice(0, q);
  const query = q === -1 ? '' : target.slice(q + 1);
  if (/%(?![0-9A-Fa-f]{2})/.test(query)) return false;
  if (path.includes(';')) return false;
  const raw = path.split('/').slice(1);
  let decoded: string[];
  try {
    decoded = raw.map((s) => decodeURIComponent(s));
  } catch {
    return false; // a malformed escape, or bytes that are not UTF-8 (overlong forms included)
  }
  for (let i = 0; i < raw.length; i++) {
    const d = decoded[i]!;
    if (d === '' && i !== raw.length - 1) return false;
    if (d === '.' || d === '..') return false;
    if (/[/\\\x00-\x1f\x7f]/.test(d)) return false;
    for (const m of raw[i]!.matchAll(/%([0-9A-Fa-f]{2})/g)) if (UNRESERVED.test(String.fromCharCode(Number.parseInt(m[1]!, 16)))) return false;
  }
  let whatwg: string;
  try {
    whatwg = new URL(`http://h${path}`).pathname;
  } catch {
    return false;
  }
  try {
    return whatwg.split('/').slice(1).map((s) => decodeURIComponent(s)).join('/') === decoded.join('/');
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------------------------
// The forwarding model: when may a request reach the upstream (docs/CONTRACTS.md "Route rules",
// "Access token", "Publisher context"; policies/model.fga for the fixture's tuples)?

/** A header list as the server sees it: names as sent (any case), values after OWS trimming. */
export type HeaderList = [string, string][];

const values = (headers: HeaderList, name: string): string[] => headers.filter(([n]) => n.toLowerCase() === name).map(([, v]) => v);

/** Decoded bytes of a compact JWS's three segments, as one comparable key ('' when not a 3-segment JWS). */
function credentialKey(token: string): string {
  const parts = token.split('.');
  if (parts.length !== 3) return '';
  return parts.map((p) => Buffer.from(p, 'base64url').toString('hex')).join('.');
}

/**
 * The subject of the genuine credential in `headers`, or null: exactly one Authorization field,
 * RFC 6750 §2.1 syntax (`Bearer`, any case, then spaces and a b64token), whose token decodes to
 * the same bytes as one of the pool's valid tokens (an encoding that decodes to the same bytes is
 * the same credential).
 */
export function genuineSubject(pool: TokenPool, headers: HeaderList): string | null {
  const auth = values(headers, 'authorization');
  if (auth.length !== 1) return null;
  const m = /^bearer +([A-Za-z0-9\-._~+/]+=*) *$/i.exec(auth[0]!);
  if (!m) return null;
  const key = credentialKey(m[1]!);
  return pool.valid.find((v) => key !== '' && credentialKey(v.token) === key)?.sub ?? null;
}

/** The publisher context the headers give: a lower-case UUID, undefined (none) or 'invalid'. */
export function publisherContext(headers: HeaderList): string | undefined | 'invalid' {
  const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
  const one = (name: string): string | undefined | 'invalid' => {
    const v = values(headers, name);
    if (v.length === 0) return undefined;
    if (v.length > 1 || !uuid.test(v[0]!.trim())) return 'invalid';
    return v[0]!.trim().toLowerCase();
  };
  const p = one('x-publisher-id');
  const t = one('x-tenant-id');
  if (p === 'invalid' || t === 'invalid') return 'invalid';
  if (p && t && p !== t) return 'invalid';
  return p ?? t;
}

/**
 * Whether the fixture's sidecar may forward `method target` with `headers` (or, for /ext-authz,
 * answer 200 for it): a canonical target, then the route rule — public → yes; otherwise one
 * genuine bearer token; authenticated-only → yes; otherwise a valid publisher context and the
 * model's answer (the user is a viewer at the publisher: works_read there, can_read on its work;
 * nothing for the stranger, no create or delete for anyone).
 */
export function forwardPermitted(world: World, pool: TokenPool, method: string, target: string, headers: HeaderList): boolean {
  if (!isUnambiguousTarget(target)) return false;
  if (values(headers, 'authorization').length > 1) return false; // ambiguous credentials: 400 whatever the route
  const m = method === 'HEAD' ? 'GET' : method;
  const path = target.split('?')[0]!;
  if (m === 'GET' && path.startsWith('/docs/')) return true;
  const sub = genuineSubject(pool, headers);
  if (!sub) return false;
  if (m === 'GET' && path === '/api/v1/users/me') return true;
  const ctx = publisherContext(headers);
  if (ctx === 'invalid' || sub !== world.user || m !== 'GET') return false;
  if (path === '/api/v1/works') return ctx === world.publisher;
  const id = /^\/api\/v1\/works\/([0-9a-fA-F-]{36})$/.exec(path)?.[1]?.toLowerCase();
  return id === world.work;
}

// ---------------------------------------------------------------------------------------------
// Arbitraries

/** One fuzz case: what is sent, and which family made it (`good` ones must be forwarded). */
export type FuzzCase = { family: 'target' | 'headers' | 'token' | 'ext-authz' | 'good'; method: string; target: string; headers: HeaderList };

/** Options of {@link caseArb}: `http` keeps to what can be written on a socket (no CR/LF in the target). */
export type CaseOptions = { http: boolean };

const SEGMENT_CHARS = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&\'()*+,=:@';
/** A path segment a browser would send unchanged, with some %-escapes of reserved or non-ASCII characters. */
const cleanSegment = fc.oneof(
  { weight: 6, arbitrary: fc.string({ unit: fc.constantFrom(...SEGMENT_CHARS), minLength: 1, maxLength: 12 }).filter((s) => s !== '.' && s !== '..') },
  { weight: 1, arbitrary: fc.constantFrom('caf%C3%A9', 'a%20b', '%3F', '%23', '%25', '%3B', '%7B%7D', 'x%E2%82%AC', 'index.html', 'v1.2', '..a', '.hidden') },
);
/** A query string (without `?`): anything visible but `#`, `\` and a bare `%`, including escapes that decode to / and .. */
const cleanQuery = fc.oneof(
  fc.webQueryParameters(),
  fc.constantFrom('x=%2F', 'next=/../admin', 'a=1&a=2', 'p=%2e%2e%2f', 'q=;', 'u=http://x/y', 'e=%C0%AF', 'limit=1', ''),
);

/** Targets the fixture allows the user (with a valid token and its publisher). */
function allowedTarget(world: World) {
  return fc.tuple(
    fc.oneof(
      fc.constant('/api/v1/works'),
      fc.constantFrom(world.work, world.work.toUpperCase()).map((w) => `/api/v1/works/${w}`),
      fc.constant('/api/v1/users/me'),
      fc.array(cleanSegment, { minLength: 0, maxLength: 5 }).map((s) => `/docs/${s.join('/')}`),
      fc.integer({ min: 1000, max: 7000 }).map((n) => `/docs/${'a'.repeat(n)}`), // long, under the upstream's header limit
    ),
    fc.option(cleanQuery, { freq: 3 }), // fast-check: nil one time in `freq`
  ).map(([p, q]) => (q === null ? p : `${p}?${q}`));
}

/** Any route of the fixture (or none), any UUID. */
const anyPath = (world: World) =>
  fc.oneof(
    fc.constantFrom('/api/v1/works', '/api/v1/users/me', `/api/v1/works/${world.work}`, '/docs/index.html', '/docs/', '/docs', '/', '/api/v1/works/', '/API/V1/WORKS', '/healthz', '/metrics', '/readyz'),
    fc.uuid().map((u) => `/api/v1/works/${u}`),
    fc.webPath(),
  );

/** Pieces that make a target non-canonical (or at least suspicious) for some reader. */
const TRICKS = [
  '/.', '/..', '/./', '/../', '/%2e', '/%2E%2e', '/.%2e', '/%2e%2e/', '//', '///', '%2F', '%2f', '%5C', '%5c', '\\', '/\\', '%00', '%0a', '%0D%0A', '%09', '%7f',
  ';', ';x', ';jsessionid=1', '%C0%AF', '%C0%AE', '%C0%AE%C0%AE%C0%AF', '%E0%80%AF', '%C1%9C', '%F0%80%80%AF', '%ED%A0%80', '%FF', '%', '%z1', '%4', '%%32%65',
  '%252e%252e%252f', '#frag', '?#', ' ', '\t', '\x00', '\x7f', '\u00e9', '\u202e', '\u{1F600}', '\uFF0F', '\u2215', '\uFE68', '%41', '%7e', '%2D', '%5F', '%30',
];

function trickyTarget(world: World, o: CaseOptions) {
  const insert = fc.tuple(anyPath(world), fc.array(fc.tuple(fc.constantFrom(...TRICKS), fc.nat()), { minLength: 1, maxLength: 3 })).map(([path, tricks]) => {
    let t = path;
    for (const [trick, at] of tricks) {
      const cut = 1 + (at % Math.max(1, t.length));
      t = t.slice(0, cut) + trick + t.slice(cut);
    }
    return t;
  });
  const whole = fc.constantFrom(
    '*', '', 'http://evil.example/api/v1/works', 'https://127.0.0.1/docs/x', '127.0.0.1:80', '//evil.example/docs/x', '/docs/..', '/docs/.',
    '/docs/%2e%2e/api/v1/works', '/docs/..%2fapi/v1/works', '/docs/%2e%2e%2fapi%2fv1%2fworks', '/docs/%c0%ae%c0%ae/api/v1/works', '/api/v1/works%00',
    '/api/v1/%77orks', '/api/v1/works/..;/users/me', '/docs/x/../../api/v1/works', '/docs\\..\\api\\v1\\works', '/docs/%5c..%5capi/v1/works',
  );
  const random = fc.oneof(
    fc.string({ unit: 'binary', maxLength: 40 }).map((s) => `/${s}`),
    fc.string({ unit: 'binary-ascii', maxLength: 60 }).map((s) => `/docs/${s}`),
    fc.string({ unit: fc.constantFrom('/', '.', '%', '2', 'e', 'E', 'f', 'F', '5', 'c', 'C', '0', ';', '\\', 'a', '?', '#'), maxLength: 24 }).map((s) => `/docs/${s}`),
    fc.webUrl(),
    fc.integer({ min: 17_000, max: 40_000 }).map((n) => `/docs/${'b'.repeat(n)}`), // over every header limit
  );
  const arb = fc.oneof({ weight: 5, arbitrary: insert }, { weight: 2, arbitrary: whole }, { weight: 3, arbitrary: random });
  // on a socket: no CR/LF (they would end the request line), no spaces at either end (the parser
  // reads the request line's separators leniently, so the server would see another target)
  return o.http ? arb.map((t) => t.replace(/[\r\n]/g, '').replace(/^[ \t]+|[ \t]+$/g, '')) : arb;
}

/** Header-name casing a client may use (Node lower-cases them; the raw list keeps them). */
const casing = (name: string) => fc.mixedCase(fc.constant(name));
/** A field value an HTTP/1.1 parser delivers: tab, visible ASCII, space, obs-text; no CR, LF, NUL. */
const fieldValue = (max = 40) => fc.string({ unit: fc.oneof(fc.constantFrom('\t'), fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)), fc.integer({ min: 0x80, max: 0xff }).map((c) => String.fromCharCode(c))), maxLength: max }).map((v) => v.replace(/^[ \t]+|[ \t]+$/g, ''));
const TOKEN_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+-.^_`|~";
/** Header names no noise may use: framing (a case must not make the server wait for a body), Host, and the ones the cases set on purpose. */
const RESERVED_NAMES = new Set(['host', 'content-length', 'transfer-encoding', 'expect', 'upgrade', 'connection', 'te', 'trailer', 'authorization', 'x-publisher-id', 'x-tenant-id', 'x-original-uri', 'x-original-method', 'x-forwarded-uri', 'x-forwarded-method', 'http2-settings']);
const noiseHeader = fc.tuple(fc.string({ unit: fc.constantFrom(...TOKEN_CHARS), minLength: 1, maxLength: 16 }).filter((n) => !RESERVED_NAMES.has(n)), fieldValue());

/** Headers the sidecar must strip (or replace) before forwarding, with spoofed values. */
function spoofHeaders(world: World, pool: TokenPool) {
  return fc.subarray<[string, fc.Arbitrary<string>]>([
    ['X-Identity-Assertion', fc.constantFrom(pool.forgedAssertion, 'eyJhbGciOiJub25lIn0.e30.')],
    ['X-User-Id', fc.constantFrom(world.user, randomUUID())],
    ['X-User-Email', fc.constant('admin@example.com')],
    ['X-Forwarded-User', fc.constant('admin')],
    ['X-Remote-User', fc.constant('admin')],
    ['X-Auth-Request-User', fc.constant('admin')],
    ['X-Auth-Subject', fc.constant(world.user)],
    ['X-HTTP-Method-Override', fc.constantFrom('DELETE', 'PUT', 'POST')],
    ['X-HTTP-Method', fc.constant('DELETE')],
    ['X-Method-Override', fc.constant('DELETE')],
    ['X-Original-URL', fc.constantFrom('/api/v1/users', `/api/v1/works/${world.work}`)],
    ['X-Rewrite-URL', fc.constant('/api/v1/users')],
    ['X-Original-URI', fc.constantFrom('/api/v1/users', '/docs/x')],
    ['X-Original-Method', fc.constant('DELETE')],
    ['X-Forwarded-For', fc.constant('10.0.0.1')],
    ['X-Forwarded-Host', fc.constant('evil.example')],
    ['X-Forwarded-Proto', fc.constant('https')],
    ['X-Forwarded-Prefix', fc.constant('/admin')],
    ['X-Forwarded-Path', fc.constant('/api/v1/users')],
    ['X-Real-IP', fc.constant('10.0.0.2')],
    ['Forwarded', fc.constant('for=10.0.0.3;host=evil.example')],
    ['X-Request-Id', fc.constantFrom('spoofed-id', 'bad id\twith tab')],
  ]).chain((picked) => (picked.length === 0 ? fc.constant([] as HeaderList) : fc.tuple(...picked.map(([n, v]) => fc.tuple(casing(n), v)))));
}

/** The Authorization field(s): none, one, or two (`Bearer` in any case, other schemes, odd spacing). */
function authorization(token: fc.Arbitrary<string>) {
  const one = fc.tuple(casing('authorization'), fc.constantFrom('Bearer ', 'bearer ', 'BEARER ', 'Bearer  ', 'Basic ', 'Token ', 'Bearer', 'Bearer\t', ''), token).map(([n, s, t]): [string, string] => [n, `${s}${t}`.trim()]);
  return fc.oneof({ weight: 1, arbitrary: fc.constant([] as HeaderList) }, { weight: 8, arbitrary: one.map((h) => [h]) }, { weight: 1, arbitrary: fc.tuple(one, one) });
}

/** A genuine token for the fixture's user. */
const userToken = (pool: TokenPool, world: World) => fc.constantFrom(...pool.valid.filter((v) => v.sub === world.user).map((v) => v.token));

/** Tokens from bad to almost right: mutations of a genuine one, refused ones, garbage. */
function tokenArb(pool: TokenPool) {
  const genuine = fc.constantFrom(...pool.valid.map((v) => v.token));
  const bitFlip = fc.tuple(genuine, fc.integer({ min: 0, max: 2 }), fc.nat(), fc.integer({ min: 0, max: 7 })).map(([t, seg, at, bit]) => {
    const parts = t.split('.');
    const bytes = Buffer.from(parts[seg]!, 'base64url');
    if (bytes.length === 0) return t.slice(1);
    bytes[at % bytes.length]! ^= 1 << bit;
    parts[seg] = bytes.toString('base64url');
    return parts.join('.');
  });
  const charFlip = fc.tuple(genuine, fc.nat(), fc.constantFrom(...'AQgw_-0aZ.=+/')).map(([t, at, c]) => {
    const i = at % t.length;
    return t.slice(0, i) + c + t.slice(i + 1);
  });
  const algSwap = fc.tuple(genuine, fc.constantFrom('none', 'None', 'HS256', 'HS512', 'RS256', 'ES384', 'ES512', 'EdDSA', 'PS256', ''), fc.boolean()).map(([t, alg, strip]) => {
    const [h, p, s] = t.split('.') as [string, string, string];
    const header = { ...JSON.parse(Buffer.from(h, 'base64url').toString('utf8')), alg };
    return `${base64url.encode(JSON.stringify(header))}.${p}.${strip ? '' : s}`;
  });
  const headerEdit = fc.tuple(genuine, fc.constantFrom({ typ: 'JWT' }, { typ: 'AT+JWT' }, { kid: '../../dev/null' }, { kid: undefined }, { crit: ['exp'] }, { jku: 'http://127.0.0.1:1/jwks' }, { b64: false, crit: ['b64'] })).map(([t, edit]) => {
    const [h, p, s] = t.split('.') as [string, string, string];
    const header = { ...JSON.parse(Buffer.from(h, 'base64url').toString('utf8')), ...edit };
    return `${base64url.encode(JSON.stringify(header))}.${p}.${s}`;
  });
  const payloadEdit = fc.tuple(genuine, fc.constantFrom({ sub: randomUUID() }, { exp: 1 }, { aud: 'other' }, { iss: 'https://evil.example' }, { scope: 'admin' }, { sub: 'admin' })).map(([t, edit]) => {
    const [h, p, s] = t.split('.') as [string, string, string];
    const payload = { ...JSON.parse(Buffer.from(p, 'base64url').toString('utf8')), ...edit };
    return `${h}.${base64url.encode(JSON.stringify(payload))}.${s}`;
  });
  const truncate = fc.tuple(genuine, fc.nat()).map(([t, n]) => t.slice(0, n % t.length));
  const reorder = fc.tuple(genuine, fc.constantFrom([2, 1, 0], [0, 2, 1], [1, 0, 2], [0, 1], [0, 1, 2, 2], [0, 0, 2])).map(([t, order]) => {
    const parts = t.split('.');
    return order.map((i) => parts[i]).join('.');
  });
  const garbage = fc.oneof(
    fc.string({ unit: fc.constantFrom(...'abcXYZ019-_.~+/='), maxLength: 60 }),
    fc.base64String({ maxLength: 80 }),
    fc.string({ unit: 'grapheme-ascii', maxLength: 40 }),
    fc.constant(`${'a'.repeat(9000)}.${'b'.repeat(9000)}.c`), // oversize: 431 over HTTP
  );
  return fc.oneof(
    { weight: 2, arbitrary: genuine },
    { weight: 2, arbitrary: fc.constantFrom(...pool.refused) },
    { weight: 4, arbitrary: bitFlip },
    { weight: 1, arbitrary: charFlip },
    { weight: 2, arbitrary: algSwap },
    { weight: 1, arbitrary: headerEdit },
    { weight: 1, arbitrary: payloadEdit },
    { weight: 1, arbitrary: truncate },
    { weight: 1, arbitrary: reorder },
    { weight: 1, arbitrary: garbage },
  );
}

/** The publisher-context fields: the right one (any case, also as X-Tenant-Id), none, wrong, invalid, twice. */
function publisherHeaders(world: World, good: boolean) {
  const p = fc.constantFrom(world.publisher, world.publisher.toUpperCase());
  const right = fc.oneof(
    fc.tuple(casing('x-publisher-id'), p).map((h) => [h] as HeaderList),
    fc.tuple(casing('x-tenant-id'), p).map((h) => [h] as HeaderList),
    fc.tuple(p, p).map(([a, b]) => [['X-Publisher-Id', a], ['X-Tenant-Id', b]] as HeaderList),
  );
  if (good) return right;
  return fc.oneof(
    { weight: 4, arbitrary: right },
    { weight: 1, arbitrary: fc.constant([] as HeaderList) },
    { weight: 1, arbitrary: fc.uuid().map((u) => [['X-Publisher-Id', u]] as HeaderList) },
    { weight: 1, arbitrary: fc.tuple(fc.constantFrom('X-Publisher-Id', 'X-Tenant-Id'), fc.constantFrom('dmp', `${world.publisher},${world.publisher}`, `${world.publisher} x`, '', '00000000-0000-0000-0000-00000000000g')).map(([n, v]) => [[n, v]] as HeaderList) },
    { weight: 1, arbitrary: fc.uuid().map((u) => [['X-Publisher-Id', world.publisher], ['X-Tenant-Id', u]] as HeaderList) },
    { weight: 1, arbitrary: p.map((v) => [['X-Publisher-Id', v], ['x-publisher-id', v]] as HeaderList) },
  );
}

/** `arb` one time in three, else `none`. */
const sometimes = <T>(arb: fc.Arbitrary<T>, none: T) => fc.oneof({ weight: 2, arbitrary: fc.constant(none) }, { weight: 1, arbitrary: arb });

/** Large fields: one over the 16 KiB header limit (431 over HTTP), or many small ones. */
const oversize = fc.oneof(
  fc.integer({ min: 17_000, max: 30_000 }).map((n) => [['X-Big', 'x'.repeat(n)]] as HeaderList),
  fc.integer({ min: 50, max: 200 }).map((n) => Array.from({ length: n }, (_, i): [string, string] => [`X-Many-${i}`, 'y'.repeat(60)])),
);

const METHODS = ['GET', 'GET', 'GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'TRACE', 'QUERY', 'PROPFIND'];

/**
 * Every family of cases, weighted: tricky targets with otherwise valid requests; allowed targets
 * with fuzzed headers; allowed targets with fuzzed tokens; /ext-authz in both modes; and good
 * cases (allowed route, genuine token, right context, noise and spoofs the sidecar must strip).
 */
export function caseArb(world: World, pool: TokenPool, o: CaseOptions): fc.Arbitrary<FuzzCase> {
  const noise = fc.array(noiseHeader, { maxLength: 5 });
  const spoofs = spoofHeaders(world, pool);
  const validAuth = fc.tuple(casing('authorization'), userToken(pool, world)).map(([n, t]) => [[n, `Bearer ${t}`]] as HeaderList);
  const connection = sometimes(
    fc.tuple(casing('connection'), fc.subarray(['keep-alive', 'x-user-id', 'authorization', 'x-publisher-id', 'x-request-id', 'te', 'x-a'], { minLength: 1 })).map(([n, v]) => [[n, v.join(', ')]] as HeaderList),
    [] as HeaderList,
  );
  const join = (...lists: HeaderList[]): HeaderList => lists.flat();

  const target = fc.record({ method: fc.constantFrom(...METHODS), target: trickyTarget(world, o), auth: validAuth, ctx: publisherHeaders(world, true), noise }).map(
    (r): FuzzCase => ({ family: 'target', method: r.method, target: r.target, headers: join(r.auth, r.ctx, r.noise) }),
  );
  const headers = fc.record({
    method: fc.oneof({ weight: 3, arbitrary: fc.constantFrom('GET', 'HEAD') }, { weight: 1, arbitrary: fc.constantFrom(...METHODS) }), // mostly methods the routes have
    target: allowedTarget(world),
    auth: authorization(userToken(pool, world)),
    ctx: publisherHeaders(world, false),
    spoofs,
    connection,
    noise,
    big: fc.oneof({ weight: 9, arbitrary: fc.constant([] as HeaderList) }, { weight: 1, arbitrary: oversize }),
  }).map((r): FuzzCase => ({ family: 'headers', method: r.method, target: r.target, headers: join(r.noise, r.auth, r.spoofs, r.ctx, r.connection, r.big) }));
  const token = fc.record({ method: fc.constantFrom('GET', 'GET', 'HEAD', 'POST'), target: fc.oneof(allowedTarget(world), anyPath(world)), auth: authorization(tokenArb(pool)), ctx: publisherHeaders(world, true) }).map(
    (r): FuzzCase => ({ family: 'token', method: r.method, target: r.target, headers: join(r.auth, r.ctx) }),
  );
  const original = fc.oneof({ weight: 1, arbitrary: allowedTarget(world) }, { weight: 2, arbitrary: trickyTarget(world, o) });
  const extAuthz = fc.oneof(
    // Envoy: the original target after the prefix, the original method as the method
    // (spoofed header-mode fields must not matter: the path prefix names the request)
    fc.record({
      method: fc.constantFrom(...METHODS),
      original,
      auth: authorization(fc.oneof(userToken(pool, world), tokenArb(pool))),
      ctx: publisherHeaders(world, false),
      spoofs,
      headerMode: sometimes(fc.constantFrom<HeaderList>([['X-Original-URI', '/docs/x'], ['X-Original-Method', 'GET']], [['X-Forwarded-Uri', '/docs/x'], ['X-Forwarded-Method', 'GET']]), [] as HeaderList),
    }).map((r): FuzzCase => ({ family: 'ext-authz', method: r.method, target: `/ext-authz${r.original}`, headers: join(r.auth, r.ctx, r.spoofs, r.headerMode) })),
    // nginx / Traefik: the original method and URI in headers (field values: no raw non-Latin-1, trimmed)
    fc.record({
      method: fc.constantFrom('GET', 'POST', 'HEAD'),
      original: original.map((t) => [...t].filter((c) => c.charCodeAt(0) <= 0xff && c >= ' ' && c !== '\x7f').join('').trim()),
      originalMethod: fc.constantFrom('GET', 'HEAD', 'POST', 'DELETE', 'get', 'G ET', ''),
      family: fc.constantFrom(['X-Original-URI', 'X-Original-Method'], ['X-Forwarded-Uri', 'X-Forwarded-Method']),
      auth: authorization(fc.oneof(userToken(pool, world), tokenArb(pool))),
      ctx: publisherHeaders(world, false),
      query: fc.constantFrom('', '?x=1', '/../x'),
      // the other proxy's pair too: the same values (fine) or others (one came from the client → 400)
      other: sometimes<[boolean, boolean] | null>(fc.tuple(fc.boolean(), fc.boolean()), null),
    }).map((r): FuzzCase => {
      const fields: HeaderList = [[r.family[0]!, r.original], [r.family[1]!, r.originalMethod]];
      if (r.other) {
        const names = r.family[0] === 'X-Original-URI' ? ['X-Forwarded-Uri', 'X-Forwarded-Method'] : ['X-Original-URI', 'X-Original-Method'];
        fields.push([names[0]!, r.other[0] ? r.original : `/docs/other`], [names[1]!, r.other[1] ? r.originalMethod : 'GET']);
      }
      return { family: 'ext-authz', method: r.method, target: `/ext-authz${r.query}`, headers: join(r.auth, r.ctx, fields) };
    }),
  );
  const good = fc.record({ method: fc.constantFrom('GET', 'GET', 'HEAD'), target: allowedTarget(world), auth: validAuth, ctx: publisherHeaders(world, true), spoofs, connection, noise }).map(
    (r): FuzzCase => ({ family: 'good', method: r.method, target: r.target, headers: join(r.noise, r.spoofs, r.auth, r.connection, r.ctx) }),
  );
  return fc.oneof({ weight: 3, arbitrary: target }, { weight: 3, arbitrary: headers }, { weight: 3, arbitrary: token }, { weight: 2, arbitrary: extAuthz }, { weight: 2, arbitrary: good });
}

// ---------------------------------------------------------------------------------------------
// Transports

/** An answer as the client saw it (`status` 0: the connection closed without one). */
export type FuzzResponse = { status: number; headers: Record<string, string>; body: string };

/** One way into the sidecar. */
export type Transport = {
  name: 'inject' | 'http';
  send(c: FuzzCase): Promise<FuzzResponse>;
  /** Keys of the identity assertions this sidecar signs. */
  jwks: JWTVerifyGetKey;
  /** True while the sidecar lives and `/healthz` answers 200. */
  healthy(): Promise<boolean>;
  close(): Promise<void>;
};

/** Header values as the server's parser leaves them: optional whitespace around them removed. */
const trimmed = (headers: HeaderList): HeaderList => headers.map(([n, v]) => [n, v.replace(/^[ \t]+|[ \t]+$/g, '')]);

/**
 * The in-process transport: light-my-request into the server's request listener, the raw target
 * restored on `req.url` (what Node's parser would have given), the header list as a repeated-field
 * object so `rawHeaders` lists every occurrence.
 */
export async function injectTransport(app: FastifyInstance): Promise<Transport> {
  await app.ready();
  const listener = app.server.listeners('request')[0] as (req: IncomingMessage, res: ServerResponse) => void;
  const send = async (method: string, target: string, headers: HeaderList, host = 'localhost'): Promise<FuzzResponse> => {
    const object: Record<string, string | string[]> = { host };
    for (const [n, v] of trimmed(headers)) {
      const key = n.toLowerCase();
      const prev = object[key];
      object[key] = prev === undefined || key === 'host' ? v : [...(Array.isArray(prev) ? prev : [prev]), v];
    }
    const res = await inject(
      (req: IncomingMessage, res: ServerResponse) => {
        req.url = target;
        listener(req, res);
      },
      { method: method as 'GET', url: '/', headers: object },
    );
    const out: Record<string, string> = {};
    for (const [k, v] of Object.entries(res.headers)) out[k.toLowerCase()] = Array.isArray(v) ? v.join(', ') : String(v);
    return { status: res.statusCode, headers: out, body: res.body };
  };
  const jwks = createLocalJWKSet(JSON.parse((await send('GET', '/.well-known/jwks.json', [])).body) as JSONWebKeySet);
  return {
    name: 'inject',
    send: (c) => send(c.method, c.target, c.headers),
    jwks,
    healthy: async () => (await send('GET', '/healthz', [])).status === 200,
    close: async () => undefined,
  };
}

/**
 * Send one request over a fresh TCP connection, byte for byte: the request line with the target
 * as UTF-8, `Host`, the header list in order as Latin-1 (field values may hold obs-text), and
 * `Connection: close` last; read the answer (Content-Length, chunked, or to the end).
 * @returns the parsed answer; status 0 when the server closed without one.
 * @throws when nothing complete arrives within `timeoutMs`.
 */
export function rawHttp(port: number, method: string, target: string, headers: HeaderList, timeoutMs = 15_000): Promise<FuzzResponse> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    let settled = false;
    const done = (fn: () => void) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      fn();
    };
    const timer = setTimeout(() => done(() => reject(new Error(`no complete answer within ${timeoutMs} ms`))), timeoutMs);
    const tryParse = (final: boolean) => {
      const buf = Buffer.concat(chunks);
      const end = buf.indexOf('\r\n\r\n');
      if (end === -1) {
        if (final) done(() => resolve({ status: 0, headers: {}, body: buf.toString('latin1') }));
        return;
      }
      const lines = buf.subarray(0, end).toString('latin1').split('\r\n');
      const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(lines[0]!)?.[1] ?? 0);
      const h: Record<string, string> = {};
      for (const line of lines.slice(1)) {
        const i = line.indexOf(':');
        const k = line.slice(0, i).trim().toLowerCase();
        const v = line.slice(i + 1).trim();
        h[k] = h[k] === undefined ? v : `${h[k]}, ${v}`;
      }
      let rest = buf.subarray(end + 4);
      let body: Buffer | null = null;
      if (method === 'HEAD' || status === 204 || status === 304) body = Buffer.alloc(0);
      else if (/chunked/i.test(h['transfer-encoding'] ?? '')) {
        const parts: Buffer[] = [];
        for (;;) {
          const nl = rest.indexOf('\r\n');
          if (nl === -1) break;
          const size = Number.parseInt(rest.subarray(0, nl).toString('latin1'), 16);
          if (size === 0) {
            body = Buffer.concat(parts);
            break;
          }
          if (rest.length < nl + 2 + size + 2) break;
          parts.push(rest.subarray(nl + 2, nl + 2 + size));
          rest = rest.subarray(nl + 2 + size + 2);
        }
      } else if (h['content-length'] !== undefined) {
        const n = Number(h['content-length']);
        if (rest.length >= n) body = rest.subarray(0, n);
      } else if (final) body = rest;
      if (body) done(() => resolve({ status, headers: h, body: body!.toString('utf8') }));
      else if (final) done(() => reject(new Error(`truncated answer: ${buf.toString('latin1').slice(0, 300)}`)));
    };
    socket.on('data', (d: Buffer) => {
      chunks.push(d);
      tryParse(false);
    });
    socket.on('end', () => tryParse(true));
    socket.on('close', () => tryParse(true));
    socket.on('error', (err) => {
      // a reset after a complete answer (the server closed with our bytes unread) is fine
      if (chunks.length) tryParse(true);
      else done(() => reject(err));
    });
    const head = [`${method} ${target} HTTP/1.1`, `Host: 127.0.0.1:${port}`, ...headers.map(([n, v]) => `${n}: ${v}`), 'Connection: close', '', ''];
    const line = Buffer.from(`${head[0]}\r\n`, 'utf8');
    // write, not end: Node's server drops a connection whose client half-closed before the answer
    socket.write(Buffer.concat([line, Buffer.from(head.slice(1).join('\r\n'), 'latin1')]));
  });
}

/** A sidecar child process (sidecar/src/main.ts) for the raw-socket transport; `adminUrl` is its admin listener. */
export type SidecarProcess = { child: ChildProcess; port: number; url: string; adminUrl: string; output(): string; stop(): Promise<void> };

/**
 * Start sidecar/src/main.ts as a child with `env` on a free loopback port (its admin listener on
 * another) and its own signing key.
 * @throws when it does not answer /healthz within 30 s (its output is in the message).
 */
export async function startSidecarProcess(env: Record<string, string>): Promise<SidecarProcess> {
  const port = await freePort();
  const adminPort = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'fuzz-sidecar-'));
  const keyFile = join(dir, 'signing-key.pem');
  writeFileSync(keyFile, await exportPKCS8((await generateKeyPair('ES256', { extractable: true })).privateKey), { mode: 0o600 });
  let out = '';
  const child = spawn(process.execPath, ['sidecar/src/main.ts'], {
    cwd: ROOT,
    env: { ...process.env, LOG_LEVEL: 'error', SIDECAR_HOST: '127.0.0.1', SIDECAR_PORT: String(port), ADMIN_PORT: String(adminPort), SIDECAR_SIGNING_KEY_FILE: keyFile, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout!.on('data', (d) => (out = (out + d).slice(-20_000)));
  child.stderr!.on('data', (d) => (out = (out + d).slice(-20_000)));
  const url = `http://127.0.0.1:${port}`;
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
    }
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await waitHttp(`${url}/healthz`, 30_000);
  } catch (err) {
    await stop();
    throw new Error(`${(err as Error).message}\n${out}`);
  }
  return { child, port, url, adminUrl: `http://127.0.0.1:${adminPort}`, output: () => out, stop };
}

/** The raw-socket transport against a sidecar child process. */
export async function httpTransport(proc: SidecarProcess): Promise<Transport> {
  const jwks = createLocalJWKSet((await (await fetch(`${proc.url}/.well-known/jwks.json`)).json()) as JSONWebKeySet);
  return {
    name: 'http',
    send: (c) => rawHttp(proc.port, c.method, c.target, c.headers),
    jwks,
    healthy: async () => proc.child.exitCode === null && proc.child.signalCode === null && (await rawHttp(proc.port, 'GET', '/healthz', [])).status === 200,
    close: async () => undefined, // the fixture stops the process
  };
}

// ---------------------------------------------------------------------------------------------
// The fixture

/** Everything a fuzz run needs: the world, tokens, upstream, store, sidecars and transports. */
export type FuzzFixture = {
  world: World;
  pool: TokenPool;
  upstream: Upstream;
  store: TestStore;
  issuer: Issuer;
  transports: Transport[];
  /** The sidecar environment (store, upstream, routes, issuer). */
  env: Record<string, string>;
  /** The child process behind the `http` transport (when started). */
  process?: SidecarProcess;
  /** The in-process sidecar behind the `inject` transport (when started). */
  sidecar?: Sidecar;
  close(): Promise<void>;
};

/**
 * Set up a fuzz fixture against the real OpenFGA and Redis of the environment (OPENFGA_API_URL,
 * REDIS_URL): a throw-away store with the fixture's tuples, a token issuer, the recording upstream,
 * and the sidecars of the requested transports.
 * @param o.transports which transports to start; o.env extra sidecar environment.
 */
export async function startFuzzFixture(o: { transports: ('inject' | 'http')[]; env?: Record<string, string> }): Promise<FuzzFixture> {
  const world: World = { user: randomUUID(), stranger: randomUUID(), publisher: randomUUID(), work: randomUUID() };
  const dir = mkdtempSync(join(tmpdir(), 'fuzz-'));
  const routesFile = join(dir, 'routes.yaml');
  writeFileSync(routesFile, FUZZ_ROUTES);
  const cleanups: (() => Promise<unknown> | unknown)[] = [() => rmSync(dir, { recursive: true, force: true })];
  const close = async () => {
    for (const c of cleanups.reverse()) await c();
  };
  try {
    const upstream = await startUpstream();
    cleanups.push(() => upstream.close());
    // A request the upstream's own parser refuses (a forwarded header block over its 16 KiB) is
    // still a forward: answer it marked, so checkCase counts it as one.
    upstream.server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
      const status = err.code === 'HPE_HEADER_OVERFLOW' ? 431 : 400;
      if (socket.writable) socket.end(`HTTP/1.1 ${status} Refused\r\nX-Upstream: parser\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`);
      else socket.destroy();
    });
    const store = await createTestStore(OPENFGA_API_URL);
    cleanups.push(() => store.remove());
    const redis = new Redis(REDIS_URL);
    const writer = new RelationshipWriter({ fga: store.fga, redis, storeId: store.storeId, modelId: store.modelId });
    await writer.write({
      writes: [
        { user: `user:${world.user}`, relation: 'viewer', object: `publisher:${world.publisher}` },
        { user: `publisher:${world.publisher}`, relation: 'publisher', object: `work:${world.work}` },
      ],
    });
    // counters of their own, removed at the end: other suites share this Redis
    const tag = randomUUID().slice(0, 8);
    const prefixes = { METERING_KEY_PREFIX: `fuzz-metering-${tag}`, RATE_LIMIT_KEY_PREFIX: `fuzz-rate-limit-${tag}` };
    cleanups.push(async () => {
      for (const prefix of Object.values(prefixes)) {
        for (let cursor = '0'; ; ) {
          const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
          if (keys.length) await redis.del(...keys);
          if ((cursor = next) === '0') break;
        }
      }
      redis.disconnect();
    });
    const issuer = await createIssuer();
    cleanups.push(() => issuer.close());
    const pool = await makeTokenPool(issuer, world);
    const env = {
      OPENFGA_STORE_NAME: store.storeName,
      UPSTREAM_URL: upstream.url,
      ROUTES_FILE: routesFile,
      JWT_ISSUER: ISSUER,
      JWT_AUDIENCE: AUDIENCE,
      JWT_JWKS_URL: issuer.jwksUrl,
      // the rate-limit stage runs on every case, but never refuses one: a fuzzer is one very busy client
      RATE_LIMIT_IP: '100000000/min',
      RATE_LIMIT_SUBJECT: '100000000/min',
      RATE_LIMIT_PUBLISHER: '100000000/min',
      ...prefixes,
      ...o.env,
    };
    const transports: Transport[] = [];
    let sidecar: Sidecar | undefined;
    let proc: SidecarProcess | undefined;
    if (o.transports.includes('inject')) {
      const s = (sidecar = await startSidecar(env));
      cleanups.push(() => s.close());
      transports.push(await injectTransport(s.app));
    }
    if (o.transports.includes('http')) {
      const p = (proc = await startSidecarProcess(env));
      cleanups.push(() => p.stop());
      transports.push(await httpTransport(p));
    }
    return { world, pool, upstream, store, issuer, transports, env, process: proc, sidecar, close };
  } catch (err) {
    await close();
    throw err;
  }
}

/** Sign the fixture's token pool: genuine tokens for the user and the stranger, and refused ones. */
async function makeTokenPool(issuer: Issuer, world: World): Promise<TokenPool> {
  const now = Math.floor(Date.now() / 1000);
  const sign = (claims: Record<string, unknown>, header: Record<string, unknown> = {}) =>
    new SignJWT({ iss: ISSUER, aud: AUDIENCE, sub: world.user, sid: randomUUID(), iat: now, exp: now + 7200, jti: randomUUID(), ...claims })
      .setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid: issuer.kid, ...header } as { alg: string })
      .sign(issuer.privateKey);
  const attacker = await generateKeyPair('ES256');
  const valid = [
    { token: await issuer.token(world.user, { expSeconds: 7200 }), sub: world.user },
    { token: await issuer.token(world.user, { expSeconds: 7200 }), sub: world.user },
    { token: await issuer.token(world.stranger, { expSeconds: 7200 }), sub: world.stranger },
  ];
  const refused = [
    await sign({ exp: now - 60 }),
    await sign({ aud: 'someone-else' }),
    await sign({ iss: 'https://evil.example' }),
    await sign({ sub: 'admin' }),
    await sign({ iat: now + 600 }),
    await sign({ nbf: now + 600 }),
    await sign({ sid: undefined }), // our issuer's tokens must name a session
    await sign({}, { typ: 'JWT' }),
    await new SignJWT({ iss: ISSUER, aud: AUDIENCE, sub: world.user, sid: randomUUID(), iat: now, exp: now + 7200 }).setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid: issuer.kid }).sign(attacker.privateKey),
    `${base64url.encode(JSON.stringify({ alg: 'none', typ: 'at+jwt' }))}.${base64url.encode(JSON.stringify({ iss: ISSUER, aud: AUDIENCE, sub: world.user, exp: now + 7200 }))}.`,
  ];
  const forgedAssertion = await new SignJWT({ sub: world.user, publisher_id: world.publisher, htm: 'DELETE', htu: `/api/v1/works/${world.work}` })
    .setProtectedHeader({ alg: 'ES256', typ: 'JWT' })
    .setIssuer('urn:music-publishing:sidecar')
    .setAudience('catalog-api')
    .setIssuedAt()
    .setExpirationTime('1h')
    .sign(attacker.privateKey);
  return { valid, refused, forgedAssertion };
}

// ---------------------------------------------------------------------------------------------
// The invariants

/** Request fields of the client that must never reach the upstream (docs/CONTRACTS.md, "Identity assertion"). */
const NEVER_FORWARDED = [
  'authorization', 'x-user-id', 'x-user-email', 'x-forwarded-user', 'x-remote-user', 'x-tenant-id', 'forwarded', 'x-real-ip',
  // meaning-changing fields (policies/src/routes.ts MEANING_CHANGING_HEADERS; the fuzz routes allow none)
  'x-http-method-override', 'x-http-method', 'x-method-override', 'x-original-url', 'x-rewrite-url', 'x-original-uri', 'x-original-method',
  'x-forwarded-prefix', 'x-forwarded-path', 'x-forwarded-uri', 'x-forwarded-method', 'x-forwarded-port',
];

/** Thrown when a case breaks an invariant; the message names which and shows the exchange. */
export class InvariantViolation extends Error {
  override name = 'InvariantViolation';
}

/** The original request an /ext-authz case asks about, as the sidecar must read it (null: none/invalid). */
function extAuthzOriginal(c: FuzzCase, headers: HeaderList): { method: string; target: string } | null {
  const path = c.target.split('?')[0]!;
  if (path.startsWith('/ext-authz/')) return { method: c.method, target: c.target.slice('/ext-authz'.length) };
  if (path !== '/ext-authz') return null;
  const one = (a: string, b: string) => {
    const va = values(headers, a);
    const vb = values(headers, b);
    if (va.length > 1 || vb.length > 1) return null;
    if (va[0] !== undefined && vb[0] !== undefined && va[0] !== vb[0]) return null;
    return va[0] ?? vb[0] ?? null;
  };
  const target = one('x-original-uri', 'x-forwarded-uri');
  const method = one('x-original-method', 'x-forwarded-method');
  if (target === null || method === null || !/^[A-Z]{1,20}$/.test(method)) return null;
  return { method, target };
}

/** What one checked case gave (for the run's statistics). */
export type CaseOutcome = { status: number; forwarded: boolean };

/**
 * Send `c` through `transport` and check the invariants of the module docstring.
 * @throws InvariantViolation naming the broken invariant, with the request and the answer.
 */
export async function checkCase(fx: FuzzFixture, transport: Transport, c: FuzzCase): Promise<CaseOutcome> {
  fx.upstream.received.length = 0;
  const res = await transport.send(c);
  // the sidecar's readiness probe (GET /readyz → upstream /healthz) is not a forward
  const calls = fx.upstream.received.filter((r) => !(r.url === '/healthz' && c.target.startsWith('/readyz')));
  const seen = trimmed(c.headers);
  const fail = (why: string): never => {
    const show = (s: string) => (s.length > 300 ? `${s.slice(0, 300)}…(${s.length})` : s);
    throw new InvariantViolation(
      `${transport.name}: ${why}\n  request: ${c.method} ${JSON.stringify(show(c.target))} (${c.family})\n  headers: ${JSON.stringify(c.headers.map(([n, v]) => [n, show(v)]))}\n` +
        `  answer: ${res.status} ${JSON.stringify(res.headers)} ${show(res.body)}\n  upstream saw: ${JSON.stringify(calls.map((r) => ({ method: r.method, url: show(r.url) })))}`,
    );
  };
  const kind = (() => {
    try {
      return String((JSON.parse(res.body) as { type?: string }).type ?? '').split('/').pop();
    } catch {
      return undefined;
    }
  })();

  // 1. an answer, never a 5xx; the sidecar's own errors are problem+json
  const upstreamSaid = res.headers['x-upstream'];
  if (res.status === 0) fail('the connection closed without an answer');
  if (res.status >= 500) fail(`a ${res.status} with healthy dependencies`);
  if (res.status >= 400 && upstreamSaid === undefined && !/^application\/problem\+json/.test(res.headers['content-type'] ?? '')) fail('an error of the sidecar that is not problem+json');
  // the upstream is called at most once, and its answer is what the client got ('parser': the
  // upstream's HTTP parser refused what the sidecar forwarded — a forward all the same)
  if (calls.length > 1) fail(`the upstream was called ${calls.length} times`);
  if ((calls.length === 1) !== (upstreamSaid === 'yes')) fail('the upstream calls and the answer disagree');
  const forwarded = upstreamSaid === 'yes' || upstreamSaid === 'parser';

  const original = c.family === 'ext-authz' || c.target.split('?')[0]!.startsWith('/ext-authz') ? extAuthzOriginal(c, seen) : undefined;
  if (original !== undefined) {
    // 5. ext_authz decides only
    if (forwarded) fail('/ext-authz called the upstream');
    if (res.status === 200) {
      if (!isUnambiguousTarget(c.target)) fail('/ext-authz allowed through a non-canonical auth request target');
      if (!original || !forwardPermitted(fx.world, fx.pool, original.method, original.target, seen)) fail('/ext-authz allowed a request the model does not');
      await checkAssertion(fx, transport, res.headers['x-identity-assertion'], original!.method, original!.target, seen, fail);
    }
    return { status: res.status, forwarded };
  }

  // 2. non-canonical → 400, nothing forwarded; canonical → never called non-canonical
  const canonical = isUnambiguousTarget(c.target);
  if (!canonical) {
    if (forwarded) fail('a non-canonical target reached the upstream');
    // (a HEAD answer has no body to name the kind; over HTTP Node's parser may refuse first)
    const ok = transport.name === 'inject' ? res.status === 400 && (kind === 'non-canonical-path' || c.method === 'HEAD') : res.status === 400 || res.status === 431;
    if (!ok) fail('a non-canonical target was not refused with 400');
  } else if (kind === 'non-canonical-path') fail('a canonical target was refused as non-canonical');

  // 3. forwarded only when permitted, exactly as sent, with clean headers and our own assertion
  if (forwarded && !forwardPermitted(fx.world, fx.pool, c.method, c.target, seen)) fail('forwarded a request the model does not allow');
  if (calls.length === 1) {
    const got = calls[0]!;
    if (got.url !== c.target) fail(`the upstream saw ${JSON.stringify(got.url)}, not the raw target`);
    if (got.method !== c.method) fail(`the upstream saw method ${got.method}`);
    for (const name of NEVER_FORWARDED) if (got.headers[name] !== undefined) fail(`the client's ${name} reached the upstream`);
    for (const name of Object.keys(got.headers)) if (name.startsWith('x-auth')) fail(`the client's ${name} reached the upstream`);
    if (got.headers['x-forwarded-for'] !== '127.0.0.1' || got.headers['x-forwarded-proto'] !== 'http') fail('X-Forwarded-For/-Proto are not the sidecar\'s own');
    const ctx = publisherContext(seen);
    if (got.headers['x-publisher-id'] !== undefined && got.headers['x-publisher-id'] !== ctx) fail('X-Publisher-Id upstream is not the normalised context');
    const isPublic = c.target.startsWith('/docs/') && (c.method === 'GET' || c.method === 'HEAD');
    if (isPublic) {
      if (got.headers['x-identity-assertion'] !== undefined) fail('an identity assertion on a public route (the client\'s?)');
    } else await checkAssertion(fx, transport, got.headers['x-identity-assertion'] as string | undefined, c.method, c.target, seen, fail);
  }

  // 4. good cases get through
  if (c.family === 'good' && !(forwarded && res.status === 200)) fail('an allowed, canonical, authenticated request did not reach the upstream');
  return { status: res.status, forwarded };
}

/** The assertion must be the sidecar's (its JWKS), for the genuine subject, bound to method and path. */
async function checkAssertion(fx: FuzzFixture, transport: Transport, assertion: string | undefined, method: string, target: string, seen: HeaderList, fail: (why: string) => never): Promise<void> {
  if (!assertion) {
    if (!(method === 'GET' || method === 'HEAD') || !target.startsWith('/docs/')) fail('no identity assertion for an authenticated request');
    return;
  }
  let claims: Record<string, unknown>;
  try {
    claims = (await jwtVerify(assertion, transport.jwks, { issuer: 'urn:music-publishing:sidecar', audience: 'catalog-api', algorithms: ['EdDSA', 'ES256'] })).payload;
  } catch (err) {
    return fail(`an identity assertion the sidecar did not sign (${(err as Error).message})`);
  }
  if (claims.sub !== genuineSubject(fx.pool, seen)) fail(`the assertion names ${String(claims.sub)}`);
  if (claims.htm !== method.toUpperCase() || claims.htu !== target.split('?')[0]) fail(`the assertion is bound to ${String(claims.htm)} ${String(claims.htu)}`);
}

// ---------------------------------------------------------------------------------------------
// Running

/** Statistics of one property run: cases, time, forwards, answers by status and by family and status. */
export type FuzzStats = {
  transport: string;
  runs: number;
  ms: number;
  forwarded: number;
  statuses: Record<string, number>;
  families: Record<string, Record<string, number>>;
  seed: number;
};

/**
 * Run `runs` cases through `transport` with fast-check (sequentially: each case's upstream calls
 * are those made while it ran), then check the sidecar is alive and healthy.
 * @param o.seed fast-check seed (default: FUZZ_SEED, else random); o.path replays a failure (FUZZ_PATH).
 * @returns the run's statistics.
 * @throws fast-check's report (seed, path, counterexample, the violation) when an invariant breaks,
 *   or an Error when the sidecar is not healthy afterwards.
 */
export async function runFuzz(fx: FuzzFixture, transport: Transport, o: { runs: number; seed?: number; path?: string }): Promise<FuzzStats> {
  const seed = o.seed ?? (process.env.FUZZ_SEED ? Number(process.env.FUZZ_SEED) : (Date.now() ^ (Math.random() * 0x100000000)) | 0);
  const stats: FuzzStats = { transport: transport.name, runs: 0, ms: 0, forwarded: 0, statuses: {}, families: {}, seed };
  const started = performance.now();
  const arb = caseArb(fx.world, fx.pool, { http: transport.name === 'http' });
  await fc.assert(
    fc.asyncProperty(arb, async (c) => {
      const out = await checkCase(fx, transport, c);
      stats.runs++;
      stats.statuses[out.status] = (stats.statuses[out.status] ?? 0) + 1;
      const f = (stats.families[c.family] ??= {});
      f[out.status] = (f[out.status] ?? 0) + 1;
      if (out.forwarded) stats.forwarded++;
    }),
    { numRuns: o.runs, seed, ...(o.path ?? process.env.FUZZ_PATH ? { path: o.path ?? process.env.FUZZ_PATH } : {}), endOnFailure: false },
  );
  stats.ms = Math.round(performance.now() - started);
  if (!(await transport.healthy())) throw new Error(`${transport.name}: the sidecar is not healthy after ${stats.runs} cases${fx.process ? `\n${fx.process.output()}` : ''}`);
  return stats;
}

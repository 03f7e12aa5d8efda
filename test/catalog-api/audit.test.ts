/**
 * The audit log through the catalog API, against real PostgreSQL, Redis and an SMTP server process:
 *
 * - every write route appends EXACTLY ONE row with the right actor, action, chain, object and
 *   changed fields. The list of routes comes from the app itself (its OpenAPI document) and from
 *   policies/routes.yaml: every non-GET operation needs an entry in CASES, so a new write route
 *   without an audit case fails this suite. Adding one is a few lines (see CASES);
 * - denied writes (401/403/422) append nothing;
 * - who sees what: a publisher's admins its rows only (also straight through RLS, as SQL), viewers,
 *   editors and managers nothing (403), system admins every chain; filters, keyset pages (rows in
 *   one millisecond too), the CSV export (RFC 4180, streamed over several pages);
 * - secrets never reach the log (passwords, hashes, TOTP secrets, recovery codes, client secrets,
 *   tokens), and the log the app wrote verifies.
 */
import t from 'tap';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { decodeJwt } from 'jose';
import { parse as parseCsv } from 'csv-parse/sync';
import type { InjectOptions, LightMyRequestResponse } from 'fastify';
import type pg from 'pg';
import { DEMO_PASSWORD, DEMO_TOTP_SECRETS } from '../../migrations/seed/demo.ts';
import { loadRouteRules } from '../../policies/src/routes.ts';
import { DEFAULT_MODEL_FILE, deployModel, fgaClient, findStore } from '../../policies/src/model.ts';
import { totpCode } from '../../catalog-api/src/modules/auth/totp.ts';
import { AUDIT_ACTIONS, AUDITED_FIELDS, type AuditAction } from '../../catalog-api/src/modules/audit/audit.service.ts';
import { CSV_COLUMNS, EXPORT_PAGE_SIZE } from '../../catalog-api/src/modules/audit/routes.ts';
import { verifyAuditLog } from '../../catalog-api/src/modules/audit/verify.ts';
import { createOrm } from '../../catalog-api/src/db/orm.ts';
import { adminClient, assertion, bindingOf, buildTestApp, createTestDb, type TestApp, type TestDb } from './helpers.ts';
import { startMailCatcher, invitationTokenInMail, tokenInMail, type MailCatcher } from '../support/mail.ts';
import { addMember, asAdmin, createTestUser, demoGroupDn, removeMember } from '../support/directory.ts';
import { createDirectoryGateway } from '../../catalog-api/src/modules/directory/gateway.ts';
import { syncDirectories } from '../../catalog-api/src/modules/directory/sync.ts';
import { RevocationPublisher } from '../../catalog-api/src/modules/auth/revocations.ts';
import { Redis } from 'ioredis';
import { DMP, SONGTRUST, SPIRIT, SYSADMIN, DMP_ADMIN, DMP_MANAGER, DMP_EDITOR, DMP_VIEWER, SPIRIT_OWNER, MULTI, CREATOR1 } from '../support/demo-ids.ts';

const ROOT = resolve(import.meta.dirname, '../..');
/** The OpenFGA store of the model routes' cases (modules/authz), deleted at the end. */
const OPENFGA_API_URL = process.env.OPENFGA_API_URL || 'http://127.0.0.1:8080';
const AUTHZ_STORE = `${process.env.OPENFGA_STORE_NAME || 'test'}-audit-${randomUUID().slice(0, 8)}`;

let db: TestDb;
let ta: TestApp;
let su: pg.Client;
let mail: MailCatcher;
t.before(async () => {
  mail = await startMailCatcher();
  db = await createTestDb('audit');
  ta = await buildTestApp(db, {}, { SMTP_URL: mail.url, SIGN_IN_RATE_LIMIT_PER_MINUTE: '100000', OPENFGA_API_URL, OPENFGA_STORE_NAME: AUTHZ_STORE });
  su = await adminClient(db);
});
t.teardown(async () => {
  const authzStore = await findStore(OPENFGA_API_URL, AUTHZ_STORE).catch(() => undefined);
  if (authzStore) await fgaClient(OPENFGA_API_URL, authzStore).deleteStore().catch(() => undefined);
  await su?.end();
  await ta?.close();
  await db?.drop();
  await mail?.stop();
});

type Res = LightMyRequestResponse;
/** Everything secret the run handles (answers, mails, chosen passwords); none may appear in the log. */
const secrets = new Set<string>([DEMO_PASSWORD, ...Object.values(DEMO_TOTP_SECRETS)]);
const keep = (...values: (string | undefined)[]) => values.forEach((v) => v && secrets.add(v));

/** Call the API as `sub` (no publisher context unless given). */
const api = (sub: string, method: InjectOptions['method'], url: string, payload?: unknown, publisher: string | null = null) =>
  ta.as(sub, publisher, { method, url, ...(payload !== undefined ? { payload: payload as object } : {}) });
/** A public route. */
const anon = (method: InjectOptions['method'], url: string, payload?: unknown) =>
  ta.app.inject({ method, url, headers: { 'content-type': 'application/json', 'user-agent': 'audit-test/1.0' }, ...(payload !== undefined ? { payload: payload as object } : {}) });
/** An authenticated route the way the sidecar calls it for this access token (its sid and amr). */
async function withToken(accessToken: string, method: InjectOptions['method'], url: string, payload?: unknown): Promise<Res> {
  const claims = decodeJwt(accessToken);
  const token = await assertion(ta.key, { sub: String(claims.sub), ...bindingOf(String(method), url), extra: { sid: claims.sid as string, amr: claims.amr as string[] } });
  return ta.app.inject({ method, url, headers: { 'x-identity-assertion': token, ...(payload !== undefined ? { 'content-type': 'application/json' } : {}) }, ...(payload !== undefined ? { payload: payload as object } : {}) });
}
const json = (r: Res) => r.json() as Record<string, any>;
const ok = (r: Res, what: string) => {
  if (r.statusCode >= 300) throw new Error(`${what}: ${r.statusCode} ${r.body}`);
  return r;
};

async function login(email: string, password = DEMO_PASSWORD): Promise<{ access_token: string; refresh_token: string; mfa_token?: string }> {
  const body = json(ok(await anon('POST', '/api/v1/auth/login', { email, password }), `login ${email}`));
  keep(body.access_token, body.refresh_token, body.mfa_token);
  return body as { access_token: string; refresh_token: string; mfa_token?: string };
}
const sidOf = (accessToken: string) => decodeJwt(accessToken).sid as string;

let serial = 0;
const unique = (prefix: string) => `${prefix}-${++serial}-${randomUUID().slice(0, 8)}`;

/** A new person with a password, member of Spirit (invited and accepted: the real flow). */
async function person(role = 'viewer'): Promise<{ id: string; email: string; password: string }> {
  const email = `${unique('p')}@audit.example`;
  const password = `pw-${randomUUID()}`;
  keep(password);
  const before = (await mail.all()).length;
  ok(await api(SPIRIT_OWNER, 'POST', `/api/v1/publishers/${SPIRIT}/users/invite`, { email, role }), 'invite');
  const token = invitationTokenInMail(await mail.waitFor(email, { subject: /invited/, after: before }));
  keep(token);
  const accepted = json(ok(await anon('POST', `/api/v1/invitations/${token}/accept`, { password, display_name: 'Audit Person' }), 'accept'));
  return { id: accepted.user_id, email, password };
}
/** A user without a password (system admin's POST /api/v1/users). */
const bareUser = async () => json(ok(await api(SYSADMIN, 'POST', '/api/v1/users', { email: `${unique('u')}@audit.example`, display_name: 'Bare User' }), 'create user')).id as string;
const songwriter = async () => json(ok(await api(DMP_EDITOR, 'POST', '/api/v1/songwriters', { last_name: unique('Writer') }, DMP), 'songwriter')).id as string;
const work = async () => json(ok(await api(DMP_EDITOR, 'POST', '/api/v1/works', { title: unique('Work') }, DMP), 'work')).id as string;
const recording = async () => json(ok(await api(DMP_EDITOR, 'POST', '/api/v1/recordings', { title: unique('Recording') }, DMP), 'recording')).id as string;
const newPublisher = async () => json(ok(await api(SYSADMIN, 'POST', '/api/v1/publishers', { name: 'Audit Pub', slug: unique('audit').toLowerCase(), type: 'boutique' }), 'publisher')).id as string;
async function apiClient(): Promise<{ id: string; secret: string }> {
  const c = json(ok(await api(DMP_ADMIN, 'POST', `/api/v1/publishers/${DMP}/api-clients`, { name: unique('client') }), 'api client'));
  keep(c.client_secret);
  return { id: c.client_id, secret: c.client_secret };
}
async function enrolled(): Promise<{ person: Awaited<ReturnType<typeof person>>; secret: string }> {
  const p = await person();
  const enrol = json(ok(await api(p.id, 'POST', '/api/v1/users/me/mfa/totp'), 'enrol'));
  keep(enrol.secret);
  return { person: p, secret: enrol.secret };
}
const directoryBody = (over: Record<string, unknown> = {}) => ({
  url: 'ldaps://127.0.0.1:1',
  base_dn: 'DC=audit,DC=example',
  bind_dn: 'CN=svc,DC=audit,DC=example',
  bind_secret_ref: 'env:AUDIT_TEST_BIND_PASSWORD',
  email_domains: ['audit-directory.example'],
  group_role_map: [{ group_dn: 'CN=Editors,DC=audit,DC=example', role: 'editor' }],
  connect_timeout_ms: 200,
  operation_timeout_ms: 200,
  ...over,
});

/** What the one row of a write must say. `before`/`after` are compared exactly (changed fields only). */
type Expected = {
  action: AuditAction;
  /** the actor's id (null: anonymous or a background job) */
  actor: string | null;
  actorKind?: 'user' | 'api_client' | 'anonymous' | 'system';
  /** the chain (null: the platform's) */
  publisher: string | null;
  objectType: keyof typeof AUDITED_FIELDS;
  objectId: string | null;
  before?: unknown;
  after?: unknown;
};
/**
 * One write route's case: `setup` prepares what the request needs (its own rows are not counted)
 * and returns the request to make and the row it must append — or `none` with the reason it
 * writes nothing. `async`: the write happens after the answer (poll for it).
 */
type Case = () => Promise<{ request: () => Promise<Res>; expect: ((res: Res) => Expected | Promise<Expected>) | { none: string }; async?: boolean }>;

const CASES: Record<string, Case> = {
  // ---- the catalog (one factory: catalog/resource.ts) -----------------------------------------
  'POST /api/v1/works': async () => {
    const sw = await songwriter();
    const split = { songwriter_id: sw, role: 'CA', performance_share: 50, mechanical_share: 50, sync_share: 50 };
    return {
      request: () => api(DMP_EDITOR, 'POST', '/api/v1/works', { title: 'Audit Song', iswc: 'T0345246801', songwriters: [split] }, DMP),
      expect: (r) => ({ action: 'work.created', actor: DMP_EDITOR, publisher: DMP, objectType: 'work', objectId: json(r).id, before: null, after: { title: 'Audit Song', iswc: 'T-034.524.680-1', songwriters: [split] } }),
    };
  },
  'PATCH /api/v1/works/{id}': async () => {
    const id = json(ok(await api(DMP_EDITOR, 'POST', '/api/v1/works', { title: 'Old Title', language: 'en' }, DMP), 'work')).id;
    const sw = await songwriter();
    const split = { songwriter_id: sw, role: 'C', performance_share: 100, mechanical_share: 100, sync_share: 100 };
    return {
      request: () => api(DMP_ADMIN, 'PATCH', `/api/v1/works/${id}`, { title: 'New Title', language: 'en', songwriters: [split] }, DMP),
      expect: () => ({ action: 'work.updated', actor: DMP_ADMIN, publisher: DMP, objectType: 'work', objectId: id, before: { title: 'Old Title', songwriters: [] }, after: { title: 'New Title', songwriters: [split] } }),
    };
  },
  'DELETE /api/v1/works/{id}': async () => {
    const id = await work();
    const title = json(await api(DMP_ADMIN, 'GET', `/api/v1/works/${id}`, undefined, DMP)).title;
    return { request: () => api(DMP_ADMIN, 'DELETE', `/api/v1/works/${id}`, undefined, DMP), expect: () => ({ action: 'work.deleted', actor: DMP_ADMIN, publisher: DMP, objectType: 'work', objectId: id, before: { title }, after: null }) };
  },
  'POST /api/v1/songwriters': async () => ({
    request: () => api(DMP_EDITOR, 'POST', '/api/v1/songwriters', { first_name: 'Ada', last_name: 'Lovelace', pro: 'ASCAP' }, DMP),
    expect: (r) => ({ action: 'songwriter.created', actor: DMP_EDITOR, publisher: DMP, objectType: 'songwriter', objectId: json(r).id, before: null, after: { first_name: 'Ada', last_name: 'Lovelace', pro: 'ASCAP' } }),
  }),
  'PATCH /api/v1/songwriters/{id}': async () => {
    const id = json(ok(await api(DMP_EDITOR, 'POST', '/api/v1/songwriters', { last_name: 'Hopper', pro: 'BMI' }, DMP), 'songwriter')).id;
    return {
      request: () => api(DMP_EDITOR, 'PATCH', `/api/v1/songwriters/${id}`, { first_name: 'Grace', pro: 'BMI' }, DMP),
      expect: () => ({ action: 'songwriter.updated', actor: DMP_EDITOR, publisher: DMP, objectType: 'songwriter', objectId: id, before: { first_name: null }, after: { first_name: 'Grace' } }),
    };
  },
  'DELETE /api/v1/songwriters/{id}': async () => {
    const id = await songwriter();
    return { request: () => api(DMP_ADMIN, 'DELETE', `/api/v1/songwriters/${id}`, undefined, DMP), expect: () => ({ action: 'songwriter.deleted', actor: DMP_ADMIN, publisher: DMP, objectType: 'songwriter', objectId: id, before: { last_name: /^Writer-/ }, after: null }) };
  },
  'POST /api/v1/recordings': async () => ({
    request: () => api(DMP_EDITOR, 'POST', '/api/v1/recordings', { title: 'Take One', duration_ms: 180_000 }, DMP),
    expect: (r) => ({ action: 'recording.created', actor: DMP_EDITOR, publisher: DMP, objectType: 'recording', objectId: json(r).id, before: null, after: { title: 'Take One', duration_ms: 180_000 } }),
  }),
  'PATCH /api/v1/recordings/{id}': async () => {
    const id = await recording();
    return {
      request: () => api(DMP_EDITOR, 'PATCH', `/api/v1/recordings/${id}`, { release_date: '2026-01-02' }, DMP),
      expect: () => ({ action: 'recording.updated', actor: DMP_EDITOR, publisher: DMP, objectType: 'recording', objectId: id, before: { release_date: null }, after: { release_date: '2026-01-02' } }),
    };
  },
  'DELETE /api/v1/recordings/{id}': async () => {
    const id = await recording();
    return { request: () => api(DMP_ADMIN, 'DELETE', `/api/v1/recordings/${id}`, undefined, DMP), expect: () => ({ action: 'recording.deleted', actor: DMP_ADMIN, publisher: DMP, objectType: 'recording', objectId: id, before: { title: /^Recording-/ }, after: null }) };
  },

  // ---- publishers ---------------------------------------------------------------------------------
  'POST /api/v1/publishers': async () => {
    const slug = unique('new-pub').toLowerCase();
    return {
      request: () => api(SYSADMIN, 'POST', '/api/v1/publishers', { name: 'Nordic Notes', slug, type: 'professional' }),
      // the first row of the new publisher's own chain
      expect: (r) => ({ action: 'publisher.created', actor: SYSADMIN, publisher: json(r).id, objectType: 'publisher', objectId: json(r).id, before: null, after: { name: 'Nordic Notes', slug, type: 'professional', business_model: 'traditional', status: 'active' } }),
    };
  },
  'PUT /api/v1/publishers/{publisherId}': async () => ({
    request: () => api(SPIRIT_OWNER, 'PUT', `/api/v1/publishers/${SPIRIT}`, { name: 'Spirit Music' }),
    expect: () => ({ action: 'publisher.updated', actor: SPIRIT_OWNER, publisher: SPIRIT, objectType: 'publisher', objectId: SPIRIT, before: { name: 'Spirit' }, after: { name: 'Spirit Music' } }),
  }),
  'DELETE /api/v1/publishers/{publisherId}': async () => {
    const id = await newPublisher();
    return { request: () => api(SYSADMIN, 'DELETE', `/api/v1/publishers/${id}`), expect: () => ({ action: 'publisher.archived', actor: SYSADMIN, publisher: id, objectType: 'publisher', objectId: id, before: { status: 'active' }, after: { status: 'archived' } }) };
  },
  'PUT /api/v1/publishers/{publisherId}/status': async () => {
    const id = await newPublisher();
    return {
      request: () => api(SYSADMIN, 'PUT', `/api/v1/publishers/${id}/status`, { status: 'suspended' }),
      expect: () => ({ action: 'publisher.status_changed', actor: SYSADMIN, publisher: id, objectType: 'publisher', objectId: id, before: { status: 'active' }, after: { status: 'suspended' } }),
    };
  },
  'PUT /api/v1/publishers/{publisherId}/settings': async () => {
    const current = json(await api(SPIRIT_OWNER, 'GET', `/api/v1/publishers/${SPIRIT}/settings`));
    const body = Object.fromEntries(Object.entries({ ...current, timezone: 'Europe/London' }).filter(([, v]) => v !== null));
    return {
      request: () => api(SPIRIT_OWNER, 'PUT', `/api/v1/publishers/${SPIRIT}/settings`, body),
      expect: () => ({ action: 'publisher_settings.updated', actor: SPIRIT_OWNER, publisher: SPIRIT, objectType: 'publisher_settings', objectId: SPIRIT, before: { timezone: current.timezone }, after: { timezone: 'Europe/London' } }),
    };
  },
  'PUT /api/v1/publishers/{publisherId}/branding': async () => ({
    request: () => api(SPIRIT_OWNER, 'PUT', `/api/v1/publishers/${SPIRIT}/branding`, { primary_color: '#112233' }),
    expect: () => ({ action: 'publisher_branding.updated', actor: SPIRIT_OWNER, publisher: SPIRIT, objectType: 'publisher_branding', objectId: SPIRIT, before: { primary_color: null }, after: { primary_color: '#112233' } }),
  }),

  // ---- departments, roles -------------------------------------------------------------------------
  'POST /api/v1/publishers/{publisherId}/departments': async () => ({
    request: () => api(DMP_ADMIN, 'POST', `/api/v1/publishers/${DMP}/departments`, { name: 'Quote "A", B', description: 'line one\nline two' }),
    expect: (r) => ({ action: 'department.created', actor: DMP_ADMIN, publisher: DMP, objectType: 'department', objectId: json(r).id, before: null, after: { name: 'Quote "A", B', description: 'line one\nline two' } }),
  }),
  'PUT /api/v1/publishers/{publisherId}/departments/{departmentId}': async () => {
    const d = json(ok(await api(DMP_ADMIN, 'POST', `/api/v1/publishers/${DMP}/departments`, { name: unique('Dept'), description: 'same' }), 'department'));
    return {
      request: () => api(DMP_ADMIN, 'PUT', `/api/v1/publishers/${DMP}/departments/${d.id}`, { name: `${d.name} (renamed)`, description: 'same' }),
      expect: () => ({ action: 'department.updated', actor: DMP_ADMIN, publisher: DMP, objectType: 'department', objectId: d.id, before: { name: d.name }, after: { name: `${d.name} (renamed)` } }),
    };
  },
  'DELETE /api/v1/publishers/{publisherId}/departments/{departmentId}': async () => {
    const d = json(ok(await api(DMP_ADMIN, 'POST', `/api/v1/publishers/${DMP}/departments`, { name: unique('Gone') }), 'department'));
    return { request: () => api(DMP_ADMIN, 'DELETE', `/api/v1/publishers/${DMP}/departments/${d.id}`), expect: () => ({ action: 'department.deleted', actor: DMP_ADMIN, publisher: DMP, objectType: 'department', objectId: d.id, before: { name: d.name, description: '' }, after: null }) };
  },
  'POST /api/v1/publishers/{publisherId}/roles': async () => {
    const name = unique('auditors').toLowerCase();
    return {
      request: () => api(DMP_ADMIN, 'POST', `/api/v1/publishers/${DMP}/roles`, { name, permissions: ['audit:read'] }),
      expect: (r) => ({ action: 'role.created', actor: DMP_ADMIN, publisher: DMP, objectType: 'role', objectId: json(r).id, before: null, after: { name, display_name: name, description: '', permissions: ['audit:read'] } }),
    };
  },
  'PUT /api/v1/publishers/{publisherId}/roles/{roleId}': async () => {
    const role = json(ok(await api(DMP_ADMIN, 'POST', `/api/v1/publishers/${DMP}/roles`, { name: unique('readers').toLowerCase(), permissions: ['works:read'] }), 'role'));
    return {
      request: () => api(DMP_ADMIN, 'PUT', `/api/v1/publishers/${DMP}/roles/${role.id}`, { display_name: role.display_name, permissions: ['works:read', 'audit:read'] }),
      expect: () => ({ action: 'role.updated', actor: DMP_ADMIN, publisher: DMP, objectType: 'role', objectId: role.id, before: { permissions: ['works:read'] }, after: { permissions: ['audit:read', 'works:read'] } }),
    };
  },
  'DELETE /api/v1/publishers/{publisherId}/roles/{roleId}': async () => {
    const role = json(ok(await api(DMP_ADMIN, 'POST', `/api/v1/publishers/${DMP}/roles`, { name: unique('temp').toLowerCase(), permissions: [] }), 'role'));
    return { request: () => api(DMP_ADMIN, 'DELETE', `/api/v1/publishers/${DMP}/roles/${role.id}`), expect: () => ({ action: 'role.deleted', actor: DMP_ADMIN, publisher: DMP, objectType: 'role', objectId: role.id, before: { name: role.name, display_name: role.name, description: '' }, after: null }) };
  },

  // ---- members and invitations --------------------------------------------------------------------
  'POST /api/v1/publishers/{publisherId}/users/invite': async () => {
    const email = `${unique('invitee')}@audit.example`;
    return {
      request: () => api(DMP_ADMIN, 'POST', `/api/v1/publishers/${DMP}/users/invite`, { email, role: 'viewer' }),
      expect: (r) => ({ action: 'invitation.created', actor: DMP_ADMIN, publisher: DMP, objectType: 'invitation', objectId: json(r).id, before: null, after: { email, role: 'viewer', expires_at: json(r).expires_at } }),
    };
  },
  'DELETE /api/v1/publishers/{publisherId}/invitations/{invitationId}': async () => {
    const inv = json(ok(await api(DMP_ADMIN, 'POST', `/api/v1/publishers/${DMP}/users/invite`, { email: `${unique('revoked')}@audit.example`, role: 'viewer' }), 'invite'));
    return {
      request: () => api(DMP_ADMIN, 'DELETE', `/api/v1/publishers/${DMP}/invitations/${inv.id}`),
      expect: () => ({ action: 'invitation.revoked', actor: DMP_ADMIN, publisher: DMP, objectType: 'invitation', objectId: inv.id, before: { revoked: false }, after: { revoked: true } }),
    };
  },
  'PUT /api/v1/publishers/{publisherId}/users/{userId}/role': async () => ({
    request: () => api(DMP_ADMIN, 'PUT', `/api/v1/publishers/${DMP}/users/${MULTI}/role`, { role: 'editor' }),
    expect: () => ({ action: 'member.role_changed', actor: DMP_ADMIN, publisher: DMP, objectType: 'member', objectId: MULTI, before: { role: 'viewer' }, after: { role: 'editor' } }),
  }),
  'DELETE /api/v1/publishers/{publisherId}/users/{userId}': async () => {
    const p = await person('editor');
    return { request: () => api(SPIRIT_OWNER, 'DELETE', `/api/v1/publishers/${SPIRIT}/users/${p.id}`), expect: () => ({ action: 'member.removed', actor: SPIRIT_OWNER, publisher: SPIRIT, objectType: 'member', objectId: p.id, before: { role: 'editor' }, after: null }) };
  },
  'POST /api/v1/invitations/{token}/accept': async () => {
    const email = `${unique('joiner')}@audit.example`;
    const before = (await mail.all()).length;
    const inv = json(ok(await api(SPIRIT_OWNER, 'POST', `/api/v1/publishers/${SPIRIT}/users/invite`, { email, role: 'editor' }), 'invite'));
    const token = invitationTokenInMail(await mail.waitFor(email, { subject: /invited/, after: before }));
    const password = `pw-${randomUUID()}`;
    keep(token, password);
    return {
      request: () => anon('POST', `/api/v1/invitations/${token}/accept`, { password, display_name: 'Joiner' }),
      // the invitee is the actor (the token proved who they are), in the publisher's chain
      expect: (r) => ({ action: 'member.added', actor: json(r).user_id, publisher: SPIRIT, objectType: 'member', objectId: json(r).user_id, before: null, after: { role: 'editor', invitation_id: inv.id } }),
    };
  },

  // ---- users ----------------------------------------------------------------------------------------
  'PUT /api/v1/users/me': async () => ({
    request: () => api(MULTI, 'PUT', '/api/v1/users/me', { display_name: 'Multi, "the" Publisher', timezone: 'Europe/Paris' }),
    expect: () => ({ action: 'user.profile_updated', actor: MULTI, publisher: null, objectType: 'user', objectId: MULTI, before: { display_name: 'Multi Publisher', timezone: null }, after: { display_name: 'Multi, "the" Publisher', timezone: 'Europe/Paris' } }),
  }),
  'POST /api/v1/users': async () => {
    const email = `${unique('created')}@audit.example`;
    return {
      request: () => api(SYSADMIN, 'POST', '/api/v1/users', { email, display_name: 'Created' }),
      expect: (r) => ({ action: 'user.created', actor: SYSADMIN, publisher: null, objectType: 'user', objectId: json(r).id, before: null, after: { email, display_name: 'Created', kind: 'person', status: 'active' } }),
    };
  },
  'DELETE /api/v1/users/{userId}': async () => {
    const id = await bareUser();
    return { request: () => api(SYSADMIN, 'DELETE', `/api/v1/users/${id}`), expect: () => ({ action: 'user.deleted', actor: SYSADMIN, publisher: null, objectType: 'user', objectId: id, before: { display_name: 'Bare User', status: 'active', kind: 'person', auth_source: 'internal', email: /@audit\.example$/ }, after: null }) };
  },
  'POST /api/v1/users/{userId}/publishers': async () => {
    const id = await bareUser();
    return {
      request: () => api(SYSADMIN, 'POST', `/api/v1/users/${id}/publishers`, { publisher_id: SPIRIT, role: 'viewer' }),
      expect: () => ({ action: 'member.added', actor: SYSADMIN, publisher: SPIRIT, objectType: 'member', objectId: id, before: null, after: { role: 'viewer' } }),
    };
  },
  'PUT /api/v1/users/{userId}/status': async () => {
    const id = await bareUser();
    return { request: () => api(SYSADMIN, 'PUT', `/api/v1/users/${id}/status`, { status: 'disabled' }), expect: () => ({ action: 'user.status_changed', actor: SYSADMIN, publisher: null, objectType: 'user', objectId: id, before: { status: 'active' }, after: { status: 'disabled' } }) };
  },
  'PUT /api/v1/users/{userId}/publishers/{publisherId}': async () => {
    const p = await person('viewer');
    return {
      request: () => api(SPIRIT_OWNER, 'PUT', `/api/v1/users/${p.id}/publishers/${SPIRIT}`, { role: 'manager' }),
      expect: () => ({ action: 'member.role_changed', actor: SPIRIT_OWNER, publisher: SPIRIT, objectType: 'member', objectId: p.id, before: { role: 'viewer' }, after: { role: 'manager' } }),
    };
  },
  'DELETE /api/v1/users/{userId}/publishers/{publisherId}': async () => {
    const p = await person('viewer');
    return { request: () => api(SPIRIT_OWNER, 'DELETE', `/api/v1/users/${p.id}/publishers/${SPIRIT}`), expect: () => ({ action: 'member.removed', actor: SPIRIT_OWNER, publisher: SPIRIT, objectType: 'member', objectId: p.id, before: { role: 'viewer' }, after: null }) };
  },

  // ---- API clients --------------------------------------------------------------------------------
  'POST /api/v1/publishers/{publisherId}/api-clients': async () => {
    const name = unique('ingest');
    return {
      request: async () => {
        const r = await api(DMP_ADMIN, 'POST', `/api/v1/publishers/${DMP}/api-clients`, { name });
        keep(json(r).client_secret);
        return r;
      },
      expect: (r) => ({ action: 'api_client.created', actor: DMP_ADMIN, publisher: DMP, objectType: 'api_client', objectId: json(r).client_id, before: null, after: { name } }),
    };
  },
  'POST /api/v1/publishers/{publisherId}/api-clients/{clientId}/rotate': async () => {
    const c = await apiClient();
    return {
      request: async () => {
        const r = await api(DMP_ADMIN, 'POST', `/api/v1/publishers/${DMP}/api-clients/${c.id}/rotate`);
        keep(json(r).client_secret);
        return r;
      },
      expect: () => ({ action: 'api_client.secret_rotated', actor: DMP_ADMIN, publisher: DMP, objectType: 'api_client', objectId: c.id, before: null, after: { rotated: true } }),
    };
  },
  'DELETE /api/v1/publishers/{publisherId}/api-clients/{clientId}': async () => {
    const c = await apiClient();
    return { request: () => api(DMP_ADMIN, 'DELETE', `/api/v1/publishers/${DMP}/api-clients/${c.id}`), expect: () => ({ action: 'api_client.revoked', actor: DMP_ADMIN, publisher: DMP, objectType: 'api_client', objectId: c.id, before: { revoked: false }, after: { revoked: true } }) };
  },

  // ---- sign-in (the sign-in service's role; the platform chain) ------------------------------------
  'POST /api/v1/auth/login': async () => ({
    request: async () => {
      const r = await anon('POST', '/api/v1/auth/login', { email: 'editor@dmp.example', password: DEMO_PASSWORD });
      keep(json(r).access_token, json(r).refresh_token);
      return r;
    },
    expect: (r) => ({ action: 'auth.login_succeeded', actor: DMP_EDITOR, publisher: null, objectType: 'user', objectId: DMP_EDITOR, before: null, after: { amr: ['pwd'], session_id: sidOf(json(r).access_token) } }),
  }),
  'POST /api/v1/auth/mfa/verify': async () => {
    const challenge = await login('creator1@songtrust.example');
    return {
      request: async () => {
        const r = await anon('POST', '/api/v1/auth/mfa/verify', { mfa_token: challenge.mfa_token, code: totpCode(DEMO_TOTP_SECRETS['creator1@songtrust.example']!) });
        keep(json(r).access_token, json(r).refresh_token);
        return r;
      },
      expect: (r) => ({ action: 'auth.login_succeeded', actor: CREATOR1, publisher: null, objectType: 'user', objectId: CREATOR1, before: null, after: { amr: ['pwd', 'otp', 'mfa'], session_id: sidOf(json(r).access_token) } }),
    };
  },
  'POST /api/v1/auth/refresh': async () => {
    const s = await login('viewer@dmp.example');
    return {
      request: async () => {
        const r = await anon('POST', '/api/v1/auth/refresh', { refresh_token: s.refresh_token });
        keep(json(r).access_token, json(r).refresh_token);
        return r;
      },
      expect: () => ({ action: 'session.refreshed', actor: DMP_VIEWER, publisher: null, objectType: 'session', objectId: sidOf(s.access_token), before: null, after: null }),
    };
  },
  'POST /api/v1/auth/token': async () => {
    const c = await apiClient();
    return {
      request: async () => {
        const r = await anon('POST', '/api/v1/auth/token', { grant_type: 'client_credentials', client_id: c.id, client_secret: c.secret });
        keep(json(r).access_token);
        return r;
      },
      expect: () => ({ action: 'auth.client_token_issued', actor: c.id, actorKind: 'api_client', publisher: null, objectType: 'api_client', objectId: c.id, before: null, after: null }),
    };
  },
  'POST /api/v1/auth/logout': async () => {
    const s = await login('viewer@dmp.example');
    return { request: () => withToken(s.access_token, 'POST', '/api/v1/auth/logout'), expect: () => ({ action: 'auth.logout', actor: DMP_VIEWER, publisher: null, objectType: 'session', objectId: sidOf(s.access_token), before: null, after: null }) };
  },
  'DELETE /api/v1/auth/sessions/{id}': async () => {
    const mine = await login('viewer@dmp.example');
    const lost = await login('viewer@dmp.example');
    return {
      request: () => withToken(mine.access_token, 'DELETE', `/api/v1/auth/sessions/${sidOf(lost.access_token)}`),
      expect: () => ({ action: 'session.revoked', actor: DMP_VIEWER, publisher: null, objectType: 'session', objectId: sidOf(lost.access_token), before: null, after: { reason: 'revoked_by_user' } }),
    };
  },
  'DELETE /api/v1/publishers/{publisherId}/users/{userId}/sessions': async () => {
    await login('manager@dmp.example');
    return {
      request: () => api(DMP_ADMIN, 'DELETE', `/api/v1/publishers/${DMP}/users/${DMP_MANAGER}/sessions`),
      // appended by the sign-in service (its role), in the publisher's chain
      expect: async () => ({ action: 'member.sessions_revoked', actor: DMP_ADMIN, publisher: DMP, objectType: 'member', objectId: DMP_MANAGER, before: null, after: { sessions_revoked: Number((await su.query(`select count(*) as n from user_sessions where user_id = $1 and revoked_reason = 'revoked_by_admin'`, [DMP_MANAGER])).rows[0].n) } }),
    };
  },
  'POST /api/v1/auth/password/forgot': async () => {
    const p = await person();
    return {
      request: () => anon('POST', '/api/v1/auth/password/forgot', { email: p.email }),
      async: true,
      // nobody signed in asked: anonymous, about the account the email names
      expect: () => ({ action: 'user.password_reset_requested', actor: null, actorKind: 'anonymous', publisher: null, objectType: 'user', objectId: p.id, before: null, after: null }),
    };
  },
  'POST /api/v1/auth/password/reset': async () => {
    const p = await person();
    const before = (await mail.all()).length;
    ok(await anon('POST', '/api/v1/auth/password/forgot', { email: p.email }), 'forgot');
    const token = tokenInMail(await mail.waitFor(p.email, { subject: /password/i, after: before }));
    const password = `new-${randomUUID()}`;
    keep(token, password);
    return { request: () => anon('POST', '/api/v1/auth/password/reset', { token, new_password: password }), expect: () => ({ action: 'user.password_reset', actor: p.id, publisher: null, objectType: 'user', objectId: p.id, before: null, after: { sessions_revoked: 0 } }) };
  },
  'POST /api/v1/auth/email/verification': async () => {
    const p = await person();
    return { request: () => api(p.id, 'POST', '/api/v1/auth/email/verification'), expect: () => ({ action: 'user.email_verification_requested', actor: p.id, publisher: null, objectType: 'user', objectId: p.id, before: null, after: null }) };
  },
  'POST /api/v1/auth/email/verify': async () => {
    const p = await person();
    const before = (await mail.all()).length;
    ok(await api(p.id, 'POST', '/api/v1/auth/email/verification'), 'verification mail');
    const token = tokenInMail(await mail.waitFor(p.email, { subject: /confirm your email/i, after: before }));
    keep(token);
    // an invited person's email counts as verified already; the link confirms it again
    return { request: () => anon('POST', '/api/v1/auth/email/verify', { token }), expect: () => ({ action: 'user.email_verified', actor: p.id, publisher: null, objectType: 'user', objectId: p.id, before: {}, after: {} }) };
  },
  'PUT /api/v1/users/me/password': async () => {
    const p = await person();
    const s = await login(p.email, p.password);
    const other = await login(p.email, p.password);
    const password = `changed-${randomUUID()}`;
    keep(password, other.access_token);
    return {
      request: () => withToken(s.access_token, 'PUT', '/api/v1/users/me/password', { current_password: p.password, new_password: password }),
      expect: () => ({ action: 'user.password_changed', actor: p.id, publisher: null, objectType: 'user', objectId: p.id, before: null, after: { sessions_revoked: 1 } }),
    };
  },
  'POST /api/v1/users/me/mfa/totp': async () => {
    const p = await person();
    return {
      request: async () => {
        const r = await api(p.id, 'POST', '/api/v1/users/me/mfa/totp');
        keep(json(r).secret, json(r).otpauth_uri);
        return r;
      },
      expect: () => ({ action: 'user.mfa_enrolment_started', actor: p.id, publisher: null, objectType: 'user', objectId: p.id, before: null, after: null }),
    };
  },
  'POST /api/v1/users/me/mfa/totp/confirm': async () => {
    const e = await enrolled();
    return {
      request: async () => {
        const r = await api(e.person.id, 'POST', '/api/v1/users/me/mfa/totp/confirm', { code: totpCode(e.secret) });
        keep(...((json(r).recovery_codes as string[] | undefined) ?? []));
        return r;
      },
      expect: () => ({ action: 'user.mfa_enabled', actor: e.person.id, publisher: null, objectType: 'user', objectId: e.person.id, before: { mfa_enabled: false }, after: { mfa_enabled: true } }),
    };
  },
  'DELETE /api/v1/users/me/mfa/totp': async () => {
    const e = await enrolled();
    const codes = json(ok(await api(e.person.id, 'POST', '/api/v1/users/me/mfa/totp/confirm', { code: totpCode(e.secret) }), 'confirm')).recovery_codes as string[];
    keep(...codes);
    // the confirmation used this time step's code; the next step's is accepted (±1 step) and unused
    return {
      request: () => api(e.person.id, 'DELETE', '/api/v1/users/me/mfa/totp', { code: totpCode(e.secret, Date.now() + 30_000) }),
      expect: () => ({ action: 'user.mfa_disabled', actor: e.person.id, publisher: null, objectType: 'user', objectId: e.person.id, before: { mfa_enabled: true }, after: { mfa_enabled: false } }),
    };
  },

  // ---- directory configurations (system admins; the publisher's chain) -----------------------------
  'PUT /api/v1/publishers/{publisherId}/directory': async () => {
    const { publisher_id: _, ...current } = json(ok(await api(SYSADMIN, 'GET', `/api/v1/publishers/${DMP}/directory`), 'directory'));
    return {
      request: () => api(SYSADMIN, 'PUT', `/api/v1/publishers/${DMP}/directory`, { ...current, operation_timeout_ms: current.operation_timeout_ms + 1 }),
      expect: () => ({ action: 'directory_config.updated', actor: SYSADMIN, publisher: DMP, objectType: 'directory_config', objectId: DMP, before: { operation_timeout_ms: current.operation_timeout_ms }, after: { operation_timeout_ms: current.operation_timeout_ms + 1 } }),
    };
  },
  'DELETE /api/v1/publishers/{publisherId}/directory': async () => {
    ok(await api(SYSADMIN, 'PUT', `/api/v1/publishers/${SONGTRUST}/directory`, directoryBody()), 'create directory config');
    return {
      request: () => api(SYSADMIN, 'DELETE', `/api/v1/publishers/${SONGTRUST}/directory`),
      // every field that has a value (false, 0 and the defaults too), no ca_file or tls_server_name (null)
      expect: () => ({ action: 'directory_config.deleted', actor: SYSADMIN, publisher: SONGTRUST, objectType: 'directory_config', objectId: SONGTRUST, before: { ...directoryBody(), start_tls: false, login_attribute: 'userPrincipalName', enabled: true }, after: null }),
    };
  },
  'POST /api/v1/publishers/{publisherId}/directory/test': async () => ({
    request: () => api(SYSADMIN, 'POST', `/api/v1/publishers/${DMP}/directory/test`),
    expect: { none: 'connects and binds as the service account and reports; writes nothing' },
  }),

  // ---- accounts (modules/accounts) ----------------------------------------------------------------
  'PUT /api/v1/publishers/{publisherId}/account/plan': async () => ({
    request: () => api(SPIRIT_OWNER, 'PUT', `/api/v1/publishers/${SPIRIT}/account/plan`, { plan_type: 'enterprise', billing_cycle: 'annual' }),
    expect: () => ({ action: 'account.plan_changed', actor: SPIRIT_OWNER, publisher: SPIRIT, objectType: 'account', objectId: SPIRIT, before: { plan_type: 'professional', billing_cycle: 'monthly', seats: 50 }, after: { plan_type: 'enterprise', billing_cycle: 'annual', seats: 2000 } }),
  }),

  // ---- the authorization model (modules/authz; system admins; the platform chain) -----------------
  'POST /api/v1/authz/models/shadow': async () => {
    await deployModel({ apiUrl: OPENFGA_API_URL, storeName: AUTHZ_STORE });
    return { request: () => api(SYSADMIN, 'POST', '/api/v1/authz/models/shadow', { dsl: probeModel() }), expect: { none: 'a shadow run replays decisions in a scratch store; nothing live changes' } };
  },
  'POST /api/v1/authz/models/deploy': async () => {
    await deployModel({ apiUrl: OPENFGA_API_URL, storeName: AUTHZ_STORE });
    const active = json(ok(await api(SYSADMIN, 'GET', '/api/v1/authz/models'), 'models')).active;
    return {
      request: () => api(SYSADMIN, 'POST', '/api/v1/authz/models/deploy', { dsl: probeModel() }),
      expect: (r) => ({ action: 'authz.model_deployed', actor: SYSADMIN, publisher: null, objectType: 'authz_model', objectId: null, before: null, after: { model_id: json(r).model_id, previous_model_id: active, written: true, changed_decisions: 0, accepted_changes: false } }),
    };
  },
  'POST /api/v1/authz/models/{modelId}/rollback': rollbackCase,
  // the rule of the route above: model ids are ULIDs, which `{param}` (UUIDs) does not match
  'POST /api/v1/authz/models/*': rollbackCase,
};

/**
 * The model file with one more relation on `system`: a content change that changes no decision
 * (always the same one, so no deploy drops a relation an earlier case added).
 */
function probeModel(): string {
  return readFileSync(DEFAULT_MODEL_FILE, 'utf8').replace(/(type system\n  relations\n)/, '$1    define audit_probe: [user]\n');
}

/** Roll back to the model file's content after a probe deploy. */
async function rollbackCase(): ReturnType<Case> {
  const { modelId: fileModel } = await deployModel({ apiUrl: OPENFGA_API_URL, storeName: AUTHZ_STORE });
  const probe = json(ok(await api(SYSADMIN, 'POST', '/api/v1/authz/models/deploy', { dsl: probeModel() }), 'deploy a probe')).model_id;
  return {
    request: () => api(SYSADMIN, 'POST', `/api/v1/authz/models/${fileModel}/rollback`, {}),
    expect: (r) => ({ action: 'authz.model_rolled_back', actor: SYSADMIN, publisher: null, objectType: 'authz_model', objectId: null, before: null, after: { model_id: json(r).model_id, previous_model_id: probe, written: true, restored_from: fileModel } }),
  };
}

/** The write operations the API has: its OpenAPI document's, and policies/routes.yaml's. */
function writeOperations(): string[] {
  const doc = ta.app.swagger() as { paths: Record<string, Record<string, unknown>> };
  const fromApp = Object.entries(doc.paths).flatMap(([path, item]) => Object.keys(item).filter((m) => m !== 'get' && m !== 'head').map((m) => `${m.toUpperCase()} ${path}`));
  const fromRules = loadRouteRules().filter((r) => r.method !== 'GET' && r.method !== 'HEAD').map((r) => `${r.method} ${r.path}`);
  return [...new Set([...fromApp, ...fromRules])].sort();
}

/** The database clock now (rows appended later have a later occurred_at). */
const clock = async () => (await su.query(`select clock_timestamp()::text as t`)).rows[0].t as string;
const rowsSince = async (mark: string) => (await su.query(`select * from audit_events where occurred_at > $1::timestamptz order by occurred_at, id`, [mark])).rows;

t.test('every write route appends exactly one audit row with actor, action, chain, object and the changed fields', async (t) => {
  const ops = writeOperations();
  t.ok(ops.length >= 50, `${ops.length} write operations`);
  for (const key of Object.keys(CASES)) t.ok(ops.includes(key), `CASES["${key}"] is a route of the API`);
  for (const op of ops) {
    await t.test(op, async (t) => {
      const make = CASES[op];
      if (!make) return void t.fail(`no audit case for ${op}: add one to CASES in test/catalog-api/audit.test.ts`);
      const c = await make();
      const mark = await clock();
      const res = await c.request();
      t.ok(res.statusCode >= 200 && res.statusCode < 300, `${res.statusCode} ${res.statusCode >= 300 ? res.body : ''}`);
      if (c.async) {
        const deadline = Date.now() + 10_000;
        while ((await rowsSince(mark)).length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
        await new Promise((r) => setTimeout(r, 200)); // and nothing more arrives
      }
      const rows = await rowsSince(mark);
      if ('none' in c.expect) return void t.same(rows, [], `no row: ${c.expect.none}`);
      t.equal(rows.length, 1, 'exactly one row');
      const row = rows[0];
      if (!row) return;
      const e = await c.expect(res);
      t.match(
        { action: row.action, actor_id: row.actor_id, actor_kind: row.actor_kind, publisher_id: row.publisher_id, object_type: row.object_type, object_id: row.object_id },
        { action: e.action, actor_id: e.actor, actor_kind: e.actorKind ?? (e.actor ? 'user' : 'anonymous'), publisher_id: e.publisher, object_type: e.objectType, object_id: e.objectId },
      );
      t.same(Object.keys(row.before ?? {}).sort(), Object.keys((e.before as object | null) ?? {}).sort(), 'before: the changed fields, no others');
      t.same(Object.keys(row.after ?? {}).sort(), Object.keys((e.after as object | null) ?? {}).sort(), 'after: the changed fields, no others');
      if (e.before !== undefined) t.match(row.before, e.before, 'before');
      if (e.after !== undefined) t.match(row.after, e.after, 'after');
      if (e.before === null) t.equal(row.before, null);
      if (e.after === null) t.equal(row.after, null);
      t.match(row, { request_id: /\S/, client_ip: /\S/, user_agent: /\S/, chain_seq: /^\d+$/, hash: /^[0-9a-f]{64}$/ }, 'request id, client address, user agent; chained');
    });
  }
});

t.test('denied writes append nothing (and change nothing)', async (t) => {
  const w = await work();
  const session = await login('viewer@dmp.example');
  const denied: [string, () => Promise<Res>, number][] = [
    ['a viewer creates a work', () => api(DMP_VIEWER, 'POST', '/api/v1/works', { title: 'Nope' }, DMP), 403],
    ['an editor deletes a work', () => api(DMP_EDITOR, 'DELETE', `/api/v1/works/${w}`, undefined, DMP), 403],
    ['an invalid ISWC', () => api(DMP_EDITOR, 'POST', '/api/v1/works', { title: 'Bad', iswc: 'T0345246802' }, DMP), 422],
    ['a manager changes the settings', () => api(DMP_MANAGER, 'PUT', `/api/v1/publishers/${DMP}/settings`, { auth_policy: 'both' }), 403],
    ["an admin renames another publisher", () => api(DMP_ADMIN, 'PUT', `/api/v1/publishers/${SPIRIT}`, { name: 'Taken Over' }), 403],
    ['a publisher admin creates a user', () => api(DMP_ADMIN, 'POST', '/api/v1/users', { email: 'x@audit.example', display_name: 'X' }), 403],
    ['an unknown department', () => api(DMP_EDITOR, 'PATCH', `/api/v1/works/${w}`, { department_id: randomUUID() }, DMP), 422],
    ['a manager creates a custom role', () => api(DMP_MANAGER, 'POST', `/api/v1/publishers/${DMP}/roles`, { name: 'sneaky', permissions: [] }), 403],
    ['an editor invites someone', () => api(DMP_EDITOR, 'POST', `/api/v1/publishers/${DMP}/users/invite`, { email: 'y@audit.example', role: 'viewer' }), 403],
    ['a wrong current password', () => withToken(session.access_token, 'PUT', '/api/v1/users/me/password', { current_password: 'wrong-password-1', new_password: 'whatever-password-2' }), 401],
  ];
  for (const [what, request, status] of denied) {
    const worksBefore = (await su.query('select count(*) as n, max(updated_at) as u from works')).rows[0];
    const mark = await clock();
    const res = await request();
    t.equal(res.statusCode, status, `${what}: ${status}`);
    t.same(await rowsSince(mark), [], `${what}: no audit row`);
    t.same((await su.query('select count(*) as n, max(updated_at) as u from works')).rows[0], worksBefore, `${what}: no catalog change`);
  }
});

t.test('sign-in failures are recorded: wrong password, unknown email (anonymous), the lockout', async (t) => {
  const p = await person();
  const attempt = async (email: string) => {
    const mark = await clock();
    const r = await anon('POST', '/api/v1/auth/login', { email, password: 'not-the-password-at-all' });
    return { status: r.statusCode, rows: await rowsSince(mark) };
  };
  const wrong = await attempt(p.email);
  t.equal(wrong.status, 401);
  t.match(wrong.rows, [{ action: 'auth.login_failed', actor_id: p.id, actor_kind: 'user', publisher_id: null, object_type: 'user', object_id: p.id, after: { email: p.email, reason: 'invalid-credentials' } }]);
  t.equal(wrong.rows.length, 1);
  const unknown = await attempt(`${unique('nobody')}@audit.example`);
  t.equal(unknown.status, 401);
  t.match(unknown.rows, [{ action: 'auth.login_failed', actor_id: null, actor_kind: 'anonymous', object_id: null, after: { reason: 'invalid-credentials' } }]);
  for (let i = 0; i < 3; i++) await attempt(p.email);
  const locking = await attempt(p.email);
  t.equal(locking.rows.length, 1, 'the fifth failure: one row');
  t.match(locking.rows[0], { action: 'auth.locked_out', actor_id: p.id, after: { reason: 'failed-logins', lockout_level: 1, locked_until: /^\d{4}-/ } });
  const mark = await clock();
  const locked = await anon('POST', '/api/v1/auth/login', { email: p.email, password: p.password });
  t.equal(locked.statusCode, 429, 'locked: even the right password');
  t.match(await rowsSince(mark), [{ action: 'auth.login_failed', actor_id: p.id, after: { reason: 'account-locked' } }]);
  const clientMark = await clock();
  t.equal((await anon('POST', '/api/v1/auth/token', { grant_type: 'client_credentials', client_id: randomUUID(), client_secret: 'wrong' })).statusCode, 401);
  t.match(await rowsSince(clientMark), [{ action: 'auth.client_auth_failed', actor_kind: 'anonymous', object_type: 'api_client', after: { reason: 'invalid-client' } }]);
});

t.test('actors: an API client acts as itself; the directory sync as `system`', async (t) => {
  const c = await apiClient();
  const mark = await clock();
  const created = await api(c.id, 'POST', '/api/v1/works', { title: 'Ingested' }, DMP);
  t.equal(created.statusCode, 201, created.body);
  t.match(await rowsSince(mark), [{ action: 'work.created', actor_id: c.id, actor_kind: 'api_client', publisher_id: DMP, object_id: json(created).id }]);

  // a directory user signs in (their membership comes from the directory), then the directory changes
  const sam = `t.audit.${process.pid}`;
  const upn = `${sam}@dmp.example`;
  const user = await createTestUser(sam, upn, ['DMP-Viewers']);
  t.teardown(() => user.remove());
  const signedIn = await anon('POST', '/api/v1/auth/login', { email: upn, password: DEMO_PASSWORD });
  t.equal(signedIn.statusCode, 200, signedIn.body);
  keep(json(signedIn).access_token, json(signedIn).refresh_token);
  const id = String(decodeJwt(json(signedIn).access_token).sub);
  const redis = new Redis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379/0');
  t.teardown(() => redis.disconnect());
  const log = { info: () => undefined, warn: () => undefined, error: () => undefined };
  const deps = { orm: ta.authOrm, directory: createDirectoryGateway(), revocations: new RevocationPublisher({ orm: ta.authOrm, redis, accessTokenTtlMs: 900_000, intervalMs: 1000, log }), flushOutbox: async () => undefined, log };
  await asAdmin(async (ldap) => {
    await removeMember(ldap, demoGroupDn('DMP-Viewers'), user.dn);
    await addMember(ldap, demoGroupDn('DMP-Managers'), user.dn);
  });
  const moved = await clock();
  await syncDirectories(deps, DMP);
  t.match(await rowsSince(moved), [{ action: 'member.role_changed', actor_id: null, actor_kind: 'system', publisher_id: DMP, object_type: 'member', object_id: id, before: { role: 'viewer' }, after: { role: 'manager' } }]);
  await asAdmin((ldap) => removeMember(ldap, demoGroupDn('DMP-Managers'), user.dn));
  const dropped = await clock();
  await syncDirectories(deps, DMP);
  const rows = await rowsSince(dropped);
  t.equal(rows.length, 1);
  t.match(rows[0], { action: 'member.removed', actor_kind: 'system', object_id: id, before: { role: 'manager' }, after: { reason: 'no-mapped-group', sessions_revoked: 1 } });
});

t.test('route rules: the sidecar decides audit_read in the publisher context, can_administer for the whole log', async (t) => {
  const rules = loadRouteRules();
  const rule = (path: string) => rules.find((r) => r.method === 'GET' && r.path === path);
  for (const path of ['/api/v1/audit', '/api/v1/audit/export.csv']) t.same(rule(path), { method: 'GET', path, relation: 'audit_read', object: 'publisher:{publisher}' });
  for (const path of ['/api/v1/platform/audit', '/api/v1/platform/audit/export.csv']) t.same(rule(path), { method: 'GET', path, relation: 'can_administer', object: 'system:platform' });
  const paths = Object.keys((ta.app.swagger() as { paths: Record<string, unknown> }).paths).filter((p) => p.includes('/audit'));
  t.same(paths.sort(), ['/api/v1/audit', '/api/v1/audit/export.csv', '/api/v1/platform/audit', '/api/v1/platform/audit/export.csv']);
});

/** Every item of a list route, following next_cursor. */
async function all(sub: string, url: string, publisher: string | null, limit = 100): Promise<Record<string, any>[]> {
  const items: Record<string, any>[] = [];
  let cursor: string | null = null;
  do {
    const sep = url.includes('?') ? '&' : '?';
    const r = await api(sub, 'GET', `${url}${sep}limit=${limit}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`, undefined, publisher);
    if (r.statusCode !== 200) throw new Error(`${url}: ${r.statusCode} ${r.body}`);
    items.push(...json(r).items);
    cursor = json(r).next_cursor;
  } while (cursor);
  return items;
}
const countWhere = async (where: string, params: unknown[] = []) => Number((await su.query(`select count(*) as n from audit_events where ${where}`, params)).rows[0].n);

t.test("visibility: a publisher's admins see its rows only; viewers, editors and managers nothing; system admins everything", async (t) => {
  const dmp = await all(DMP_ADMIN, '/api/v1/audit', DMP);
  t.ok(dmp.length > 10, `${dmp.length} DMP rows`);
  t.ok(dmp.every((e) => e.publisher_id === DMP), 'only DMP rows');
  t.equal(dmp.length, await countWhere('publisher_id = $1', [DMP]), 'all of them');
  t.match(dmp[0], { id: /^[0-9a-f-]{36}$/, occurred_at: /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d+\+00:00$/, chain_seq: Number, hash: /^[0-9a-f]{64}$/ });
  const spirit = await all(SPIRIT_OWNER, '/api/v1/audit', SPIRIT);
  t.ok(spirit.length > 0 && spirit.every((e) => e.publisher_id === SPIRIT), "Spirit's admin: Spirit's rows");
  t.equal((await api(DMP_ADMIN, 'GET', '/api/v1/audit', undefined, SPIRIT)).statusCode, 403, 'not a member of Spirit');
  for (const who of [DMP_VIEWER, DMP_EDITOR, DMP_MANAGER]) {
    const r = await api(who, 'GET', '/api/v1/audit', undefined, DMP);
    t.equal(r.statusCode, 403, 'no audit:read');
    t.match(json(r), { type: /forbidden$/, detail: /audit:read/ });
    t.equal((await api(who, 'GET', '/api/v1/audit/export.csv', undefined, DMP)).statusCode, 403, 'nor the export');
  }
  t.equal((await api(DMP_ADMIN, 'GET', '/api/v1/audit')).statusCode, 400, 'the publisher log needs a publisher context');
  t.equal((await api(DMP_ADMIN, 'GET', '/api/v1/platform/audit')).statusCode, 403, 'a publisher admin does not read the whole log');

  const everything = await all(SYSADMIN, '/api/v1/platform/audit', null);
  t.equal(everything.length, await countWhere('true'), 'a system admin: every row');
  t.ok(everything.some((e) => e.publisher_id === null) && everything.some((e) => e.publisher_id === DMP) && everything.some((e) => e.publisher_id === SPIRIT), 'of every chain');
  const platform = await all(SYSADMIN, '/api/v1/platform/audit?publisher_id=platform', null);
  t.ok(platform.length > 0 && platform.every((e) => e.publisher_id === null), 'publisher_id=platform: the platform chain');
  t.same((await all(SYSADMIN, `/api/v1/platform/audit?publisher_id=${DMP}`, null)).map((e) => e.id), dmp.map((e) => e.id), 'one publisher: as its admins see it');
  t.same((await all(SYSADMIN, '/api/v1/audit', DMP)).map((e) => e.id), dmp.map((e) => e.id), "a system admin in DMP's context: DMP's rows");
});

t.test('RLS is the second wall: the same contexts as SQL on catalog_app', async (t) => {
  const asApp = async (publisher: string, user: string, scope: string) => {
    const c = new (await import('pg')).default.Client({ connectionString: db.appUrl });
    await c.connect();
    try {
      await c.query('begin');
      // the context as the API opens it (migration 0011), then the claimed one forged with set_config: ignored
      await c.query(`select app_begin_request($1, nullif($2, '')::uuid)`, [user, publisher]);
      await c.query(`select set_config('app.publisher_id', $1, true), set_config('app.user_id', $2, true), set_config('app.access_scope', $3, true)`, [publisher, user, scope]);
      const { rows } = await c.query(`select count(*)::int as n, count(*) filter (where publisher_id is distinct from nullif($1, '')::uuid)::int as foreign from audit_events`, [publisher]);
      await c.query('rollback');
      return rows[0] as { n: number; foreign: number };
    } finally {
      await c.end();
    }
  };
  const dmpRows = await countWhere('publisher_id = $1', [DMP]);
  t.same(await asApp(DMP, DMP_ADMIN, 'publisher'), { n: dmpRows, foreign: 0 }, "DMP's admin: DMP's rows, nothing else");
  t.same(await asApp(DMP, DMP_VIEWER, 'publisher'), { n: 0, foreign: 0 }, 'a viewer: nothing');
  t.same(await asApp(SPIRIT, DMP_ADMIN, 'publisher'), { n: 0, foreign: 0 }, "DMP's admin claiming Spirit's context: nothing (no audit:read there)");
  t.same((await asApp('', SYSADMIN, 'platform')).n, await countWhere('true'), 'a system admin with scope platform: every row');
  t.same(await asApp('', DMP_ADMIN, 'platform'), { n: 0, foreign: 0 }, 'scope platform without being a system admin: nothing');
});

t.test('filters, keyset pages (also within one millisecond) and bad queries', async (t) => {
  // a work's whole history, newest first
  const id = await work();
  ok(await api(DMP_ADMIN, 'PATCH', `/api/v1/works/${id}`, { title: 'Second' }, DMP), 'patch');
  ok(await api(DMP_ADMIN, 'DELETE', `/api/v1/works/${id}`, undefined, DMP), 'delete');
  const history = await all(DMP_ADMIN, `/api/v1/audit?object_type=work&object_id=${id}`, DMP);
  t.same(history.map((e) => `${e.action} ${e.actor_id}`), [`work.deleted ${DMP_ADMIN}`, `work.updated ${DMP_ADMIN}`, `work.created ${DMP_EDITOR}`]);
  const byEditor = await all(DMP_ADMIN, `/api/v1/audit?actor_id=${DMP_EDITOR}`, DMP);
  t.ok(byEditor.length > 3 && byEditor.every((e) => e.actor_id === DMP_EDITOR), 'by actor');
  t.equal(byEditor.length, await countWhere('publisher_id = $1 and actor_id = $2', [DMP, DMP_EDITOR]));
  const created = await all(DMP_ADMIN, '/api/v1/audit?action=work.created', DMP);
  t.ok(created.length > 1 && created.every((e) => e.action === 'work.created'), 'by action');
  const middle = history[1]!;
  const from = await all(DMP_ADMIN, `/api/v1/audit?object_type=work&object_id=${id}&from=${encodeURIComponent(middle.occurred_at)}`, DMP);
  t.same(from.map((e) => e.action), ['work.deleted', 'work.updated'], 'from: at or after');
  const to = await all(DMP_ADMIN, `/api/v1/audit?object_type=work&object_id=${id}&to=${encodeURIComponent(middle.occurred_at)}`, DMP);
  t.same(to.map((e) => e.action), ['work.created'], 'to: before');
  for (const [q, field] of [['object_id=' + id, 'object_id'], ['cursor=not-a-cursor', 'cursor'], ['action=work.exploded', 'action'], ['from=yesterday', 'from'], ['actor_id=42', 'actor_id']] as const) {
    const r = await api(DMP_ADMIN, 'GET', `/api/v1/audit?${q}`, undefined, DMP);
    t.equal(r.statusCode, 400, `${q}: 400`);
    t.match(r.body, field);
  }

  // rows appended within one millisecond: the keyset must neither skip nor repeat them
  const burst = randomUUID();
  await su.query(`set role catalog_auth`);
  try {
    await su.query(
      `insert into audit_events (id, publisher_id, actor_id, actor_kind, action, object_type, object_id)
       select gen_random_uuid(), $1, $2, 'user', 'work.updated', 'work', $3 from generate_series(1, 7)`,
      [DMP, DMP_EDITOR, burst],
    );
  } finally {
    await su.query(`reset role`);
  }
  const sameMs = Number((await su.query(`select max(n) as n from (select count(*) as n from audit_events where object_id = $1 group by date_trunc('milliseconds', occurred_at)) x`, [burst])).rows[0].n);
  t.ok(sameMs >= 2, `${sameMs} rows share one millisecond`);
  const whole = await all(DMP_ADMIN, '/api/v1/audit', DMP, 100);
  const paged = await all(DMP_ADMIN, '/api/v1/audit', DMP, 2);
  t.same(paged.map((e) => e.id), whole.map((e) => e.id), 'pages of 2 add up to the whole log');
  t.equal(new Set(paged.map((e) => e.id)).size, paged.length, 'no row twice');
  const burstPaged = await all(DMP_ADMIN, `/api/v1/audit?object_type=work&object_id=${burst}`, DMP, 1);
  const expected = (await su.query(`select id from audit_events where object_id = $1 order by occurred_at desc, id desc`, [burst])).rows.map((r) => r.id);
  t.same(burstPaged.map((e) => e.id), expected, 'one by one through the burst: all seven, newest first, id breaking ties');
});

t.test('CSV export: the same rows, RFC 4180 quoting, streamed over several pages', async (t) => {
  const list = await all(DMP_ADMIN, '/api/v1/audit?object_type=department', DMP);
  const r = await api(DMP_ADMIN, 'GET', '/api/v1/audit/export.csv?object_type=department', undefined, DMP);
  t.equal(r.statusCode, 200);
  t.match(r.headers['content-type'], /^text\/csv/);
  t.match(r.headers['content-disposition'], /attachment; filename="audit\.csv"/);
  t.ok(r.body.startsWith(`${CSV_COLUMNS.join(',')}\r\n`), 'header row, CRLF');
  const records = parseCsv(r.body, { columns: true, record_delimiter: '\r\n' }) as Record<string, string>[];
  t.same(records.map((x) => x.id), list.map((e) => e.id), 'the rows of the list, in its order');
  t.same(records.map((x) => (x.after ? JSON.parse(x.after) : null)), list.map((e) => e.after), 'after as JSON text');
  t.ok(r.body.includes('"{""name"":""Quote \\""A\\"", B""'), 'quotes doubled inside a quoted field');
  const created = records.find((x) => x.after?.includes('Quote'))!;
  t.same(JSON.parse(created.after!), { name: 'Quote "A", B', description: 'line one\nline two' }, 'commas, quotes and newlines survive');

  // more rows than one export page: a chain of their own, appended by the sign-in service's role
  const big = randomUUID();
  await su.query(`set role catalog_auth`);
  try {
    await su.query(
      `insert into audit_events (id, publisher_id, actor_kind, action, object_type)
       select gen_random_uuid(), $1, 'system', 'member.removed', 'member' from generate_series(1, $2::int)`,
      [big, EXPORT_PAGE_SIZE + 37],
    );
  } finally {
    await su.query(`reset role`);
  }
  const exported = await api(SYSADMIN, 'GET', `/api/v1/platform/audit/export.csv?publisher_id=${big}`);
  t.equal(exported.statusCode, 200);
  const rows = parseCsv(exported.body, { columns: true }) as Record<string, string>[];
  t.equal(rows.length, EXPORT_PAGE_SIZE + 37, 'every row, across pages');
  t.equal(new Set(rows.map((x) => x.id)).size, rows.length, 'none twice');
  t.same(rows.map((x) => Number(x.chain_seq)), rows.map((_, i) => EXPORT_PAGE_SIZE + 37 - i), 'newest first');
  const refused = await api(DMP_ADMIN, 'GET', `/api/v1/platform/audit/export.csv`);
  t.equal(refused.statusCode, 403);
  t.match(refused.headers['content-type'], /problem\+json/, 'a refusal is a problem, not a CSV');
});

t.test('secrets never reach the log', async (t) => {
  const allowed = Object.entries(AUDITED_FIELDS).flatMap(([type, fields]) => fields.map((f) => `${type}.${f}`));
  const risky = allowed.filter((f) => /password|secret|hash|token|totp|recovery|otp|code/.test(f));
  t.same(risky, ['directory_config.bind_secret_ref'], 'no allow-listed field is a secret (bind_secret_ref names where the secret is)');
  const stored = [
    ...(await su.query(`select password_hash as v from user_credentials where password_hash is not null
      union all select totp_secret from user_credentials where totp_secret is not null
      union all select totp_pending_secret from user_credentials where totp_pending_secret is not null
      union all select code_hash from user_recovery_codes union all select token_hash from refresh_tokens
      union all select token_hash from user_tokens union all select token_hash from invitations
      union all select secret_hash from api_clients union all select private_jwe from signing_keys`)).rows.map((r) => r.v as string),
  ];
  t.ok(secrets.size > 30, `${secrets.size} secrets handed out in this run`);
  t.ok(stored.length > 30, `${stored.length} stored secrets and digests`);
  const log = (await su.query(`select coalesce(string_agg(row_to_json(e)::text, E'\\n'), '') as text from audit_events e`)).rows[0].text as string;
  const found = [...secrets, ...stored].filter((s) => s.length >= 8 && log.includes(s));
  t.same(found, [], 'none of them appears in any row');
  t.same(AUDIT_ACTIONS.filter((a) => !readFileSync(resolve(ROOT, 'docs/CONTRACTS.md'), 'utf8').includes(`\`${a}\``)), [], 'every action is documented in docs/CONTRACTS.md');
});

t.test('the log the app wrote verifies', async (t) => {
  const orm = await createOrm({ DATABASE_URL: db.ownerUrl, DB_POOL_MAX: 1, DB_STATEMENT_TIMEOUT_MS: 60_000 });
  try {
    const report = await verifyAuditLog(orm.em.fork(), { batchSize: 97 });
    t.same(report.problems, []);
    t.equal(report.rows, await countWhere('true'));
    t.ok(report.chains.length >= 5, `${report.chains.length} chains`);
  } finally {
    await orm.close(true);
  }
});

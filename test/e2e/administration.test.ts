/**
 * Administration through the assembled stack (two sidecars, OpenFGA, the catalog API, PostgreSQL
 * RLS, the mail catcher), called with the typed client generated from the OpenAPI document:
 *
 * - the issue's acceptance: a system admin creates a publisher, invites its first admin (the mail
 *   lands in the catcher's folder), the admin accepts, creates the custom role "catalog-clerk"
 *   (works:read, works:create) and invites a clerk, who can create but not delete a work;
 *   suspending the publisher makes the clerk's next call 403 through both sidecars and /ext-authz;
 * - a custom role's change and removal, and a user's disabling, seen at both sidecars and through
 *   /ext-authz within a second;
 * - the administration matrix: every administration endpoint × system admin, every system role, a
 *   custom role × own and other publisher × active and suspended, with expectations derived from
 *   the route rules and the permission catalogue alone; every deny leaves the database unchanged;
 * - the department matrix: department admin / editor / viewer × list, get, create, update, delete ×
 *   a row of their department, of another department, of none.
 */
import t, { type Test } from 'tap';
import pg from 'pg';
import { randomUUID } from 'node:crypto';
import { DEPARTMENT_ROLE_PERMISSIONS, SYSTEM_ROLE_PERMISSIONS, permissionRelation, type SystemRole } from '../../policies/src/permissions.ts';
import { loadRouteRules } from '../../policies/src/routes.ts';
import { apiClient } from '../support/api-client.ts';
import { invitationTokenInMail, mailbox, type Mailbox } from '../support/mail.ts';
import { PUBLISHER_IDS } from './policy.ts';
import { env, signIn, startStack, tokenFor, type Stack } from './stack.ts';
import { within } from '../support/http.ts';

const TYPE = (kind: string) => `https://errors.music-publishing.example/${kind}`;
const DMP = PUBLISHER_IDS.dmp;
/** A suffix that keeps this run's names apart from an earlier run's (the test database may be reused). */
const RUN = randomUUID().slice(0, 8);
const SPIRIT = PUBLISHER_IDS.spirit;

let stack: Stack;
let mail: Mailbox;
const su = new pg.Client({ connectionString: env('PG_ADMIN_URL').replace(/\/[^/]*$/, `/${new URL(env('DATABASE_URL')).pathname.slice(1)}`) });
t.before(async () => {
  stack = await startStack({ sidecars: 2 });
  mail = mailbox(stack.mailDir);
  await su.connect();
});
t.teardown(async () => {
  await su.end();
  await stack?.stop();
});

const sidecars = () => stack.sidecars.map((s) => s.url) as [string, string];
/** The typed client at sidecar `i` as `token`. */
const client = (token: string, i: 0 | 1 = 0, publisher?: string) => apiClient(sidecars()[i], token, publisher);

/** md5 over every row an administration request could change (read as the superuser: RLS cannot hide a change). */
async function fingerprint(): Promise<string> {
  const tables = ['publishers', 'users', 'user_publishers', 'roles', 'role_permissions', 'departments', 'invitations', 'api_clients', 'directory_configs', 'works'];
  const { rows } = await su.query<{ f: string }>(`select md5(concat_ws('|', ${tables.map((x) => `(select coalesce(string_agg(t::text, ',' order by t::text), '') from ${x} t)`).join(', ')})) as f`);
  return rows[0]!.f;
}

/** Invite `email` with `grant` as `inviter`, accept with a password, sign in. @returns the access token */
async function onboard(inviter: string, publisherId: string, email: string, grant: { role: 'admin' | 'manager' | 'editor' | 'viewer' | 'creator' | 'custom'; custom_role_id?: string; department_id?: string }): Promise<string> {
  const before = (await mail.all()).length;
  const inv = await client(inviter).POST('/api/v1/publishers/{publisherId}/users/invite', { params: { path: { publisherId } }, body: { email, ...grant } });
  if (inv.response.status !== 201) throw new Error(`invite ${email}: ${inv.response.status} ${JSON.stringify(inv.error)}`);
  const message = await mail.waitFor(email, { subject: /invited/, after: before });
  const token = invitationTokenInMail(message);
  const accepted = await apiClient(sidecars()[0]).POST('/api/v1/invitations/{token}/accept', { params: { path: { token } }, body: { password: 'an-onboarding-password', display_name: email } });
  if (accepted.response.status !== 200) throw new Error(`accept ${email}: ${accepted.response.status} ${JSON.stringify(accepted.error)}`);
  return (await signIn(email, 'an-onboarding-password')).access_token;
}

/** POST /ext-authz/<path> as `token` in `publisher`'s context: the decision an Envoy-fronted service gets. */
async function extAuthz(token: string, method: string, path: string, publisher: string, i = 0): Promise<number> {
  const res = await fetch(`${sidecars()[i]}/ext-authz${path}`, { method, headers: { authorization: `Bearer ${token}`, 'x-publisher-id': publisher } });
  await res.arrayBuffer();
  return res.status;
}


t.test('done-when: publisher → first admin by invitation → custom role → clerk creates, cannot delete → suspension 403 at both sidecars and /ext-authz', async (t) => {
  const sys = await tokenFor('sysadmin@example.com');
  const created = await client(sys).POST('/api/v1/publishers', { body: { name: 'Acme Songs', slug: `acme-songs-${RUN}`, type: 'professional' } });
  t.equal(created.response.status, 201);
  const acme = created.data!.id;
  const adminToken = await onboard(sys, acme, `first.admin.${RUN}@acme.example`, { role: 'admin' });
  t.ok(adminToken, 'the first admin accepted the mailed invitation and signed in');

  const role = await client(adminToken).POST('/api/v1/publishers/{publisherId}/roles', {
    params: { path: { publisherId: acme } },
    body: { name: 'catalog-clerk', display_name: 'Catalog clerk', permissions: ['works:read', 'works:create'] },
  });
  t.equal(role.response.status, 201);
  const clerk = await onboard(adminToken, acme, `clerk.${RUN}@acme.example`, { role: 'custom', custom_role_id: role.data!.id });

  const work = await client(clerk, 0, acme).POST('/api/v1/works', { body: { title: 'First work of Acme' } });
  t.equal(work.response.status, 201, 'the clerk creates a work (works:create)');
  const id = work.data!.id;
  t.equal((await client(clerk, 1, acme).GET('/api/v1/works/{id}', { params: { path: { id } } })).response.status, 200, 'and reads it on the other sidecar');
  const del = await client(clerk, 1, acme).DELETE('/api/v1/works/{id}', { params: { path: { id } } });
  t.equal(del.response.status, 403, 'but cannot delete it');
  t.equal((await su.query(`select deleted_at from works where id = $1`, [id])).rows[0].deleted_at, null, 'the work is untouched');

  const suspended = await client(sys).PUT('/api/v1/publishers/{publisherId}/status', { params: { path: { publisherId: acme } }, body: { status: 'suspended' } });
  t.equal(suspended.response.status, 200);
  for (const i of [0, 1] as const) {
    const took = await within(1000, 403, async () => (await client(clerk, i, acme).GET('/api/v1/works', { params: { query: { limit: 1 } } })).response.status);
    t.ok(took >= 0, `sidecar ${i}: the clerk's next call is 403 (${took} ms)`);
    const cached = await within(1000, 403, async () => (await client(clerk, i, acme).GET('/api/v1/works/{id}', { params: { path: { id } } })).response.status);
    t.ok(cached >= 0, `sidecar ${i}: a decision cached before the suspension is not used after it (${cached} ms)`);
    t.equal(await extAuthz(clerk, 'GET', '/api/v1/works', acme, i), 403, `sidecar ${i}: /ext-authz says no too`);
    t.equal(await extAuthz(adminToken, 'GET', `/api/v1/publishers/${acme}/users`, acme, i), 403, `sidecar ${i}: so does the admin's administration`);
  }
  t.equal((await client(sys, 0, acme).GET('/api/v1/works', { params: { query: { limit: 1 } } })).response.status, 200, 'a system admin still may');
  await client(sys).PUT('/api/v1/publishers/{publisherId}/status', { params: { path: { publisherId: acme } }, body: { status: 'active' } });
  t.ok((await within(1000, 200, async () => (await client(clerk, 1, acme).GET('/api/v1/works', { params: { query: { limit: 1 } } })).response.status)) >= 0, 'reactivated: back within a second');
});

t.test('custom role changes and removal, and disabling a user, reach both sidecars and /ext-authz within a second', async (t) => {
  const admin = await tokenFor('admin@dmp.example');
  const sys = await tokenFor('sysadmin@example.com');
  const role = await client(admin).POST('/api/v1/publishers/{publisherId}/roles', { params: { path: { publisherId: DMP } }, body: { name: `song-reader-${RUN}`, permissions: ['songwriters:read'] } });
  t.equal(role.response.status, 201);
  const readerEmail = `song.reader.${RUN}@dmp.example`;
  const reader = await onboard(admin, DMP, readerEmail, { role: 'custom', custom_role_id: role.data!.id });
  const works = (i: 0 | 1) => async () => (await client(reader, i, DMP).GET('/api/v1/works', { params: { query: { limit: 1 } } })).response.status;
  const songwriters = (i: 0 | 1) => async () => (await client(reader, i, DMP).GET('/api/v1/songwriters', { params: { query: { limit: 1 } } })).response.status;
  for (const i of [0, 1] as const) {
    t.equal(await songwriters(i)(), 200, `sidecar ${i}: songwriters:read`);
    t.equal(await works(i)(), 403, `sidecar ${i}: no works:read yet`);
  }
  await client(admin).PUT('/api/v1/publishers/{publisherId}/roles/{roleId}', { params: { path: { publisherId: DMP, roleId: role.data!.id } }, body: { permissions: ['songwriters:read', 'works:read'] } });
  for (const i of [0, 1] as const) {
    t.ok((await within(1000, 200, works(i))) >= 0, `sidecar ${i}: the role now grants works:read`);
    t.equal(await extAuthz(reader, 'GET', '/api/v1/works', DMP, i), 200, `sidecar ${i}: /ext-authz agrees`);
  }
  await client(admin).PUT('/api/v1/publishers/{publisherId}/roles/{roleId}', { params: { path: { publisherId: DMP, roleId: role.data!.id } }, body: { permissions: [] } });
  for (const i of [0, 1] as const) t.ok((await within(1000, 403, songwriters(i))) >= 0, `sidecar ${i}: every permission taken away`);

  const disabled = await client(sys).PUT('/api/v1/users/{userId}/status', { params: { path: { userId: (await su.query(`select id from users where email = $1`, [readerEmail])).rows[0].id } }, body: { status: 'disabled' } });
  t.equal(disabled.response.status, 200);
  for (const i of [0, 1] as const) {
    const took = await within(1000, 401, async () => (await client(reader, i).GET('/api/v1/users/me')).response.status);
    t.ok(took >= 0, `sidecar ${i}: a disabled user's token is refused (${took} ms), on every route`);
    t.equal(await extAuthz(reader, 'GET', '/api/v1/works', DMP, i), 401, `sidecar ${i}: /ext-authz refuses it too`);
  }
});

// ---------------------------------------------------------------------------------------------
// The administration matrix. Each request is harmless whatever the decision: when the sidecar lets
// it through, the API answers something else than 401/403 (a validation error, an unknown id, or a
// read) without changing anything.

/** A request of the matrix on publisher `p`; `permission` comes from its route rule. */
type Probe = { name: string; method: string; path: (p: string) => string; body?: unknown };
const unknown = '00000000-0000-4000-8000-00000000dead';
const PROBES: Probe[] = [
  { name: 'get publisher', method: 'GET', path: (p) => `/api/v1/publishers/${p}` },
  { name: 'update publisher', method: 'PUT', path: (p) => `/api/v1/publishers/${p}`, body: {} },
  { name: 'set status', method: 'PUT', path: (p) => `/api/v1/publishers/${p}/status`, body: {} },
  { name: 'get settings', method: 'GET', path: (p) => `/api/v1/publishers/${p}/settings` },
  { name: 'put settings', method: 'PUT', path: (p) => `/api/v1/publishers/${p}/settings`, body: { colour: 'red' } },
  { name: 'get branding', method: 'GET', path: (p) => `/api/v1/publishers/${p}/branding` },
  { name: 'put branding', method: 'PUT', path: (p) => `/api/v1/publishers/${p}/branding`, body: { logo_url: 'http://insecure.example' } },
  { name: 'list members', method: 'GET', path: (p) => `/api/v1/publishers/${p}/users` },
  { name: 'invite', method: 'POST', path: (p) => `/api/v1/publishers/${p}/users/invite`, body: { email: 'not an email', role: 'viewer' } },
  { name: 'change role', method: 'PUT', path: (p) => `/api/v1/publishers/${p}/users/${unknown}/role`, body: { role: 'viewer' } },
  { name: 'remove member', method: 'DELETE', path: (p) => `/api/v1/publishers/${p}/users/${unknown}` },
  { name: 'end member sessions', method: 'DELETE', path: (p) => `/api/v1/publishers/${p}/users/${unknown}/sessions` },
  { name: 'list invitations', method: 'GET', path: (p) => `/api/v1/publishers/${p}/invitations` },
  { name: 'revoke invitation', method: 'DELETE', path: (p) => `/api/v1/publishers/${p}/invitations/${unknown}` },
  { name: 'list roles', method: 'GET', path: (p) => `/api/v1/publishers/${p}/roles` },
  { name: 'create role', method: 'POST', path: (p) => `/api/v1/publishers/${p}/roles`, body: { name: 'Not A Name', permissions: [] } },
  { name: 'update role', method: 'PUT', path: (p) => `/api/v1/publishers/${p}/roles/${unknown}`, body: { permissions: [] } },
  { name: 'delete role', method: 'DELETE', path: (p) => `/api/v1/publishers/${p}/roles/${unknown}` },
  { name: 'list departments', method: 'GET', path: (p) => `/api/v1/publishers/${p}/departments` },
  { name: 'create department', method: 'POST', path: (p) => `/api/v1/publishers/${p}/departments`, body: { name: '' } },
  { name: 'update department', method: 'PUT', path: (p) => `/api/v1/publishers/${p}/departments/${unknown}`, body: { name: 'x' } },
  { name: 'delete department', method: 'DELETE', path: (p) => `/api/v1/publishers/${p}/departments/${unknown}` },
  { name: 'list API clients', method: 'GET', path: (p) => `/api/v1/publishers/${p}/api-clients` },
  { name: 'register API client', method: 'POST', path: (p) => `/api/v1/publishers/${p}/api-clients`, body: { name: '' } },
  { name: 'rotate API client', method: 'POST', path: (p) => `/api/v1/publishers/${p}/api-clients/${unknown}/rotate` },
  { name: 'revoke API client', method: 'DELETE', path: (p) => `/api/v1/publishers/${p}/api-clients/${unknown}` },
  { name: 'get directory', method: 'GET', path: (p) => `/api/v1/publishers/${p}/directory` },
  { name: 'put directory', method: 'PUT', path: (p) => `/api/v1/publishers/${p}/directory`, body: {} },
  { name: 'add user to publisher', method: 'POST', path: () => `/api/v1/users/${unknown}/publishers`, body: {} },
  { name: 'change role via user', method: 'PUT', path: (p) => `/api/v1/users/${unknown}/publishers/${p}`, body: { role: 'viewer' } },
  { name: 'remove via user', method: 'DELETE', path: (p) => `/api/v1/users/${unknown}/publishers/${p}` },
  { name: 'create publisher', method: 'POST', path: () => '/api/v1/publishers', body: {} },
  { name: 'create user', method: 'POST', path: () => '/api/v1/users', body: {} },
  { name: 'set user status', method: 'PUT', path: () => `/api/v1/users/${unknown}/status`, body: {} },
  { name: 'delete user', method: 'DELETE', path: () => `/api/v1/users/${unknown}` },
];

/** The permission (relation) the route rule of `method path` names, and on what. */
function ruleOf(method: string, path: string): { relation: string; platform: boolean } {
  const segments = path.split('/');
  const rule = loadRouteRules().find((r) => {
    const rs = r.path.split('/');
    return r.method === method && rs.length === segments.length && rs.every((s, i) => s.startsWith('{') || s === segments[i]);
  });
  if (!rule?.relation) throw new Error(`no relation rule for ${method} ${path}`);
  return { relation: rule.relation, platform: rule.object === 'system:platform' };
}

/** The matrix' subjects: who they are at DMP (the "own" publisher) and their permissions there. */
type Subject = { name: string; token: () => Promise<string>; systemAdmin?: boolean; permissionsAtDmp: readonly string[] };

t.test('administration matrix: every endpoint × role × own/other publisher × active/suspended; every deny changes nothing', async (t) => {
  const admin = await tokenFor('admin@dmp.example');
  const clerkRole = await client(admin).POST('/api/v1/publishers/{publisherId}/roles', {
    params: { path: { publisherId: DMP } },
    body: { name: `member-clerk-${RUN}`, permissions: ['members:read', 'works:read', 'branding:read'] },
  });
  const clerkToken = await onboard(admin, DMP, `member.clerk.${RUN}@dmp.example`, { role: 'custom', custom_role_id: clerkRole.data!.id });
  const seeded = (email: string, role: SystemRole | null, systemAdmin = false): Subject => ({ name: `${email}${role ? ` (${role})` : ''}`, token: () => tokenFor(email), systemAdmin, permissionsAtDmp: role ? SYSTEM_ROLE_PERMISSIONS[role] : [] });
  const subjects: Subject[] = [
    seeded('sysadmin@example.com', null, true),
    seeded('admin@dmp.example', 'admin'),
    seeded('manager@dmp.example', 'manager'),
    seeded('editor@dmp.example', 'editor'),
    seeded('viewer@dmp.example', 'viewer'),
    seeded('creator1@songtrust.example', null), // a creator elsewhere: nothing at DMP
    { name: 'member.clerk@dmp.example (custom member-clerk)', token: async () => clerkToken, permissionsAtDmp: ['members:read', 'works:read', 'branding:read'] },
  ];

  const check = async (t: Test, publisher: string, suspended: boolean) => {
    for (const s of subjects) {
      const token = await s.token();
      for (const probe of PROBES) {
        const path = probe.path(publisher);
        const { relation, platform } = ruleOf(probe.method, path);
        const holds = s.permissionsAtDmp.some((p) => permissionRelation(p) === relation);
        const allowed = s.systemAdmin || (!platform && publisher === DMP && !suspended && holds);
        const before = await fingerprint();
        const res = await fetch(`${sidecars()[0]}${path}`, {
          method: probe.method,
          headers: { authorization: `Bearer ${token}`, ...(probe.body !== undefined ? { 'content-type': 'application/json' } : {}) },
          body: probe.body === undefined ? undefined : JSON.stringify(probe.body),
        });
        const body = await res.text();
        const label = `${s.name} × ${probe.name} @ ${publisher === DMP ? 'own' : 'other'}${suspended ? ' (suspended)' : ''}`;
        if (allowed) t.ok(res.status !== 401 && res.status !== 403, `${label}: allowed (${res.status})`);
        else t.equal(res.status, 403, `${label}: 403`);
        if (res.status >= 400) t.equal(await fingerprint(), before, `${label}: database unchanged`);
        if (!allowed) t.match(body, /"type":"https:\/\/errors\.music-publishing\.example\/forbidden"/, `${label}: problem+json`);
      }
    }
  };
  await t.test('DMP (own) and Spirit (other), both active', async (t) => {
    await check(t, DMP, false);
    await check(t, SPIRIT, false);
  });
  await t.test('DMP suspended: its members hold nothing, the system admin still everything', async (t) => {
    const sys = await tokenFor('sysadmin@example.com');
    await client(sys).PUT('/api/v1/publishers/{publisherId}/status', { params: { path: { publisherId: DMP } }, body: { status: 'suspended' } });
    try {
      await check(t, DMP, true);
    } finally {
      await client(sys).PUT('/api/v1/publishers/{publisherId}/status', { params: { path: { publisherId: DMP } }, body: { status: 'active' } });
    }
  });
});

t.test('department matrix: department admin / editor / viewer × list, get, create, update, delete × own department, another, none', async (t) => {
  const admin = await tokenFor('admin@dmp.example');
  const dept = async (name: string) => (await client(admin).POST('/api/v1/publishers/{publisherId}/departments', { params: { path: { publisherId: DMP } }, body: { name } })).data!.id;
  const classical = await dept(`Classical ${randomUUID().slice(0, 6)}`);
  const jazz = await dept(`Jazz ${randomUUID().slice(0, 6)}`);
  const row = async (department: string | null) =>
    (await client(admin, 0, DMP).POST('/api/v1/works', { body: { title: `Row ${department ?? 'none'}`, ...(department ? { department_id: department } : {}) } })).data!.id;
  const rows = { own: await row(classical), other: await row(jazz), none: await row(null) } as const;
  const members = {
    admin: await onboard(admin, DMP, `dept.admin.${randomUUID().slice(0, 6)}@dmp.example`, { role: 'admin', department_id: classical }),
    editor: await onboard(admin, DMP, `dept.editor.${randomUUID().slice(0, 6)}@dmp.example`, { role: 'editor', department_id: classical }),
    viewer: await onboard(admin, DMP, `dept.viewer.${randomUUID().slice(0, 6)}@dmp.example`, { role: 'viewer', department_id: classical }),
  };
  for (const [role, token] of Object.entries(members) as [keyof typeof members, string][]) {
    const perms = DEPARTMENT_ROLE_PERMISSIONS[role];
    const c = client(token, 1, DMP);
    const list = await c.GET('/api/v1/works', { params: { query: { limit: 100 } } });
    t.equal(list.response.status, 200, `${role}: lists`);
    t.same(list.data!.items.map((w) => w.id).filter((id) => Object.values(rows).includes(id)), [rows.own], `${role}: only its department's rows`);
    const created = await c.POST('/api/v1/works', { body: { title: `By the department ${role}` } });
    t.equal(created.response.status, perms.includes('works:create') ? 201 : 403, `${role}: create`);
    if (created.data) t.equal(created.data.department_id, classical, `${role}: created in its department`);
    for (const [where, id] of Object.entries(rows)) {
      const before = await fingerprint();
      const get = await c.GET('/api/v1/works/{id}', { params: { path: { id } } });
      t.equal(get.response.status, where === 'own' ? 200 : 403, `${role} × get ${where}`);
      const patch = await c.PATCH('/api/v1/works/{id}', { params: { path: { id } }, body: { title: `Edited by ${role}` } });
      t.equal(patch.response.status, where === 'own' && perms.includes('works:update') ? 200 : 403, `${role} × update ${where}`);
      const del = await c.DELETE('/api/v1/works/{id}', { params: { path: { id } } });
      t.equal(del.response.status, 403, `${role} × delete ${where}: deleting is publisher-wide`);
      if (patch.response.status === 403) t.equal(await fingerprint(), before, `${role} × ${where}: the denies changed nothing`);
    }
  }
  const members_ = await client(members.admin).GET('/api/v1/publishers/{publisherId}/users', { params: { path: { publisherId: DMP }, query: { limit: 100 } } });
  t.ok(members_.data!.items.every((m) => m.department_id === classical), "the department admin sees its department's members only");
  t.equal((await client(members.editor).GET('/api/v1/publishers/{publisherId}/users', { params: { path: { publisherId: DMP } } })).response.status, 403, 'a department editor holds no members:read');
});

/**
 * Generates policies/tests/model.fga.yaml and model-conditions.fga.yaml (OpenFGA CLI `fga model test`
 * format; two files so the test command runs them side by side, one per core) from the permission
 * catalogue (policies/src/permissions.ts: which permissions exist and which roles hold them) and the
 * scoping rules below — never from the model itself, so the tests can catch a wrong model. Every
 * permission of the catalogue is checked for every test user on every test publisher, so a
 * permission the model lacks (or grants wrongly) fails `npm run policies -- test` and `npm test`.
 *
 * Run: `node policies/tests/generate.ts` (writes the files); `--check` exits 1 when a checked-in
 * file is out of date (the test command runs it). Format: https://openfga.dev/docs/modeling/testing
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { stringify } from 'yaml';
import {
  CATALOG_RESOURCES,
  DEPARTMENT_ROLES,
  DEPARTMENT_ROLE_PERMISSIONS,
  PERMISSION_NAMES,
  READ_ONLY_BLOCKED_PERMISSIONS,
  SYSTEM_ROLE_PERMISSIONS,
  grantRelation,
  permissionRelation,
  roleObject,
  type DepartmentRole,
  type SystemRole,
} from '../src/permissions.ts';
import { EXPIRY_CONDITION, OFFICE_NETWORK_CONDITION, OFF_NETWORK_RELATION, officeNetworkMatcher, type CheckContext } from '../src/conditions.ts';

/** The generated files: every test user on every publisher, and the conditional-grant cases. */
export const OUTPUTS = {
  users: resolve(import.meta.dirname, 'model.fga.yaml'),
  conditions: resolve(import.meta.dirname, 'model-conditions.fga.yaml'),
} as const;
/** Which part of the tests a generated file holds. */
export type TestPart = keyof typeof OUTPUTS;

const ROW_TYPES = { works: 'work', songwriters: 'songwriter', recordings: 'recording' } as const;
type Resource = (typeof CATALOG_RESOURCES)[number];
type RowPermission = 'can_read' | 'can_update' | 'can_delete';
const ROW_PERMISSIONS: Record<RowPermission, string> = { can_read: 'read', can_update: 'update', can_delete: 'delete' };
const ROW_RELATIONS = Object.keys(ROW_PERMISSIONS) as RowPermission[];

/** The scenario's publishers: `own` and `other` are active, `frozen` is suspended, `lapsed` read-only (its trial ended). */
const PUBLISHERS = ['own', 'other', 'frozen', 'lapsed'] as const;
type Publisher = (typeof PUBLISHERS)[number];
const SUSPENDED: ReadonlySet<Publisher> = new Set(['frozen']);
const READ_ONLY: ReadonlySet<Publisher> = new Set(['lapsed']);
/** Office networks: `other` restricts its staff to these (IPv4 and IPv6); the others are unrestricted (no tuple). */
const OFFICE_NETWORKS: Partial<Record<Publisher, readonly string[]>> = { other: ['192.0.2.0/24', '198.51.100.0/26', '2001:db8:10::/48'] };

/** When and from where the checks ask (the condition context): by default before every grant's end, inside `other`'s offices. */
const NOW = '2026-06-01T12:00:00.000Z';
/** The end of the scenario's time-bounded grants: a week after NOW (an external auditor's week). */
const GRANT_END = '2026-06-08T12:00:00.000Z';
const DEFAULT_CONTEXT: CheckContext = { current_time: NOW, client_ip: '192.0.2.10' };

/** The custom role of the scenario: a catalog clerk at `own` (reads and creates works only). */
const CLERK = { publisher: 'own' as Publisher, name: 'catalog-clerk', permissions: ['works:read', 'works:create'] };
/** The departments: one of `own`, one of `lapsed`. A department membership is in its publisher's. */
const DEPARTMENTS: { key: string; publisher: Publisher }[] = [
  { key: 'own-classical', publisher: 'own' },
  { key: 'lapsed-jazz', publisher: 'lapsed' },
];
const departmentOf = (p: Publisher) => DEPARTMENTS.find((d) => d.publisher === p)?.key;

/** A test user: memberships per publisher (a system role, the custom role, or a department role). */
type Membership = ({ role: SystemRole } | { custom: true } | { department: DepartmentRole }) & { expiresAt?: string };
type TestUser = { id: string; memberships: Partial<Record<Publisher, Membership>>; systemAdmin?: boolean; disabled?: boolean };
const USERS: TestUser[] = [
  { id: 'admin', memberships: { own: { role: 'admin' } } },
  { id: 'manager', memberships: { own: { role: 'manager' } } },
  { id: 'editor', memberships: { own: { role: 'editor' } } },
  { id: 'viewer', memberships: { own: { role: 'viewer' } } },
  { id: 'api-client', memberships: { own: { role: 'api_user' } } },
  { id: 'creator1', memberships: { own: { role: 'creator' } } },
  { id: 'creator2', memberships: { own: { role: 'creator' } } },
  { id: 'clerk', memberships: { own: { custom: true } } },
  { id: 'dept-admin', memberships: { own: { department: 'admin' } } },
  { id: 'dept-editor', memberships: { own: { department: 'editor' } } },
  { id: 'dept-viewer', memberships: { own: { department: 'viewer' } } },
  { id: 'sysadmin', memberships: {}, systemAdmin: true },
  { id: 'disabled-sysadmin', memberships: {}, systemAdmin: true, disabled: true },
  { id: 'disabled-editor', memberships: { own: { role: 'editor' } }, disabled: true },
  { id: 'outsider', memberships: {} },
  { id: 'other-admin', memberships: { other: { role: 'admin' } } },
  { id: 'other-creator', memberships: { other: { role: 'creator' } } },
  { id: 'frozen-admin', memberships: { frozen: { role: 'admin' } } },
  { id: 'frozen-creator', memberships: { frozen: { role: 'creator' } } },
  { id: 'former-creator', memberships: {} },
  { id: 'lapsed-admin', memberships: { lapsed: { role: 'admin' } } },
  { id: 'lapsed-editor', memberships: { lapsed: { role: 'editor' } } },
  { id: 'lapsed-creator', memberships: { lapsed: { role: 'creator' } } },
  { id: 'lapsed-dept-editor', memberships: { lapsed: { department: 'editor' } } },
  // time-bounded memberships (their tuples carry non_expired_grant)
  { id: 'auditor', memberships: { own: { role: 'viewer', expiresAt: GRANT_END } } },
  { id: 'temp-dept-editor', memberships: { own: { department: 'editor', expiresAt: GRANT_END } } },
  { id: 'temp-clerk', memberships: { own: { custom: true, expiresAt: GRANT_END } } },
];

/** Rows per catalog type: publisher, owner, department. */
const ROWS: { key: string; publisher: Publisher; owner?: string; department?: string }[] = [
  { key: 'own-staff', publisher: 'own' },
  { key: 'own-by-creator1', publisher: 'own', owner: 'creator1' },
  { key: 'own-by-creator2', publisher: 'own', owner: 'creator2' },
  { key: 'own-classical', publisher: 'own', department: 'own-classical' },
  { key: 'other-staff', publisher: 'other' },
  { key: 'other-by-other-creator', publisher: 'other', owner: 'other-creator' },
  { key: 'own-by-former-creator', publisher: 'own', owner: 'former-creator' },
  { key: 'frozen-by-frozen-creator', publisher: 'frozen', owner: 'frozen-creator' },
  { key: 'lapsed-staff', publisher: 'lapsed' },
  { key: 'lapsed-by-lapsed-creator', publisher: 'lapsed', owner: 'lapsed-creator' },
  { key: 'lapsed-jazz', publisher: 'lapsed', department: 'lapsed-jazz' },
];

// ------------------------------------------------------------------ the policy, stated directly
/**
 * What the user can do at all: disabled users nothing; a suspended publisher's members nothing, nor
 * a restricted publisher's members outside its office networks (system admins excepted from both).
 */
function standing(u: TestUser, p: Publisher, ctx: CheckContext): 'none' | 'system-admin' | 'member' {
  if (u.disabled) return 'none';
  if (u.systemAdmin) return 'system-admin';
  const networks = OFFICE_NETWORKS[p];
  if (networks && !officeNetworkMatcher(networks).contains(ctx.client_ip)) return 'none';
  return SUSPENDED.has(p) ? 'none' : 'member';
}

/** The membership at `p` while it lasts: a time-bounded one ends at its end (exclusive). */
function membership(u: TestUser, p: Publisher, ctx: CheckContext): Membership | undefined {
  const m = u.memberships[p];
  if (m?.expiresAt && !(Date.parse(ctx.current_time) < Date.parse(m.expiresAt))) return undefined;
  return m;
}

/** A read-only publisher's members lose the blocked permissions (system admins keep them). */
const unfrozen = (p: Publisher, perms: readonly string[]) => (READ_ONLY.has(p) ? perms.filter((x) => !READ_ONLY_BLOCKED_PERMISSIONS.includes(x)) : perms);

/** The permissions `u` holds at `p` publisher-wide. */
function publisherWide(u: TestUser, p: Publisher, ctx: CheckContext): readonly string[] {
  const s = standing(u, p, ctx);
  if (s === 'system-admin') return PERMISSION_NAMES;
  const m = membership(u, p, ctx);
  if (s === 'none' || !m) return [];
  if ('custom' in m) return p === CLERK.publisher ? CLERK.permissions : [];
  if ('role' in m) return m.role === 'creator' ? [] : unfrozen(p, SYSTEM_ROLE_PERMISSIONS[m.role]);
  return [];
}

/** The permissions `u` holds at `p` on some rows only (creators: own rows; department members: the department's rows). */
function rowScoped(u: TestUser, p: Publisher, ctx: CheckContext): readonly string[] {
  const m = membership(u, p, ctx);
  if (standing(u, p, ctx) !== 'member' || !m) return [];
  if ('role' in m && m.role === 'creator') return unfrozen(p, SYSTEM_ROLE_PERMISSIONS.creator);
  if ('department' in m) return unfrozen(p, DEPARTMENT_ROLE_PERMISSIONS[m.department]);
  return [];
}

/** The permission relation on the publisher: held in any scope. */
const expectPermission = (u: TestUser, p: Publisher, perm: string, ctx: CheckContext) =>
  publisherWide(u, p, ctx).includes(perm) || rowScoped(u, p, ctx).includes(perm);

function expectRow(u: TestUser, row: (typeof ROWS)[number], resource: Resource, perm: RowPermission, ctx: CheckContext): boolean {
  const permission = `${resource}:${ROW_PERMISSIONS[perm]}`;
  if (publisherWide(u, row.publisher, ctx).includes(permission)) return true;
  if (!rowScoped(u, row.publisher, ctx).includes(permission) || perm === 'can_delete') return false;
  const m = u.memberships[row.publisher]!;
  if ('role' in m) return row.owner === u.id; // a creator: the rows they own
  return row.department !== undefined && row.department === departmentOf(row.publisher); // a department member: the department's rows
}

// ------------------------------------------------------------------ the tuples the catalog writes
type Tuple = { user: string; relation: string; object: string; condition?: { name: string; context: Record<string, unknown> } };

function tuples(): Tuple[] {
  const out: Tuple[] = [];
  const role = roleObject(CLERK.publisher, CLERK.name);
  for (const p of PUBLISHERS) out.push({ user: 'system:platform', relation: 'system', object: `publisher:${p}` });
  for (const p of SUSPENDED) out.push({ user: 'user:*', relation: 'suspended', object: `publisher:${p}` });
  for (const p of READ_ONLY) out.push({ user: 'user:*', relation: 'read_only', object: `publisher:${p}` });
  for (const [p, networks] of Object.entries(OFFICE_NETWORKS)) {
    out.push({ user: 'user:*', relation: OFF_NETWORK_RELATION, object: `publisher:${p}`, condition: { name: OFFICE_NETWORK_CONDITION, context: { office_networks: networks } } });
  }
  out.push({ user: `publisher:${CLERK.publisher}`, relation: 'publisher', object: role });
  for (const perm of CLERK.permissions) out.push({ user: `${role}#assignee`, relation: grantRelation(perm), object: `publisher:${CLERK.publisher}` });
  for (const d of DEPARTMENTS) {
    out.push({ user: `publisher:${d.publisher}`, relation: 'publisher', object: `department:${d.key}` });
    for (const r of DEPARTMENT_ROLES) out.push({ user: `department:${d.key}#${r}`, relation: `department_${r}`, object: `publisher:${d.publisher}` });
  }
  for (const u of USERS) {
    if (u.systemAdmin) out.push({ user: `user:${u.id}`, relation: 'admin', object: 'system:platform' });
    if (u.disabled) out.push({ user: `user:${u.id}`, relation: 'disabled', object: 'system:platform' });
    for (const p of PUBLISHERS) {
      const m = u.memberships[p];
      if (!m) continue;
      const condition = m.expiresAt ? { condition: { name: EXPIRY_CONDITION, context: { grant_expires_at: m.expiresAt } } } : {};
      if ('role' in m) out.push({ user: `user:${u.id}`, relation: m.role, object: `publisher:${p}`, ...condition });
      else if ('custom' in m) out.push({ user: `user:${u.id}`, relation: 'assignee', object: role, ...condition });
      else out.push({ user: `user:${u.id}`, relation: m.department, object: `department:${departmentOf(p)}`, ...condition });
    }
  }
  for (const type of Object.values(ROW_TYPES)) {
    for (const row of ROWS) {
      out.push({ user: `publisher:${row.publisher}`, relation: 'publisher', object: `${type}:${row.key}` });
      if (row.owner) out.push({ user: `user:${row.owner}`, relation: 'owner', object: `${type}:${row.key}` });
      if (row.department) out.push({ user: `department:${row.department}`, relation: 'department', object: `${type}:${row.key}` });
    }
  }
  return out;
}

const describeUser = (u: TestUser) => {
  const parts = Object.entries(u.memberships).map(
    ([p, m]) => ('role' in m ? `${m.role} of ${p}` : 'custom' in m ? `${CLERK.name} of ${p}` : `department ${m.department} at ${p}`) + (m.expiresAt ? ` until ${m.expiresAt}` : ''),
  );
  if (u.systemAdmin) parts.unshift('system admin');
  if (u.disabled) parts.push('disabled');
  return parts.join(', ') || 'member of no publisher';
};

/**
 * The condition cases: the users the conditions concern, checked at other times and from other
 * addresses than {@link DEFAULT_CONTEXT}, on the publishers that matter (and their rows).
 */
const CONDITION_CASES: { label: string; context: CheckContext; users: string[]; publishers: Publisher[]; listing?: boolean }[] = [
  ...[
    ['a second before the grant end', '2026-06-08T11:59:59.000Z'],
    ['at the grant end', GRANT_END],
    ['a day after the grant end', '2026-06-09T12:00:00.000Z'],
  ].map(([label, time]) => ({
    label: label!,
    context: { ...DEFAULT_CONTEXT, current_time: time! },
    users: ['auditor', 'temp-dept-editor', 'temp-clerk', 'viewer'],
    publishers: ['own'] as Publisher[],
    listing: time === GRANT_END,
  })),
  ...[
    ['outside the office networks (IPv4)', '203.0.113.7', ['other-admin', 'other-creator', 'sysadmin', 'editor', 'outsider']],
    ['outside the office networks (IPv6)', '2001:db8:11::1', ['other-admin', 'other-creator', 'sysadmin', 'editor']],
    ['just past the second office network', '198.51.100.64', ['other-admin']],
    ['inside the second office network', '198.51.100.63', ['other-admin']],
    ['inside the IPv6 office network', '2001:db8:10:ffff::1', ['other-admin', 'other-creator']],
  ].map(([label, ip, users]) => ({
    label: label as string,
    context: { ...DEFAULT_CONTEXT, client_ip: ip as string },
    users: users as string[],
    publishers: ['other', 'own'] as Publisher[],
    listing: ip === '203.0.113.7',
  })),
];

/**
 * One test: every permission of `u` on `publishers` and every row of theirs, at `context`; with
 * `listing`, ListObjects of every row type too (ListObjects is the slow part of the run, so the
 * condition cases list in one time case and one network case only).
 */
function testFor(u: TestUser, context: CheckContext, publishers: readonly Publisher[], label?: string, listing = true) {
  const rows = ROWS.filter((row) => publishers.includes(row.publisher));
  const all = publishers.length === PUBLISHERS.length;
  return {
    name: `${u.id} (${describeUser(u)})${label ? ` — ${label}` : ''}`,
    check: [
      ...publishers.map((p) => ({
        user: `user:${u.id}`,
        object: `publisher:${p}`,
        context,
        assertions: Object.fromEntries(PERMISSION_NAMES.map((perm) => [permissionRelation(perm), expectPermission(u, p, perm, context)])),
      })),
      ...(all ? [{ user: `user:${u.id}`, object: 'system:platform', context, assertions: { can_administer: !!u.systemAdmin && !u.disabled } }] : []),
      ...CATALOG_RESOURCES.flatMap((resource) =>
        rows.map((row) => ({
          user: `user:${u.id}`,
          object: `${ROW_TYPES[resource]}:${row.key}`,
          context,
          assertions: Object.fromEntries(ROW_RELATIONS.map((perm) => [perm, expectRow(u, row, resource, perm, context)])),
        })),
      ),
    ],
    // Listing (over every row, whatever the case's publishers): a creator finds exactly their own rows,
    // a department member the department's, staff all of the publisher's.
    ...(listing && {
      list_objects: CATALOG_RESOURCES.map((resource) => ({
        user: `user:${u.id}`,
        type: ROW_TYPES[resource],
        context,
        assertions: Object.fromEntries(
          ROW_RELATIONS.map((perm) => [perm, ROWS.filter((row) => expectRow(u, row, resource, perm, context)).map((row) => `${ROW_TYPES[resource]}:${row.key}`)]),
        ),
      })),
    }),
  };
}

/** One generated test document (plain data, ready for YAML): the same tuples, `part`'s tests. */
export function buildTestDocument(part: TestPart): unknown {
  const byId = new Map(USERS.map((u) => [u.id, u]));
  const tests = part === 'users' ? USERS.map((u) => testFor(u, DEFAULT_CONTEXT, PUBLISHERS)) : [
    ...CONDITION_CASES.flatMap((c) =>
      c.users.map((id) => {
        const u = byId.get(id);
        if (!u) throw new Error(`condition case "${c.label}": no test user ${id}`);
        return testFor(u, c.context, c.publishers, c.label, c.listing);
      }),
    ),
  ];
  return {
    name: `music-publishing authorization model, ${part === 'users' ? 'every test user' : 'conditional grants'} (generated by policies/tests/generate.ts; do not edit)`,
    model_file: '../model.fga',
    tuples: tuples(),
    tests,
  };
}

/**
 * The YAML text of one generated test file. Written with the YAML 1.1 schema so that timestamps in
 * condition contexts are quoted: the CLI's Go YAML parser would read a bare one as a time, not a string.
 */
export function renderTests(part: TestPart): string {
  return `# GENERATED by policies/tests/generate.ts from the permission catalogue — edit policies/src/permissions.ts\n# or the scenario there, then run \`node policies/tests/generate.ts\`. Run with \`npm run policies -- test\`.\n${stringify(buildTestDocument(part), { lineWidth: 0, aliasDuplicateObjects: false, schema: 'yaml-1.1' })}`;
}

if (import.meta.main) {
  let stale = false;
  for (const part of Object.keys(OUTPUTS) as TestPart[]) {
    const file = OUTPUTS[part];
    const text = renderTests(part);
    if (process.argv.includes('--check')) {
      if (readFileSync(file, 'utf8') === text) console.log(`${file} is up to date`);
      else {
        console.error(`${file} is out of date: run node policies/tests/generate.ts`);
        stale = true;
      }
    } else {
      writeFileSync(file, text);
      console.log(`wrote ${file}`);
    }
  }
  if (stale) process.exit(1);
}

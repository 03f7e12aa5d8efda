/**
 * Generates policies/tests/model.fga.yaml (OpenFGA CLI `fga model test` format) from an
 * independent statement of the policy — the tables below, written from docs/CONTRACTS.md
 * ("Authorization model") — never from the model itself, so the tests can catch a wrong model.
 *
 * Run: `node policies/tests/generate.ts` (writes the file); `--check` exits 1 when the checked-in
 * file is out of date. Format: https://openfga.dev/docs/modeling/testing
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { stringify } from 'yaml';

export const OUTPUT = resolve(import.meta.dirname, 'model.fga.yaml');

type Role = 'admin' | 'manager' | 'editor' | 'viewer' | 'creator';
type PublisherPermission = 'can_list_catalog' | 'can_create_catalog' | 'can_manage_members';
type RowPermission = 'can_read' | 'can_update' | 'can_delete';

const PUBLISHER_PERMISSIONS: PublisherPermission[] = ['can_list_catalog', 'can_create_catalog', 'can_manage_members'];
const ROW_PERMISSIONS: RowPermission[] = ['can_read', 'can_update', 'can_delete'];
const ROW_TYPES = ['work', 'songwriter', 'recording'] as const;

/** The policy: what each publisher role grants on the publisher. */
const PUBLISHER_GRANTS: Record<Role, Record<PublisherPermission, boolean>> = {
  admin: { can_list_catalog: true, can_create_catalog: true, can_manage_members: true },
  manager: { can_list_catalog: true, can_create_catalog: true, can_manage_members: false },
  editor: { can_list_catalog: true, can_create_catalog: true, can_manage_members: false },
  viewer: { can_list_catalog: true, can_create_catalog: false, can_manage_members: false },
  creator: { can_list_catalog: true, can_create_catalog: true, can_manage_members: false },
};

/** The policy: what each publisher role grants on any catalog row of that publisher. */
const ROW_GRANTS: Record<Role, Record<RowPermission, boolean>> = {
  admin: { can_read: true, can_update: true, can_delete: true },
  manager: { can_read: true, can_update: true, can_delete: true },
  editor: { can_read: true, can_update: true, can_delete: false },
  viewer: { can_read: true, can_update: false, can_delete: false },
  creator: { can_read: false, can_update: false, can_delete: false },
};

/**
 * The policy: what owning a row grants — only while the owner is still a creator of the row's
 * publisher (a creator who leaves loses their rows at once). Deleting stays a publisher decision.
 */
const OWNER_GRANTS: Record<RowPermission, boolean> = { can_read: true, can_update: true, can_delete: false };

/** The scenario: two publishers; every test user's role at each (system admins are admin everywhere). */
const PUBLISHERS = ['own', 'other'] as const;
type Publisher = (typeof PUBLISHERS)[number];
type TestUser = { id: string; roles: Partial<Record<Publisher, Role>>; systemAdmin?: boolean };
const USERS: TestUser[] = [
  { id: 'admin', roles: { own: 'admin' } },
  { id: 'manager', roles: { own: 'manager' } },
  { id: 'editor', roles: { own: 'editor' } },
  { id: 'viewer', roles: { own: 'viewer' } },
  { id: 'creator1', roles: { own: 'creator' } },
  { id: 'creator2', roles: { own: 'creator' } },
  { id: 'sysadmin', roles: {}, systemAdmin: true },
  { id: 'outsider', roles: {} },
  { id: 'other-admin', roles: { other: 'admin' } },
  { id: 'other-creator', roles: { other: 'creator' } },
  { id: 'former-creator', roles: {} },
];

/** Rows per type: in which publisher, owned by whom (undefined = created by staff, no owner). */
const ROWS: { key: string; publisher: Publisher; owner?: string }[] = [
  { key: 'own-staff', publisher: 'own' },
  { key: 'own-by-creator1', publisher: 'own', owner: 'creator1' },
  { key: 'own-by-creator2', publisher: 'own', owner: 'creator2' },
  { key: 'other-staff', publisher: 'other' },
  { key: 'other-by-other-creator', publisher: 'other', owner: 'other-creator' },
  { key: 'own-by-former-creator', publisher: 'own', owner: 'former-creator' },
];

const roleAt = (u: TestUser, p: Publisher): Role | undefined => (u.systemAdmin ? 'admin' : u.roles[p]);

function expectPublisher(u: TestUser, p: Publisher, perm: PublisherPermission): boolean {
  const role = roleAt(u, p);
  return role ? PUBLISHER_GRANTS[role][perm] : false;
}

function expectRow(u: TestUser, row: (typeof ROWS)[number], perm: RowPermission): boolean {
  const role = roleAt(u, row.publisher);
  return (role ? ROW_GRANTS[role][perm] : false) || (row.owner === u.id && role === 'creator' && OWNER_GRANTS[perm]);
}

type Tuple = { user: string; relation: string; object: string };

function tuples(): Tuple[] {
  const out: Tuple[] = [];
  for (const u of USERS) {
    if (u.systemAdmin) out.push({ user: `user:${u.id}`, relation: 'admin', object: 'system:platform' });
    for (const p of PUBLISHERS) {
      const role = u.roles[p];
      if (role) out.push({ user: `user:${u.id}`, relation: role, object: `publisher:${p}` });
    }
  }
  for (const p of PUBLISHERS) out.push({ user: 'system:platform', relation: 'system', object: `publisher:${p}` });
  for (const type of ROW_TYPES) {
    for (const row of ROWS) {
      out.push({ user: `publisher:${row.publisher}`, relation: 'publisher', object: `${type}:${row.key}` });
      if (row.owner) out.push({ user: `user:${row.owner}`, relation: 'owner', object: `${type}:${row.key}` });
    }
  }
  return out;
}

const describeUser = (u: TestUser) =>
  u.systemAdmin ? 'system admin' : Object.entries(u.roles).map(([p, r]) => `${r} of ${p}`).join(', ') || 'member of no publisher';

/** The whole test document (plain data, ready for YAML). */
export function buildTestDocument(): unknown {
  const tests = USERS.map((u) => ({
    name: `${u.id} (${describeUser(u)})`,
    check: [
      ...PUBLISHERS.map((p) => ({
        user: `user:${u.id}`,
        object: `publisher:${p}`,
        assertions: Object.fromEntries(PUBLISHER_PERMISSIONS.map((perm) => [perm, expectPublisher(u, p, perm)])),
      })),
      ...ROW_TYPES.flatMap((type) =>
        ROWS.map((row) => ({
          user: `user:${u.id}`,
          object: `${type}:${row.key}`,
          assertions: Object.fromEntries(ROW_PERMISSIONS.map((perm) => [perm, expectRow(u, row, perm)])),
        })),
      ),
    ],
    // A creator lists exactly their own rows; staff see all rows of their publisher.
    list_objects: ROW_TYPES.map((type) => ({
      user: `user:${u.id}`,
      type,
      assertions: Object.fromEntries(
        ROW_PERMISSIONS.map((perm) => [perm, ROWS.filter((row) => expectRow(u, row, perm)).map((row) => `${type}:${row.key}`)]),
      ),
    })),
  }));
  return {
    name: 'music-publishing authorization model (generated by policies/tests/generate.ts; do not edit)',
    model_file: '../model.fga',
    tuples: tuples(),
    tests,
  };
}

/** The YAML text of the generated test file. */
export function renderTests(): string {
  return `# GENERATED by policies/tests/generate.ts from its policy tables — edit those, then run\n# \`node policies/tests/generate.ts\`. Run with \`npm run policies -- test\`.\n${stringify(buildTestDocument(), { lineWidth: 0 })}`;
}

if (import.meta.main) {
  const text = renderTests();
  if (process.argv.includes('--check')) {
    const current = readFileSync(OUTPUT, 'utf8');
    if (current !== text) {
      console.error(`${OUTPUT} is out of date: run node policies/tests/generate.ts`);
      process.exit(1);
    }
    console.log(`${OUTPUT} is up to date`);
  } else {
    writeFileSync(OUTPUT, text);
    console.log(`wrote ${OUTPUT}`);
  }
}

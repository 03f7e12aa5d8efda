/**
 * The expected policy, stated independently of the model and the seed code: who is what where
 * (issue 2, §7), and what each role may do (docs/CONTRACTS.md, "Authorization model").
 * The end-to-end matrix derives every expected status from these tables alone.
 */
export const PUBLISHER_IDS = {
  dmp: '10000000-0000-4000-8000-000000000001',
  sheer: '10000000-0000-4000-8000-000000000002',
  songtrust: '10000000-0000-4000-8000-000000000003',
  spirit: '10000000-0000-4000-8000-000000000004',
} as const;
export type PublisherSlug = keyof typeof PUBLISHER_IDS;
export const PUBLISHER_SLUGS = Object.keys(PUBLISHER_IDS) as PublisherSlug[];

export type Role = 'admin' | 'manager' | 'editor' | 'viewer' | 'creator';
export type Action = 'list' | 'get' | 'create' | 'update' | 'delete';
export const ACTIONS: Action[] = ['list', 'get', 'create', 'update', 'delete'];
export const RESOURCES = ['works', 'songwriters', 'recordings'] as const;
export type Resource = (typeof RESOURCES)[number];

/** Seeded users: their memberships by publisher, and whether they are the platform's system admin. */
export const SEEDED: Record<string, { roles: Partial<Record<PublisherSlug, Role>>; systemAdmin?: boolean }> = {
  'admin@dmp.example': { roles: { dmp: 'admin' } },
  'manager@dmp.example': { roles: { dmp: 'manager' } },
  'editor@dmp.example': { roles: { dmp: 'editor' } },
  'viewer@dmp.example': { roles: { dmp: 'viewer' } },
  'creator1@songtrust.example': { roles: { songtrust: 'creator' } },
  'creator2@songtrust.example': { roles: { songtrust: 'creator' } },
  'owner@spirit.example': { roles: { spirit: 'admin' } },
  'multi@example.com': { roles: { dmp: 'viewer', spirit: 'editor' } },
  'sysadmin@example.com': { roles: {}, systemAdmin: true },
};

/** 'own' = only on rows the user owns (the creator model). */
const GRANTS: Record<Role, Record<Action, boolean | 'own'>> = {
  admin: { list: true, get: true, create: true, update: true, delete: true },
  manager: { list: true, get: true, create: true, update: true, delete: true },
  editor: { list: true, get: true, create: true, update: true, delete: false },
  viewer: { list: true, get: true, create: false, update: false, delete: false },
  creator: { list: true, get: 'own', create: true, update: 'own', delete: false },
};

/** The user's effective role at a publisher (a system admin is admin everywhere), or undefined. */
export function roleAt(email: string, publisher: PublisherSlug): Role | undefined {
  const u = SEEDED[email]!;
  return u.systemAdmin ? 'admin' : u.roles[publisher];
}

/** May `email` perform `action` on a row of `publisher` (owned by them when `ownsRow`)? */
export function allowed(email: string, publisher: PublisherSlug, action: Action, ownsRow = false): boolean {
  const role = roleAt(email, publisher);
  if (!role) return false;
  const grant = GRANTS[role][action];
  return grant === 'own' ? ownsRow : grant;
}

export const SUCCESS: Record<Action, number> = { list: 200, get: 200, create: 201, update: 200, delete: 204 };

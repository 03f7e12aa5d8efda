/**
 * The permission catalogue: every permission a role can hold (`resource:action`), the system
 * roles' permission sets, and how both map onto the authorization model (policies/model.fga).
 *
 * One source for four consumers: migration 0006 seeds the `permissions`, `roles` and
 * `role_permissions` tables from it (a test keeps the database and this file equal), the model
 * tests are generated from it (policies/tests/generate.ts — a permission without tests fails the
 * test command), the catalog API checks custom roles against it, and the model tests write a custom
 * role's grants as the outbox triggers of migration 0006 do ({@link grantRelation}, {@link roleObject}).
 *
 * Scopes: the publisher-wide roles (admin ⊃ manager ⊃ editor ⊃ viewer, api_user, custom roles)
 * hold their permissions on every row of the publisher. Two kinds of member hold catalog
 * permissions on some rows only: a creator on the rows they own, and a member scoped to a department
 * on that department's rows (docs/CONTRACTS.md, "Authorization model").
 */

/** The catalog resources (one per catalog table). */
export const CATALOG_RESOURCES = ['works', 'songwriters', 'recordings'] as const;
/** What one can do with a catalog row. */
export const CATALOG_ACTIONS = ['read', 'create', 'update', 'delete'] as const;

/** A permission: `resource:action`, and what it allows. */
export type PermissionDef = { name: string; description: string };

const catalog: PermissionDef[] = CATALOG_RESOURCES.flatMap((r) =>
  CATALOG_ACTIONS.map((a) => ({ name: `${r}:${a}`, description: `${a[0]!.toUpperCase()}${a.slice(1)} ${r}` })),
);

/** Every permission, in a stable order. */
export const PERMISSIONS: readonly PermissionDef[] = Object.freeze([
  ...catalog,
  { name: 'publishers:read', description: "Read the publisher's profile" },
  { name: 'publishers:update', description: "Change the publisher's name and profile" },
  { name: 'publishers:archive', description: 'Archive the publisher (a system admin can restore it)' },
  { name: 'publisher_settings:read', description: "Read the publisher's settings" },
  { name: 'publisher_settings:update', description: "Change the publisher's settings (sign-in policy, MFA, locale)" },
  { name: 'branding:read', description: "Read the publisher's branding" },
  { name: 'branding:update', description: "Change the publisher's branding" },
  { name: 'departments:manage', description: 'Create, rename and delete departments' },
  { name: 'members:read', description: 'List members and invitations' },
  { name: 'members:invite', description: 'Invite people and revoke invitations' },
  { name: 'members:update_role', description: "Change a member's role or department" },
  { name: 'members:remove', description: 'Remove a member (and end their sessions here)' },
  { name: 'roles:read', description: 'List roles and permissions' },
  { name: 'roles:manage', description: 'Create, change and delete custom roles' },
  { name: 'accounts:read', description: "Read the publisher's account and plan" },
  { name: 'accounts:change_plan', description: 'Change the plan' },
  { name: 'usage:read', description: 'Read usage (API calls, storage, seats)' },
  { name: 'audit:read', description: 'Read the audit trail' },
  { name: 'api_clients:manage', description: 'Register, rotate and revoke API clients' },
]);

/** Permission names. */
export const PERMISSION_NAMES: readonly string[] = Object.freeze(PERMISSIONS.map((p) => p.name));

/**
 * The changes a read-only publisher (its account's trial ended without a chosen plan, or the account
 * is cancelled) may still make: choose a plan, remove members (to fit a smaller plan) and archive.
 */
export const READ_ONLY_ALLOWED_WRITES: readonly string[] = Object.freeze(['accounts:change_plan', 'members:remove', 'publishers:archive']);

/**
 * The permissions a read-only publisher's members lose until a plan is chosen: every permission
 * that changes something (not `…:read`) except {@link READ_ONLY_ALLOWED_WRITES}. System admins keep
 * them. The model (`frozen` in policies/model.fga), the catalog API (`requirePermission`) and RLS
 * (`app_caller_can`, migration 0007) apply the same list; the tests compare them.
 */
export const READ_ONLY_BLOCKED_PERMISSIONS: readonly string[] = Object.freeze(
  PERMISSION_NAMES.filter((p) => !p.endsWith(':read') && !READ_ONLY_ALLOWED_WRITES.includes(p)),
);

/**
 * The relations route rules check that a read-only publisher refuses: the blocked permissions'
 * relations on `publisher` and the catalog rows' `can_update` / `can_delete` (policies/model.fga).
 */
export const READ_ONLY_BLOCKED_RELATIONS: ReadonlySet<string> = new Set([
  ...READ_ONLY_BLOCKED_PERMISSIONS.map((p) => permissionRelation(p)),
  'can_update',
  'can_delete',
]);

/** The system roles, most powerful first among the staff roles. */
export const SYSTEM_ROLES = ['admin', 'manager', 'editor', 'viewer', 'api_user', 'creator'] as const;
export type SystemRole = (typeof SYSTEM_ROLES)[number];

/** Roles a membership scoped to a department may have. */
export const DEPARTMENT_ROLES = ['admin', 'editor', 'viewer'] as const;
export type DepartmentRole = (typeof DEPARTMENT_ROLES)[number];

const catalogPerms = (actions: readonly (typeof CATALOG_ACTIONS)[number][]) => CATALOG_RESOURCES.flatMap((r) => actions.map((a) => `${r}:${a}`));
const profile = ['publishers:read', 'branding:read'];
// the sets several roles share (each on its own scope)
const editing = [...catalogPerms(['read', 'create', 'update']), ...profile];
const viewing = [...catalogPerms(['read']), ...profile];

/**
 * The permission set of each system role. Creators hold theirs on their own rows only; every other
 * system role publisher-wide.
 */
export const SYSTEM_ROLE_PERMISSIONS: Readonly<Record<SystemRole, readonly string[]>> = Object.freeze({
  admin: PERMISSION_NAMES,
  manager: [
    ...catalogPerms(CATALOG_ACTIONS),
    ...profile,
    'publisher_settings:read',
    'branding:update',
    'members:read',
    'roles:read',
    'usage:read',
  ],
  editor: editing,
  viewer: viewing,
  // machine access to the catalog: no administration at all
  api_user: catalogPerms(['read', 'create', 'update']),
  creator: editing,
});

/** The permission set of each department role (on that department's rows and members only). */
export const DEPARTMENT_ROLE_PERMISSIONS: Readonly<Record<DepartmentRole, readonly string[]>> = Object.freeze({
  admin: [...editing, 'members:read', 'members:invite', 'members:update_role', 'members:remove'],
  editor: editing,
  viewer: viewing,
});

/** Is `name` a permission of the catalogue? */
export function isPermission(name: string): boolean {
  return PERMISSION_NAMES.includes(name);
}

/**
 * The model relation of a permission on `publisher` (`works:read` → `works_read`): holders in any
 * scope, what route rules name. OpenFGA relation names cannot contain `:`.
 */
export function permissionRelation(permission: string): string {
  return permission.replace(':', '_');
}

/** The relation a custom role's grant of `permission` is written to: `publisher:<p>#grant_<relation>@role:<p>/<name>#assignee`. */
export function grantRelation(permission: string): string {
  return `grant_${permissionRelation(permission)}`;
}

/** The OpenFGA object of a custom role (docs/CONTRACTS.md): `role:<publisher uuid>/<role name>`. */
export function roleObject(publisherId: string, name: string): string {
  return `role:${publisherId}/${name}`;
}

/** Custom role names: lower case, digits and dashes, 2–40 characters (the roles routes also refuse a system role's name). */
export const ROLE_NAME = /^[a-z][a-z0-9-]{1,39}$/;

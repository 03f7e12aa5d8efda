/**
 * A user's access as the access explorer shows it (docs/CONTRACTS.md, "Authorization
 * administration"): finding users by email prefix, and one user's memberships (the database) with
 * the permission relations they hold on each of those publishers (OpenFGA BatchCheck of every
 * permission of policies/src/permissions.ts on `publisher:<id>` —
 * https://openfga.dev/docs/interacting/relationship-queries#batch-check).
 *
 * Reads across publishers go through the sign-in pool (`catalog_auth` sees every user and
 * membership, as modules/users reads a user for their publishers' admins); what the caller may see
 * is decided before (scope.ts) and applied here as an explicit publisher filter.
 */
import { ConsistencyPreference, type OpenFgaClient } from '@openfga/sdk';
import { query, type Orm } from '../../db/orm.ts';
import { problem } from '../../errors.ts';
import { PERMISSION_NAMES, permissionRelation } from '../../../../policies/src/permissions.ts';
import type { Reach } from './scope.ts';
import { withFga } from './fga.ts';

/** A user as the endpoints list them. */
export type UserSummary = { id: string; email: string | null; display_name: string };

/** Most users one search returns. */
export const USER_SEARCH_LIMIT = 20;

/** `q` as a LIKE prefix pattern: `%`, `_` and `\` taken literally (PostgreSQL's default escape `\`). */
function prefixPattern(q: string): string {
  return `${q.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
}

/**
 * Users whose email starts with `q` (case-insensitive), by email; a publisher admin's search only
 * finds members of their publisher.
 * @returns at most {@link USER_SEARCH_LIMIT} users
 */
export async function searchUsers(authOrm: Orm, reach: Reach, q: string): Promise<UserSummary[]> {
  return query<UserSummary>(
    authOrm.em.fork(),
    `select u.id, u.email, u.display_name from users u
      where u.deleted_at is null and u.email ilike $1
        and ($2::uuid is null or exists (select 1 from user_publishers m where m.user_id = u.id and m.publisher_id = $2::uuid))
      order by u.email, u.id limit $3`,
    [prefixPattern(q), reach.all ? null : reach.publisherId, USER_SEARCH_LIMIT],
  );
}

/**
 * Users by id, in the caller's reach (members of their publisher for a publisher admin), in the
 * order of `ids`; ids outside the reach or unknown are left out.
 */
export async function usersById(authOrm: Orm, reach: Reach, ids: readonly string[]): Promise<UserSummary[]> {
  if (ids.length === 0) return [];
  const rows = await query<UserSummary>(
    authOrm.em.fork(),
    `select u.id, u.email, u.display_name from users u
      where u.id = any($1::uuid[]) and u.deleted_at is null
        and ($2::uuid is null or exists (select 1 from user_publishers m where m.user_id = u.id and m.publisher_id = $2::uuid))`,
    [ids, reach.all ? null : reach.publisherId],
  );
  const byId = new Map(rows.map((r) => [r.id, r]));
  return ids.map((id) => byId.get(id)).filter((u): u is UserSummary => u !== undefined);
}

/** One membership of the access view. */
export type AccessMembership = {
  publisher: { id: string; name: string; slug: string };
  role: string;
  custom_role?: { id: string; name: string };
  department?: { id: string; name: string };
  /** the publisher's status (active, trial, suspended, archived): suspended and archived shut members out */
  status: string;
};

/** The access view of one user. */
export type UserAccess = {
  user: UserSummary;
  memberships: AccessMembership[];
  /** per publisher id: the permission relations (`works_read` …) the user holds there now */
  permissions: Record<string, string[]>;
};

type MembershipRow = {
  publisher_id: string; publisher_name: string; slug: string; publisher_status: string; role: string;
  custom_role_id: string | null; custom_role_name: string | null; department_id: string | null; department_name: string | null;
};

/**
 * The memberships of `userId` in the caller's reach (all, or the one publisher), with the names
 * of their publishers, custom roles and departments.
 * @throws ProblemError 404 for an unknown user, or one outside the caller's publisher
 */
export async function memberships(authOrm: Orm, reach: Reach, userId: string): Promise<{ user: UserSummary; memberships: AccessMembership[] }> {
  const em = authOrm.em.fork();
  const [user] = await query<UserSummary>(em, `select id, email, display_name from users where id = $1 and deleted_at is null`, [userId]);
  if (!user) throw problem.notFound('No such user.');
  const rows = await query<MembershipRow>(
    em,
    `select m.publisher_id, p.name as publisher_name, p.slug, p.status as publisher_status, m.role,
            m.custom_role_id, r.name as custom_role_name, m.department_id, d.name as department_name
       from user_publishers m
       join publishers p on p.id = m.publisher_id
       left join roles r on r.id = m.custom_role_id
       left join departments d on d.id = m.department_id
      where m.user_id = $1 and ($2::uuid is null or m.publisher_id = $2::uuid)
      order by p.name, m.publisher_id`,
    [userId, reach.all ? null : reach.publisherId],
  );
  if (!reach.all && rows.length === 0) throw problem.notFound('No such user in your publisher.');
  return {
    user,
    memberships: rows.map((r) => ({
      publisher: { id: r.publisher_id, name: r.publisher_name, slug: r.slug },
      role: r.role,
      ...(r.custom_role_id ? { custom_role: { id: r.custom_role_id, name: r.custom_role_name ?? '' } } : {}),
      ...(r.department_id ? { department: { id: r.department_id, name: r.department_name ?? '' } } : {}),
      status: r.publisher_status,
    })),
  };
}

/**
 * The permission relations `user:<userId>` holds on each `publisher:<id>`: one BatchCheck (the
 * SDK splits it into requests of 50 checks) of every permission of the catalogue on every publisher.
 * @param modelId the authorization model to decide with (the active one)
 * @param context the condition context of every check (policies/src/conditions.ts `checkContext`)
 * @returns publisher id → relations held, in the catalogue's order
 * @throws ProblemError 503 when OpenFGA is unreachable, 400 when it refuses the request
 */
export async function permissionsOn(fga: OpenFgaClient, modelId: string, userId: string, publisherIds: readonly string[], context: Record<string, unknown>): Promise<Record<string, string[]>> {
  const relations = PERMISSION_NAMES.map(permissionRelation);
  const checks = publisherIds.flatMap((p, i) => relations.map((relation, j) => ({ user: `user:${userId}`, relation, object: `publisher:${p}`, context, correlationId: `${i}-${j}` })));
  const out: Record<string, string[]> = Object.fromEntries(publisherIds.map((p) => [p, []]));
  if (checks.length === 0) return out;
  const res = await withFga(() => fga.batchCheck({ checks }, { authorizationModelId: modelId, consistency: ConsistencyPreference.HigherConsistency }));
  const held = new Set<string>();
  for (const r of res.result) {
    if (r.error) throw checkError(r.error);
    if (r.allowed) held.add(r.correlationId);
  }
  publisherIds.forEach((p, i) => (out[p] = relations.filter((_, j) => held.has(`${i}-${j}`))));
  return out;
}

/** A per-check error of BatchCheck as a problem (OpenFGA answered, but not this check). */
function checkError(error: { message?: string }): Error {
  return problem.unavailable(`OpenFGA could not decide a permission check: ${error.message ?? 'unknown error'}`);
}

/**
 * Who may ask the authorization admin endpoints about what (docs/CONTRACTS.md, "Authorization
 * administration"): system admins about anything; a publisher's admins (`audit:read` in the
 * X-Publisher-Id context — the sidecar decided `audit_read` on `publisher:{publisher}` already)
 * about that publisher only: its members, the `publisher:<ctx>` object, its custom roles and
 * departments, and the works, songwriters and recordings whose row they can see under RLS there.
 *
 * Also the syntax checks of the objects, relations and users the endpoints take, against the
 * active authorization model (unknown type, malformed object, unknown relation → 400).
 */
import type { FastifyRequest } from 'fastify';
import type { AuthorizationModel } from '@openfga/sdk';
import { problem } from '../../errors.ts';
import { requirePermission, type RequestTx } from '../../db/context.ts';
import { requireIdentity } from '../../plugins/identity.ts';
import { inRequestTx, isUuid, type RouteDeps } from '../common/http.ts';
import { query, type Orm } from '../../db/orm.ts';

/** The caller's reach: every publisher (a system admin), or one publisher (its admin). */
export type Reach = { all: true; publisherId: string | null } | { all: false; publisherId: string };

/**
 * Run `fn` in the request transaction with the caller's reach: a system admin (with or without a
 * publisher context) reaches everything; anyone else needs the publisher context and `audit:read`
 * there.
 * @throws ProblemError 400 `publisher-context` (not a system admin, no context), 403 without
 *   `audit:read`, and whatever the request transaction or `fn` throws
 */
export async function inAuthzTx<T>(deps: Pick<RouteDeps, 'orm' | 'flushOutbox'>, request: FastifyRequest, fn: (tx: RequestTx, reach: Reach) => Promise<T>): Promise<T> {
  const identity = requireIdentity(request);
  return inRequestTx(
    deps,
    request,
    async (tx) => {
      if (tx.ctx.isSystemAdmin) return fn(tx, { all: true, publisherId: tx.ctx.publisherId });
      if (!identity.publisherId) throw problem.publisherContext('Send X-Publisher-Id: the publisher whose access you inspect.');
      requirePermission(tx, 'audit:read');
      return fn(tx, { all: false, publisherId: tx.ctx.publisherId! });
    },
    { publisher: identity.publisherId ? 'required' : 'none' },
  );
}

/**
 * Run `fn` as a system admin without a publisher context (scope platform): the model endpoints.
 * @throws ProblemError 403 for anyone else
 */
export async function inSystemAdminTx<T>(deps: Pick<RouteDeps, 'orm' | 'flushOutbox'>, request: FastifyRequest, fn: (tx: RequestTx) => Promise<T>): Promise<T> {
  return inRequestTx(
    deps,
    request,
    async (tx) => {
      if (!tx.ctx.isSystemAdmin) throw problem.forbidden('Only a system admin manages the authorization model.');
      return fn(tx);
    },
    { publisher: 'none' },
  );
}

/** An OpenFGA object `type:id`, split. */
export type ObjectRef = { type: string; id: string; object: string };

const TYPE_NAME = /^[a-z][a-z0-9_]{0,49}$/;
const ROLE_ID = /^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\/[a-z][a-z0-9-]{1,39}$/i;
/** The catalog tables behind the row types. */
const ROW_TABLES: Record<string, string> = { work: 'works', songwriter: 'songwriters', recording: 'recordings' };

/** The relations the model defines on `type` (undefined: no such type). */
export function relationsOf(model: AuthorizationModel, type: string): string[] | undefined {
  const td = model.type_definitions.find((t) => t.type === type);
  return td ? Object.keys(td.relations ?? {}) : undefined;
}

/**
 * Check a type name against the model.
 * @param field the query field, for the problem's `errors`
 * @throws ProblemError 400 naming the known types
 */
export function checkType(model: AuthorizationModel, type: string, field: string): void {
  if (!TYPE_NAME.test(type) || !relationsOf(model, type)) {
    const known = model.type_definitions.map((t) => t.type).join(', ');
    throw problem.badRequest(`Unknown type "${type}": the model's types are ${known}.`, [{ field, reason: 'unknown type' }]);
  }
}

/**
 * Parse `type:id` and check it against the model: the type exists, and the id has the shape our
 * objects use (UUIDs; a custom role `role:<publisher uuid>/<name>`; `system:platform`).
 * @throws ProblemError 400 for a malformed object or an unknown type
 */
export function parseObject(model: AuthorizationModel, object: string, field = 'query.object'): ObjectRef {
  const i = object.indexOf(':');
  if (i <= 0) throw problem.badRequest(`"${object}" is not an object: write <type>:<id>, e.g. work:<uuid>.`, [{ field, reason: 'malformed object' }]);
  const type = object.slice(0, i);
  const id = object.slice(i + 1);
  checkType(model, type, field);
  const ok = type === 'role' ? ROLE_ID.test(id) : type === 'system' ? /^[a-z][a-z0-9_-]{0,49}$/.test(id) : isUuid(id);
  if (!ok) {
    const shape = type === 'role' ? 'role:<publisher uuid>/<role name>' : type === 'system' ? 'system:platform' : `${type}:<uuid>`;
    throw problem.badRequest(`"${object}" is not a ${type} object: write ${shape}.`, [{ field, reason: 'malformed object id' }]);
  }
  const norm = type === 'system' ? id : id.toLowerCase();
  return { type, id: norm, object: `${type}:${norm}` };
}

/**
 * Check that the model defines `relation` on `type`.
 * @throws ProblemError 400 naming the relations of the type
 */
export function checkRelation(model: AuthorizationModel, type: string, relation: string, field = 'query.permission'): void {
  const rels = relationsOf(model, type) ?? [];
  if (!rels.includes(relation)) {
    throw problem.badRequest(`The model defines no relation "${relation}" on ${type}: it has ${rels.join(', ') || 'none'}.`, [{ field, reason: 'unknown relation for the type' }]);
  }
}

/**
 * The publisher an object of our model belongs to, as far as its id tells (publisher, role), or
 * null when only its row tells (department, catalog rows) or it belongs to none (system, user).
 */
function publisherInId(ref: ObjectRef): string | null {
  if (ref.type === 'publisher') return ref.id;
  if (ref.type === 'role') return ref.id.slice(0, 36);
  return null;
}

/**
 * May a caller with `reach` ask about `ref`? System admins: yes. A publisher admin: the publisher
 * itself and its custom roles (by id), its departments and catalog rows (the row must be visible in
 * `tx`, the publisher context, under RLS).
 * @throws ProblemError 403 for another publisher's publisher/role object or a platform object,
 *   404 for a department or row that is not visible in the caller's publisher
 */
export async function checkObjectInReach(tx: RequestTx, reach: Reach, ref: ObjectRef): Promise<void> {
  if (reach.all) return;
  const own = publisherInId(ref);
  if (own !== null) {
    if (own !== reach.publisherId) throw problem.forbidden(`${ref.object} belongs to another publisher: you may inspect your own publisher only.`);
    return;
  }
  const table = ref.type === 'department' ? 'departments' : ROW_TABLES[ref.type];
  if (!table) throw problem.forbidden(`Only a system admin inspects ${ref.type} objects.`);
  const rows = await tx.sql(`select 1 from ${table} where id = $1`, [ref.id]);
  if (rows.length === 0) throw problem.notFound(`No ${ref.type} ${ref.id} in your publisher.`);
}

/**
 * A user id the caller may ask about: system admins any existing user (read through the sign-in
 * pool `authOrm`, which sees every user, as modules/users does); a publisher admin the members of
 * their publisher (read in `tx`, under RLS).
 * @param userId a UUID (checked by the route's schema)
 * @throws ProblemError 404 for an unknown user or one outside the caller's publisher
 */
export async function checkUserInReach(tx: RequestTx, authOrm: Orm, reach: Reach, userId: string): Promise<void> {
  const rows = reach.all
    ? await query(authOrm.em.fork(), `select 1 from users where id = $1 and deleted_at is null`, [userId])
    : await tx.sql(`select 1 from user_publishers where user_id = $1 and publisher_id = $2`, [userId, reach.publisherId]);
  if (rows.length === 0) throw problem.notFound(reach.all ? 'No such user.' : 'No such user in your publisher.');
}

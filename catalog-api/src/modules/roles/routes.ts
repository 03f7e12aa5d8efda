/**
 * Roles and permissions (docs/CONTRACTS.md, "Administration"):
 * - GET /api/v1/permissions — the catalogue (`resource:action`);
 * - GET /api/v1/publishers/{id}/roles — the system roles and the publisher's custom roles, each
 *   with its permissions (`roles:read`);
 * - POST …/roles, PUT / DELETE …/roles/{role_id} — custom roles (`roles:manage`). A custom role
 *   cannot hold a permission its author lacks; its name is its OpenFGA object (`role:<p>/<name>`)
 *   and never changes; a role still held by members (or open invitations) cannot be deleted (409).
 *
 * Every change reaches every sidecar at the next request: the grant tuples go through the outbox
 * (migration 0006's triggers) before the answer, and their epoch bumps invalidate cached decisions.
 */
import { z } from 'zod';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { PERMISSION_NAMES, ROLE_NAME, SYSTEM_ROLES, isPermission } from '../../../../policies/src/permissions.ts';
import { problem } from '../../errors.ts';
import { isoTimestamp } from '../../db/base.entity.ts';
import type { RequestTx } from '../../db/context.ts';
import { inRequestTx, location, pathId, type RouteDeps } from '../common/http.ts';
import { commonErrors, problemSchema, timestamp } from '../common/schemas.ts';
import { inPublisher } from '../publishers/in-publisher.ts';
import { Invitation } from '../users/invitation.entity.ts';
import { Membership } from '../users/membership.entity.ts';
import { Permission, Role, RolePermission } from './role.entity.ts';
import { recordAudit } from '../audit/audit.service.ts';

const tags = ['roles'];
const params = z.object({ publisherId: z.string() });
const roleParams = params.extend({ roleId: z.string() });

const roleSchema = z.object({
  id: z.uuid(),
  name: z.string(),
  display_name: z.string(),
  description: z.string(),
  system: z.boolean(),
  permissions: z.array(z.string()),
  created_at: timestamp,
  updated_at: timestamp,
}).meta({ id: 'Role' });
type RoleView = z.infer<typeof roleSchema>;

const permissionList = z
  .array(z.string().refine(isPermission, 'not a permission (see GET /api/v1/permissions)'))
  .max(PERMISSION_NAMES.length)
  .transform((ps) => [...new Set(ps)].sort());

const editable = {
  display_name: z.string().trim().max(100).default(''),
  description: z.string().trim().max(500).default(''),
  permissions: permissionList,
};

/** Roles → views with their permissions (one query). */
async function present(tx: RequestTx, roles: Role[]): Promise<RoleView[]> {
  const perms = roles.length ? await tx.em.find(RolePermission, { roleId: { $in: roles.map((r) => r.id) } }) : [];
  return roles.map((r) => ({
    id: r.id,
    name: r.name,
    display_name: r.displayName,
    description: r.description,
    system: r.publisherId === null || r.publisherId === undefined,
    permissions: perms.filter((p) => p.roleId === r.id).map((p) => p.permission).sort(),
    created_at: isoTimestamp(r.createdAt),
    updated_at: isoTimestamp(r.updatedAt),
  }));
}

/** @throws ProblemError 403 when `permissions` include one the caller lacks (system admins may grant any) */
function assertHeld(tx: RequestTx, permissions: readonly string[]): void {
  if (tx.ctx.isSystemAdmin) return;
  const missing = permissions.filter((p) => !tx.ctx.permissions.has(p));
  if (missing.length) throw problem.forbidden(`A custom role cannot hold permissions you lack: ${missing.join(', ')}.`);
}

/** The publisher's custom role `roleId`, or 404 (system roles are not editable). */
async function customRole(tx: RequestTx, roleId: string): Promise<Role> {
  const role = await tx.em.findOne(Role, { id: pathId(roleId), publisherId: tx.ctx.publisherId! });
  if (!role) throw problem.notFound('No such custom role of this publisher.');
  return role;
}

/** Replace a role's permission rows with `permissions`. */
async function setPermissions(tx: RequestTx, role: Role, permissions: readonly string[]): Promise<void> {
  const current = await tx.em.find(RolePermission, { roleId: role.id });
  for (const rp of current) if (!permissions.includes(rp.permission)) tx.em.remove(rp);
  for (const p of permissions) if (!current.some((rp) => rp.permission === p)) tx.em.create(RolePermission, { roleId: role.id, permission: p });
  await tx.em.flush();
}

/** Fastify plugin: the role and permission routes. */
export const rolesRoutes: FastifyPluginAsyncZod<RouteDeps> = async (app, deps) => {
  app.get(
    '/api/v1/permissions',
    {
      schema: { description: 'Every permission a role can hold, as resource:action.',
        tags,
        operationId: 'listPermissions',
        summary: 'The permission catalogue',
        response: { 200: z.object({ items: z.array(z.object({ name: z.string(), description: z.string() })) }), ...commonErrors },
      },
    },
    async (request) =>
      inRequestTx(deps, request, async (tx) => ({ items: (await tx.em.find(Permission, {}, { orderBy: { name: 'asc' } })).map((p) => ({ name: p.name, description: p.description })) }), {
        publisher: 'none',
      }),
  );

  app.get(
    '/api/v1/publishers/:publisherId/roles',
    { schema: { description: 'Each with its permissions; `system` roles cannot be changed (roles:read).', tags, operationId: 'listRoles', summary: 'System roles and the custom roles of this publisher', params, response: { 200: z.object({ items: z.array(roleSchema) }), ...commonErrors } } },
    async (request) =>
      inPublisher(deps, request, request.params.publisherId, 'roles:read', async (tx, p) => {
        const roles = await tx.em.find(Role, { $or: [{ publisherId: null, name: { $in: [...SYSTEM_ROLES] } }, { publisherId: p.id }] }, { orderBy: { createdAt: 'asc', id: 'asc' } });
        return { items: await present(tx, roles) };
      }),
  );

  app.post(
    '/api/v1/publishers/:publisherId/roles',
    {
      schema: {
        tags,
        operationId: 'createRole',
        summary: 'Create a custom role',
        description: 'Name: lower-case letters, digits and dashes (it never changes). It cannot hold a permission you lack.',
        params,
        body: z.strictObject({ name: z.string().regex(ROLE_NAME, 'lower-case letters, digits and dashes, 2–40 characters, starting with a letter'), ...editable }),
        response: { 201: roleSchema, ...commonErrors, 409: problemSchema, 422: problemSchema },
      },
    },
    async (request, reply) => {
      const created = await inPublisher(
        deps,
        request,
        request.params.publisherId,
        'roles:manage',
        async (tx, p) => {
          const b = request.body;
          if ((SYSTEM_ROLES as readonly string[]).includes(b.name) || b.name.startsWith('department-')) {
            throw problem.validation([{ field: 'name', reason: 'is the name of a system role' }]);
          }
          assertHeld(tx, b.permissions);
          const role = tx.em.create(Role, { publisherId: p.id, name: b.name, displayName: b.display_name || b.name, description: b.description });
          await tx.em.flush();
          await setPermissions(tx, role, b.permissions);
          await tx.em.refresh(role);
          const created = (await present(tx, [role]))[0]!;
          await recordAudit(tx, { action: 'role.created', objectType: 'role', objectId: role.id, after: created });
          return created;
        },
        { mutating: true },
      );
      return reply.status(201).header('location', location(`publishers/${request.params.publisherId.toLowerCase()}/roles`, created.id)).send(created);
    },
  );

  app.put(
    '/api/v1/publishers/:publisherId/roles/:roleId',
    {
      schema: {
        tags,
        operationId: 'updateRole',
        summary: "Change a custom role's name shown, description and permissions",
        description: 'Its members hold the new permissions from the next request on, on every sidecar.',
        params: roleParams,
        body: z.strictObject(editable),
        response: { 200: roleSchema, ...commonErrors, 422: problemSchema },
      },
    },
    async (request) =>
      inPublisher(
        deps,
        request,
        request.params.publisherId,
        'roles:manage',
        async (tx) => {
          const role = await customRole(tx, request.params.roleId);
          const b = request.body;
          assertHeld(tx, b.permissions);
          const before = (await present(tx, [role]))[0]!;
          tx.em.assign(role, { displayName: b.display_name || role.name, description: b.description });
          await tx.em.flush();
          await setPermissions(tx, role, b.permissions);
          await tx.em.refresh(role);
          const after = (await present(tx, [role]))[0]!;
          await recordAudit(tx, { action: 'role.updated', objectType: 'role', objectId: role.id, before, after });
          return after;
        },
        { mutating: true },
      ),
  );

  app.delete(
    '/api/v1/publishers/:publisherId/roles/:roleId',
    {
      schema: {
        tags,
        operationId: 'deleteRole',
        summary: 'Delete a custom role',
        description: '409 while members hold it or open invitations offer it.',
        params: roleParams,
        response: { 204: z.null(), ...commonErrors, 409: problemSchema },
      },
    },
    async (request, reply) => {
      await inPublisher(
        deps,
        request,
        request.params.publisherId,
        'roles:manage',
        async (tx) => {
          const role = await customRole(tx, request.params.roleId);
          const members = await tx.em.count(Membership, { customRoleId: role.id });
          const invitations = await tx.em.count(Invitation, { customRoleId: role.id, acceptedAt: null, revokedAt: null, expiresAt: { $gt: new Date() } });
          if (members + invitations > 0) throw problem.conflict(`${members} member(s) and ${invitations} open invitation(s) use this role; give them another role first.`);
          const before = (await present(tx, [role]))[0]!;
          await tx.em.nativeDelete(RolePermission, { roleId: role.id });
          tx.em.remove(role);
          await tx.em.flush();
          await recordAudit(tx, { action: 'role.deleted', objectType: 'role', objectId: before.id, before });
        },
        { mutating: true },
      );
      return reply.status(204).send(null);
    },
  );
};

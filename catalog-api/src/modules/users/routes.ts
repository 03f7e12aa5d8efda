/**
 * /api/v1/users/me — the caller and their memberships — and the membership administration of the
 * context publisher (/api/v1/members). The sidecar already limits /members to `can_manage_members`;
 * the API checks again: scope `publisher` and role `admin`, or a system admin. A publisher admin
 * changes roles of and removes existing members; adding a user who is not yet a member needs a
 * system admin (there is no invitation/consent flow yet), and a non-member is indistinguishable from
 * an unknown user (404 `not-found`, same detail).
 */
import { ForeignKeyConstraintViolationException, LockMode, UniqueConstraintViolationException } from '@mikro-orm/core';
import { z } from 'zod';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { problem } from '../../errors.ts';
import { ROLES, type RequestTx } from '../../db/context.ts';
import { inRequestTx, location, pathId, type RouteDeps } from '../common/http.ts';
import { commonErrors, problemSchema } from '../common/schemas.ts';
import { Publisher } from '../publishers/publisher.entity.ts';
import { Membership } from './membership.entity.ts';
import { User } from './user.entity.ts';

const meSchema = z.object({
  id: z.uuid(),
  email: z.string(),
  display_name: z.string().nullable(),
  is_system_admin: z.boolean(),
  memberships: z.array(z.object({ publisher_id: z.uuid(), name: z.string(), slug: z.string(), role: z.enum(ROLES) })),
});

const memberSchema = z.object({
  user_id: z.uuid(),
  publisher_id: z.uuid(),
  role: z.enum(ROLES),
  email: z.string().nullable(),
  display_name: z.string().nullable(),
});
type Member = z.infer<typeof memberSchema>;

/**
 * The one answer for "not a member of this publisher" — also for a UUID that is no user at all, so
 * that a publisher admin cannot probe which UUIDs are users.
 */
const NO_SUCH_MEMBER = 'No such member of this publisher.';

/** @throws ProblemError 403 unless the caller administers the context publisher */
function requireAdmin(tx: RequestTx): void {
  if (tx.ctx.scope !== 'publisher' || !(tx.ctx.role === 'admin' || tx.ctx.isSystemAdmin)) {
    throw problem.forbidden('Only an admin of this publisher can manage its members.');
  }
}

/**
 * Members of the context publisher (all, or the one `userId`) with their user rows. Filtered by the
 * context publisher on purpose: RLS shows the caller's own memberships in *other* publishers too (so
 * that /users/me works), and this endpoint is about one publisher. Isolation does not depend on the
 * filter — RLS still hides every foreign row.
 */
async function members(tx: RequestTx, userId?: string): Promise<Member[]> {
  const rows = await tx.em.find(Membership, { publisherId: tx.ctx.publisherId!, ...(userId ? { userId } : {}) });
  const users = rows.length ? await tx.em.find(User, { id: { $in: rows.map((m) => m.userId) } }) : [];
  const byId = new Map(users.map((u) => [u.id, u]));
  return rows
    .map((m) => ({ user_id: m.userId, publisher_id: m.publisherId, role: m.role, email: byId.get(m.userId)?.email ?? null, display_name: byId.get(m.userId)?.displayName ?? null }))
    .sort((a, b) => (a.email ?? '').localeCompare(b.email ?? '') || a.user_id.localeCompare(b.user_id));
}

/** After a change: refuse to leave a publisher that had an admin without one (409). */
async function keepAnAdmin(tx: RequestTx, previousRole: string | undefined): Promise<void> {
  if (previousRole !== 'admin') return;
  const admins = await tx.em.count(Membership, { publisherId: tx.ctx.publisherId!, role: 'admin' });
  if (admins === 0) throw problem.conflict('A publisher must keep at least one admin.');
}

/** Fastify plugin: /users/me and /members. */
export const usersRoutes: FastifyPluginAsyncZod<RouteDeps> = async (app, deps) => {
  app.get(
    '/api/v1/users/me',
    { schema: { tags: ['users'], summary: 'The caller and their memberships', response: { 200: meSchema, ...commonErrors } } },
    async (request) =>
      inRequestTx(
        deps,
        request,
        async (tx) => {
          const me = await tx.em.findOne(User, tx.ctx.userId);
          if (!me) throw problem.notFound('Your user record is not visible.');
          const own = await tx.em.find(Membership, { userId: tx.ctx.userId });
          const publishers = own.length ? await tx.em.find(Publisher, { id: { $in: own.map((m) => m.publisherId) } }) : [];
          const byId = new Map(publishers.map((p) => [p.id, p]));
          const memberships = own
            .filter((m) => byId.has(m.publisherId))
            .map((m) => ({ publisher_id: m.publisherId, name: byId.get(m.publisherId)!.name, slug: byId.get(m.publisherId)!.slug, role: m.role }))
            .sort((a, b) => a.name.localeCompare(b.name) || a.publisher_id.localeCompare(b.publisher_id));
          return { id: me.id, email: me.email, display_name: me.displayName, is_system_admin: me.isSystemAdmin, memberships };
        },
        { publisher: 'none' },
      ),
  );

  app.get(
    '/api/v1/members',
    { schema: { tags: ['members'], summary: "Members of the context publisher", response: { 200: z.object({ items: z.array(memberSchema) }), ...commonErrors } } },
    async (request) =>
      inRequestTx(deps, request, async (tx) => {
        requireAdmin(tx);
        return { items: await members(tx) };
      }),
  );

  app.put(
    '/api/v1/members/:userId',
    {
      schema: {
        tags: ['members'],
        summary: "Change a member's role (200); a system admin may also add a member (201)",
        description:
          'A publisher admin changes the role of a user who is already a member of the context publisher. ' +
          'Adding a user who is not yet a member needs a system admin (until there is an invitation flow); for ' +
          'anyone else a non-member and an unknown user both get the same 404 `not-found`. Demoting the last ' +
          'admin is refused with 409.',
        params: z.object({ userId: z.string() }),
        body: z.strictObject({ role: z.enum(ROLES) }),
        response: { 200: memberSchema, 201: memberSchema, ...commonErrors, 409: problemSchema },
      },
    },
    async (request, reply) => {
      const userId = pathId(request.params.userId);
      let result: { member: Member; created: boolean };
      try {
        result = await inRequestTx(
          deps,
          request,
          async (tx) => {
            requireAdmin(tx);
            const publisherId = tx.ctx.publisherId!;
            const before = await tx.em.findOne(Membership, { publisherId, userId }, { lockMode: LockMode.PESSIMISTIC_WRITE });
            const previousRole = before?.role;
            if (before) {
              before.role = request.body.role;
            } else {
              // No consent flow yet: only a system admin enrols someone. Anyone else learns nothing
              // about whether the UUID is a user (same answer as for an unknown one).
              if (!tx.ctx.isSystemAdmin) throw problem.notFound(NO_SUCH_MEMBER);
              tx.em.create(Membership, { publisherId, userId, role: request.body.role });
            }
            await tx.em.flush();
            await keepAnAdmin(tx, previousRole);
            const [member] = await members(tx, userId);
            if (!member) throw problem.internal();
            return { member, created: !before };
          },
          { mutating: true },
        );
      } catch (err) {
        // only a system admin reaches the insert: an unknown user (foreign key) → 404
        if (err instanceof ForeignKeyConstraintViolationException) throw problem.notFound('No such user.');
        // a concurrent request added the same membership first
        if (err instanceof UniqueConstraintViolationException) throw problem.conflict('The membership was changed concurrently; retry.');
        throw err;
      }
      if (result.created) reply.status(201).header('location', location('members', userId));
      return result.member;
    },
  );

  app.delete(
    '/api/v1/members/:userId',
    {
      schema: {
        tags: ['members'],
        summary: 'Remove a member',
        description: 'A publisher admin removes a member of the context publisher (404 `not-found` for anyone who is not one). Removing the last admin is refused with 409.',
        params: z.object({ userId: z.string() }), response: { 204: z.null(), ...commonErrors, 409: problemSchema },
      },
    },
    async (request, reply) => {
      const userId = pathId(request.params.userId);
      await inRequestTx(
        deps,
        request,
        async (tx) => {
          requireAdmin(tx);
          const member = await tx.em.findOne(Membership, { publisherId: tx.ctx.publisherId!, userId });
          if (!member) throw problem.notFound(NO_SUCH_MEMBER);
          tx.em.remove(member);
          await tx.em.flush();
          await keepAnAdmin(tx, member.role);
        },
        { mutating: true },
      );
      return reply.status(204).send(null);
    },
  );
};

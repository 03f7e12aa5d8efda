/**
 * /api/v1/users/me — the caller and their memberships — and the membership administration of the
 * context publisher (/api/v1/members). The sidecar already limits /members to `can_manage_members`;
 * the API checks again: scope `publisher` and role `admin`, or a system admin. A publisher admin
 * changes roles of and removes existing members; adding a user who is not yet a member needs a
 * system admin (there is no invitation/consent flow yet), and a non-member is indistinguishable from
 * an unknown user (404 `not-found`, same detail).
 */
import { z } from 'zod';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { problem } from '../errors.ts';
import { ROLES, type RequestTx } from '../db/context.ts';
import { commonErrors, inRequestTx, location, pathId, problemSchema, type RouteDeps } from './common.ts';

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

// Membership rows are filtered by the context publisher on purpose: RLS shows the caller's own
// memberships in *other* publishers too (so that /users/me works), and this endpoint is about one
// publisher. Isolation does not depend on the filter — RLS still hides every foreign row.
const MEMBER_SQL = `
  select m.user_id, m.publisher_id, m.role, u.email, u.display_name
    from user_publishers m left join users u on u.id = m.user_id
   where m.publisher_id = nullif(current_setting('app.publisher_id', true), '')::uuid`;

async function loadMember(tx: RequestTx, userId: string): Promise<Member | undefined> {
  const [row] = await tx.sql<Member>(`${MEMBER_SQL} and m.user_id = $1`, [userId]);
  return row;
}

/** After a change: refuse to leave a publisher that had an admin without one (409). */
async function keepAnAdmin(tx: RequestTx, previousRole: string | undefined): Promise<void> {
  if (previousRole !== 'admin') return;
  const [row] = await tx.sql<{ n: number }>(`select count(*)::int as n from (${MEMBER_SQL} and m.role = 'admin') a`);
  if ((row?.n ?? 0) === 0) throw problem.conflict('A publisher must keep at least one admin.');
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
          const [me] = await tx.sql<Omit<z.infer<typeof meSchema>, 'memberships'>>(
            `select id, email, display_name, is_system_admin from users where id = $1`,
            [tx.ctx.userId],
          );
          if (!me) throw problem.notFound('Your user record is not visible.');
          const memberships = await tx.sql<z.infer<typeof meSchema>['memberships'][number]>(
            `select m.publisher_id, p.name, p.slug, m.role
               from user_publishers m join publishers p on p.id = m.publisher_id
              where m.user_id = $1 order by p.name, p.id`,
            [tx.ctx.userId],
          );
          return { ...me, memberships };
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
        return { items: await tx.sql<Member>(`${MEMBER_SQL} order by u.email, m.user_id`) };
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
            const [before] = await tx.sql<{ role: string }>(
              `select role from user_publishers where publisher_id = $1 and user_id = $2 for update`,
              [tx.ctx.publisherId, userId],
            );
            if (before) {
              await tx.sql(`update user_publishers set role = $3 where publisher_id = $1 and user_id = $2`, [tx.ctx.publisherId, userId, request.body.role]);
            } else {
              // No consent flow yet: only a system admin enrols someone. Anyone else learns nothing
              // about whether the UUID is a user (same answer as for an unknown one).
              if (!tx.ctx.isSystemAdmin) throw problem.notFound(NO_SUCH_MEMBER);
              await tx.sql(`insert into user_publishers (publisher_id, user_id, role) values ($1, $2, $3)`, [tx.ctx.publisherId, userId, request.body.role]);
            }
            await keepAnAdmin(tx, before?.role);
            const member = await loadMember(tx, userId);
            if (!member) throw problem.internal();
            return { member, created: !before };
          },
          { mutating: true },
        );
      } catch (err) {
        // only a system admin reaches the insert: an unknown user (foreign key) → 404
        if ((err as { code?: string }).code === '23503') throw problem.notFound('No such user.');
        // a concurrent request added the same membership first
        if ((err as { code?: string }).code === '23505') throw problem.conflict('The membership was changed concurrently; retry.');
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
          const rows = await tx.sql<{ role: string }>(
            `delete from user_publishers where publisher_id = $1 and user_id = $2 returning role`,
            [tx.ctx.publisherId, userId],
          );
          if (rows.length === 0) throw problem.notFound(NO_SUCH_MEMBER);
          await keepAnAdmin(tx, rows[0]!.role);
        },
        { mutating: true },
      );
      return reply.status(204).send(null);
    },
  );
};

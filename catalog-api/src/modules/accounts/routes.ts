/**
 * Accounts and usage (docs/CONTRACTS.md, "Accounts and usage"): a publisher's account
 * (accounts:read), its plan change (accounts:change_plan), its daily usage (usage:read), and the
 * list of every account for system admins. Rules of a plan change: accounts.service.ts.
 */
import { z } from 'zod';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { problem } from '../../errors.ts';
import type { AuthDeps } from '../auth/deps.ts';
import type { RequestTx } from '../../db/context.ts';
import { inRequestTx, type RouteDeps } from '../common/http.ts';
import { afterCursor, listQuerySchema, pageSchema } from '../common/pagination.ts';
import { commonErrors, problemSchema } from '../common/schemas.ts';
import { inPublisher } from '../publishers/in-publisher.ts';
import { recordAudit } from '../audit/audit.service.ts';
import { ACCOUNT_STATUSES, Account } from './account.entity.ts';
import { PLAN_TYPES } from './plan.entity.ts';
import { accountSchema, changePlan, clientUsage, clientUsageSchema, planChangeSchema, presentAccounts, usageDaySchema, usageSeries } from './accounts.service.ts';
import { utcDayOf } from '../../../../policies/src/metering.ts';

/** What the account routes need: the app pool and the sign-in service's pool (seat counts). */
export type AccountsRouteDeps = RouteDeps & { auth: Pick<AuthDeps, 'orm'> };

const tags = ['accounts'];
const params = z.object({ publisherId: z.string() });
const day = z.iso.date().describe('a UTC day, YYYY-MM-DD');

/** An account's audited fields (audit.service.ts AUDITED_FIELDS.account): the payment token never, only whether it changed. */
function audited(a: Account) {
  return {
    plan_type: a.planType, billing_cycle: a.billingCycle, seats: a.seats, status: a.status, read_only: a.isReadOnly(),
    billing_email: a.billingEmail ?? null, billing_address: a.billingAddress ?? {}, payment_method_changed: false,
  };
}

/** Fastify plugin: the account routes. */
export const accountsRoutes: FastifyPluginAsyncZod<AccountsRouteDeps> = async (app, deps) => {
  const authOrm = deps.auth.orm;

  /** The context publisher's account (every publisher has one: migration 0007's trigger). */
  const accountOf = async (tx: RequestTx, publisherId: string) =>
    tx.em.findOneOrFail(Account, { publisherId }, { refresh: true, failHandler: () => problem.notFound('No such account.') });

  app.get(
    '/api/v1/publishers/:publisherId/account',
    {
      schema: {
        tags,
        operationId: 'getAccount',
        summary: "A publisher's account: plan, limits, seats, status, billing",
        description: 'Needs accounts:read.',
        params,
        response: { 200: accountSchema, ...commonErrors },
      },
    },
    async (request) =>
      inPublisher(deps, request, request.params.publisherId, 'accounts:read', async (tx, p) => {
        const [view] = await presentAccounts(tx, authOrm, [await accountOf(tx, p.id)]);
        return view!;
      }),
  );

  app.put(
    '/api/v1/publishers/:publisherId/account/plan',
    {
      schema: {
        tags,
        operationId: 'changePlan',
        summary: 'Choose or change the plan',
        description:
          'Needs accounts:change_plan (it still works while the publisher is read-only). Ends a trial. Fewer seats than in use → 409 `seats-in-use` with both numbers; the custom plan only by a system admin.',
        params,
        body: planChangeSchema,
        response: { 200: accountSchema, ...commonErrors, 409: problemSchema, 422: problemSchema },
      },
    },
    async (request) =>
      inPublisher(
        deps,
        request,
        request.params.publisherId,
        'accounts:change_plan',
        async (tx, p) => {
          const account = await accountOf(tx, p.id);
          const before = audited(account);
          const previousRef = account.paymentMethodRef ?? null;
          await changePlan(tx, authOrm, account, request.body);
          await tx.em.flush();
          const after = await accountOf(tx, p.id);
          const payment_method_changed = (after.paymentMethodRef ?? null) !== previousRef;
          await recordAudit(tx, { action: 'account.plan_changed', objectType: 'account', objectId: p.id, before, after: { ...audited(after), payment_method_changed } });
          const [view] = await presentAccounts(tx, authOrm, [after]);
          return view!;
        },
        { mutating: true },
      ),
  );

  app.get(
    '/api/v1/publishers/:publisherId/account/usage',
    {
      schema: {
        tags,
        operationId: 'getUsage',
        summary: 'Daily usage: API calls, storage bytes, seats',
        description: `Needs usage:read. One entry per UTC day from \`from\` (default: the first of this month) to \`to\` (default: today), at most 366 days. API calls are counted by the sidecars and rolled up every few seconds.`,
        params,
        querystring: z.object({ from: day.optional(), to: day.optional() }),
        response: {
          200: z.object({ publisher_id: z.uuid(), from: z.iso.date(), to: z.iso.date(), days: z.array(usageDaySchema), api_clients: z.array(clientUsageSchema).describe("each API client's calls over the range, most first") }),
          ...commonErrors,
          422: problemSchema,
        },
      },
    },
    async (request) =>
      inPublisher(deps, request, request.params.publisherId, 'usage:read', async (tx, p) => {
        const today = utcDayOf(Date.now());
        const to = request.query.to ?? today;
        const from = request.query.from ?? `${to.slice(0, 7)}-01`;
        const days = await usageSeries(tx, from, to);
        return { publisher_id: p.id, from, to, days, api_clients: await clientUsage(tx, from, to) };
      }),
  );

  app.get(
    '/api/v1/accounts',
    {
      schema: {
        tags,
        operationId: 'listAccounts',
        summary: 'List every account (system admins)',
        description: 'Keyset pagination, oldest first; filter by plan type and status.',
        querystring: listQuerySchema.extend({ plan_type: z.enum(PLAN_TYPES).optional(), status: z.enum(ACCOUNT_STATUSES).optional() }),
        response: { 200: pageSchema(accountSchema), ...commonErrors },
      },
    },
    async (request) =>
      inRequestTx(
        deps,
        request,
        async (tx) => {
          if (!tx.ctx.isSystemAdmin) throw problem.forbidden('Only a system admin lists every account.');
          const { limit, cursor, plan_type, status } = request.query;
          const where = { ...(plan_type ? { planType: plan_type } : {}), ...(status ? { status } : {}) };
          const page = await tx.em.findByCursor(Account, { where, first: limit, after: afterCursor(cursor), includeCount: false, orderBy: { createdAt: 'asc', publisherId: 'asc' } });
          return { items: await presentAccounts(tx, authOrm, page.items), next_cursor: page.hasNextPage ? page.endCursor : null };
        },
        { publisher: 'none' },
      ),
  );
};

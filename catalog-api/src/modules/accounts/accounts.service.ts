/**
 * Accounts (docs/CONTRACTS.md, "Accounts and usage"): how an account is presented, what choosing a
 * plan does, and the daily usage series.
 *
 * Rules of a plan change (PUT /api/v1/publishers/{id}/account/plan):
 * - the seat limit becomes the requested `seats` or the plan's; more than the plan's seats only on
 *   the custom plan; fewer than the seats in use (members + open invitations) → 409 `seats-in-use`
 *   with both numbers — counted under the same per-publisher lock as invitations, so a concurrent
 *   invitation cannot slip in between;
 * - the custom plan and the `enterprise` billing cycle are negotiated: custom only by a system
 *   admin, the enterprise cycle only on the enterprise and custom plans (422 otherwise);
 * - choosing a plan ends a trial or a cancellation (status `active`, read-only lifted — the
 *   outbox removes `publisher:<p>#read_only` at once); a past-due account stays past due.
 */
import { z } from 'zod';
import { ProblemError, problem } from '../../errors.ts';
import type { Orm } from '../../db/orm.ts';
import { isoTimestamp } from '../../db/base.entity.ts';
import type { RequestTx } from '../../db/context.ts';
import { timestamp } from '../common/schemas.ts';
import { utcDayOf } from '../../../../policies/src/metering.ts';
import { lockSeats, seatsOf, seatsOfMany } from '../users/members.service.ts';
import { ACCOUNT_STATUSES, BILLING_CYCLES, type Account } from './account.entity.ts';
import { PLAN_TYPES, Plan } from './plan.entity.ts';
import { AccountUsage, ApiClientUsage } from './usage.entity.ts';

/** A plan's limits in the API (null = unlimited). */
export const planSchema = z.object({
  type: z.enum(PLAN_TYPES),
  name: z.string(),
  seats: z.number().int(),
  api_calls_per_month: z.number().int().nullable(),
  storage_bytes: z.number().int().nullable(),
  over_limit: z.enum(['block', 'warn']).describe('past the monthly API-call limit: `block` (429) or `warn` (a header only)'),
}).meta({ id: 'Plan' });

/** Billing address lines (free text, short). */
export const billingAddressSchema = z.strictObject({
  line1: z.string().max(200).optional(),
  line2: z.string().max(200).optional(),
  city: z.string().max(100).optional(),
  region: z.string().max(100).optional(),
  postal_code: z.string().max(20).optional(),
  country: z.string().regex(/^[A-Z]{2}$/, 'must be an ISO 3166-1 alpha-2 country code').optional(),
});

/** An account in the API (the payment method's token is never returned). */
export const accountSchema = z.object({
  publisher_id: z.uuid(),
  plan: planSchema,
  billing_cycle: z.enum(BILLING_CYCLES),
  seats: z.object({ limit: z.number().int(), used: z.number().int().describe('members (API clients excepted) plus open invitations') }),
  status: z.enum(ACCOUNT_STATUSES),
  trial_ends_at: timestamp.nullable(),
  read_only: z.boolean().describe("true while the trial has ended without a chosen plan, or the account is cancelled: writes get 403 `publisher-read-only`"),
  billing_email: z.string().nullable(),
  billing_address: billingAddressSchema,
  payment_method_on_file: z.boolean().describe("a payment method is on file (its token is write-only: PUT …/account/plan `payment_method_ref`)"),
  created_at: timestamp,
  updated_at: timestamp,
}).meta({ id: 'Account' });
export type AccountView = z.infer<typeof accountSchema>;

/** A payment provider's token (write-only): letters first, no card number (13+ digits in a row). Mirrors the column check. */
export const paymentMethodRef = z
  .string()
  .regex(/^[A-Za-z][A-Za-z0-9_:.-]{2,199}$/, "must be the payment provider's token (e.g. pm_1Nq2…), 3–200 characters")
  .refine((s) => !/[0-9]{13}/.test(s), 'looks like a card number: send the payment provider’s token, never card data');

/** The body of PUT …/account/plan. */
export const planChangeSchema = z.strictObject({
  plan_type: z.enum(PLAN_TYPES),
  billing_cycle: z.enum(BILLING_CYCLES).optional().describe('default: the current one'),
  seats: z.number().int().min(1).max(100_000).optional().describe("the seat limit (default: the plan's; above the plan's only on the custom plan)"),
  billing_email: z.email().max(254).optional(),
  billing_address: billingAddressSchema.optional(),
  payment_method_ref: paymentMethodRef.optional(),
});
export type PlanChange = z.infer<typeof planChangeSchema>;

/** Plans by type (four rows; read per request, they change only by migration). */
async function plans(tx: RequestTx): Promise<Map<string, Plan>> {
  return new Map((await tx.em.find(Plan, {})).map((p) => [p.id, p]));
}

function presentPlan(p: Plan): z.infer<typeof planSchema> {
  return { type: p.id, name: p.name, seats: p.seats, api_calls_per_month: p.apiCallsPerMonth ?? null, storage_bytes: p.storageBytes ?? null, over_limit: p.overLimit };
}

/**
 * Accounts → their API form (seats used counted in one statement on the sign-in pool).
 * @param authOrm the sign-in service's pool (sees every membership and invitation)
 */
export async function presentAccounts(tx: RequestTx, authOrm: Orm, rows: Account[]): Promise<AccountView[]> {
  const byType = await plans(tx);
  const seats = await seatsOfMany(authOrm, rows.map((a) => a.publisherId));
  return rows.map((a) => ({
    publisher_id: a.publisherId,
    plan: presentPlan(byType.get(a.planType)!),
    billing_cycle: a.billingCycle,
    seats: { limit: a.seats, used: seats.get(a.publisherId)?.used ?? 0 },
    status: a.status,
    trial_ends_at: a.trialEndsAt ? a.trialEndsAt.toISOString() : null,
    read_only: a.isReadOnly(),
    billing_email: a.billingEmail ?? null,
    billing_address: (a.billingAddress ?? {}) as z.infer<typeof billingAddressSchema>,
    payment_method_on_file: !!a.paymentMethodRef,
    created_at: isoTimestamp(a.createdAt),
    updated_at: isoTimestamp(a.updatedAt),
  }));
}

/**
 * Apply a plan change to `account` (see the module comment); the caller flushes.
 * @throws ProblemError 403 (custom plan, not a system admin), 422 (enterprise cycle on a smaller
 *   plan; seats above the plan's), 409 `seats-in-use` (fewer seats than in use)
 */
export async function changePlan(tx: RequestTx, authOrm: Orm, account: Account, change: PlanChange): Promise<void> {
  const plan = (await plans(tx)).get(change.plan_type)!;
  if (plan.id === 'custom' && !tx.ctx.isSystemAdmin) throw problem.forbidden('The custom plan is agreed with the platform: a system admin sets it.');
  const cycle = change.billing_cycle ?? account.billingCycle;
  if (cycle === 'enterprise' && plan.id !== 'enterprise' && plan.id !== 'custom') {
    throw problem.validation([{ field: 'billing_cycle', reason: 'the enterprise cycle is for the enterprise and custom plans' }]);
  }
  const seats = change.seats ?? plan.seats;
  if (seats > plan.seats && plan.id !== 'custom') throw problem.validation([{ field: 'seats', reason: `the ${plan.name} plan has at most ${plan.seats} seats` }]);
  await lockSeats(tx, account.publisherId);
  const { used } = await seatsOf(authOrm, account.publisherId);
  if (seats < used) {
    throw new ProblemError(409, 'seats-in-use', `${used} seats are in use (members and open invitations) but the ${plan.name} plan would allow ${seats}: remove members or revoke invitations first.`, [
      { field: 'seats', reason: `in use: ${used}; requested: ${seats}` },
    ]);
  }
  tx.em.assign(account, {
    planType: plan.id,
    billingCycle: cycle,
    seats,
    status: account.status === 'past_due' ? 'past_due' : 'active',
    readOnlySince: null,
    ...(change.billing_email !== undefined ? { billingEmail: change.billing_email } : {}),
    ...(change.billing_address !== undefined ? { billingAddress: change.billing_address } : {}),
    ...(change.payment_method_ref !== undefined ? { paymentMethodRef: change.payment_method_ref } : {}),
    updatedBy: tx.ctx.userId,
  });
}

/** One day of usage. */
export const usageDaySchema = z.object({
  day: z.iso.date(),
  api_calls: z.number().int().describe('allowed API calls through the sidecar that UTC day'),
  storage_bytes: z.number().int().nullable().describe('catalog storage measured that day (null: not measured)'),
  seats_used: z.number().int().nullable().describe('seats in use when last measured that day (null: not measured)'),
});

/** An API client's allowed calls over the range. */
export const clientUsageSchema = z.object({ client_id: z.uuid(), api_calls: z.number().int() });

/**
 * Allowed API calls per API client of the context publisher from `from` to `to` (inclusive UTC
 * days), most calls first. The range is checked by {@link usageSeries}.
 */
export async function clientUsage(tx: RequestTx, from: string, to: string): Promise<z.infer<typeof clientUsageSchema>[]> {
  const rows = await tx.em.find(ApiClientUsage, { publisherId: tx.ctx.publisherId!, day: { $gte: from, $lte: to } });
  const totals = new Map<string, number>();
  for (const r of rows) totals.set(r.clientId, (totals.get(r.clientId) ?? 0) + Number(r.apiCalls));
  return [...totals].map(([client_id, api_calls]) => ({ client_id, api_calls })).sort((a, b) => b.api_calls - a.api_calls || a.client_id.localeCompare(b.client_id));
}

/** Longest series one request returns, days. */
export const MAX_USAGE_DAYS = 366;


/**
 * The daily usage series of the context publisher from `from` to `to` (inclusive, UTC days): one
 * entry per day, zero calls and null measurements on days without a row.
 * @throws ProblemError 422 when `to` is before `from` or the range is longer than {@link MAX_USAGE_DAYS}
 */
export async function usageSeries(tx: RequestTx, from: string, to: string): Promise<z.infer<typeof usageDaySchema>[]> {
  const start = Date.parse(`${from}T00:00:00Z`);
  const end = Date.parse(`${to}T00:00:00Z`);
  const days = Math.round((end - start) / 86_400_000) + 1;
  if (days < 1) throw problem.validation([{ field: 'to', reason: 'must not be before from' }]);
  if (days > MAX_USAGE_DAYS) throw problem.validation([{ field: 'to', reason: `at most ${MAX_USAGE_DAYS} days per request` }]);
  const rows = await tx.em.find(AccountUsage, { publisherId: tx.ctx.publisherId!, day: { $gte: from, $lte: to } }, { orderBy: { day: 'asc' } });
  const byDay = new Map(rows.map((r) => [String(r.day).slice(0, 10), r]));
  return Array.from({ length: days }, (_, i) => {
    const day = utcDayOf(start + i * 86_400_000);
    const r = byDay.get(day);
    return { day, api_calls: Number(r?.apiCalls ?? 0), storage_bytes: r?.storageBytes ?? null, seats_used: r?.seatsUsed ?? null };
  });
}

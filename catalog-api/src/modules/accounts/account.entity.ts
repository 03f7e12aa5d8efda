/**
 * A publisher's account (`accounts`, migration 0007; one per publisher, created with it by a
 * trigger): plan, billing cycle, seat limit, status, trial end, billing contact and an opaque
 * payment-method reference. `readOnlySince` is stamped when a trial ended without a chosen plan.
 */
import { defineEntity, p } from '@mikro-orm/core';
import { TimestampText } from '../../db/base.entity.ts';
import { PLAN_TYPES } from './plan.entity.ts';

/** How often the account is billed (`enterprise`: by agreement; enterprise and custom plans only). */
export const BILLING_CYCLES = ['monthly', 'annual', 'enterprise'] as const;
/** An account's status: trial and active work, past_due keeps working, cancelled is read-only. */
export const ACCOUNT_STATUSES = ['trial', 'active', 'past_due', 'cancelled'] as const;
/** One of {@link ACCOUNT_STATUSES}. */
export type AccountStatus = (typeof ACCOUNT_STATUSES)[number];

const AccountSchema = defineEntity({
  name: 'Account',
  tableName: 'accounts',
  properties: {
    publisherId: p.uuid().primary(),
    planType: p.enum(PLAN_TYPES),
    billingCycle: p.enum(BILLING_CYCLES),
    seats: p.integer(),
    status: p.enum(ACCOUNT_STATUSES),
    trialEndsAt: p.datetime().nullable(),
    readOnlySince: p.datetime().nullable(),
    billingEmail: p.string().nullable(),
    billingAddress: p.json<Record<string, string>>().defaultRaw(`'{}'::jsonb`),
    paymentMethodRef: p.string().nullable(),
    createdAt: p.type(TimestampText).defaultRaw('now()'),
    updatedAt: p.type(TimestampText).defaultRaw('now()'),
    updatedBy: p.uuid().nullable(),
  },
});

export class Account extends AccountSchema.class {
  /**
   * Is the account read-only at `now`: cancelled, stamped by the trial sweep, or a trial past its
   * end (the same rule as the database's `app_publisher_read_only`)?
   */
  isReadOnly(now = new Date()): boolean {
    if (this.status === 'cancelled' || this.readOnlySince) return true;
    return this.status === 'trial' && !!this.trialEndsAt && this.trialEndsAt <= now;
  }
}
AccountSchema.setClass(Account);

/**
 * A plan (`plans`, migration 0007): a plan type and its limits. A null limit is unlimited;
 * `overLimit` says what the sidecar does past the monthly API-call limit (`block`: 429, `warn`: a
 * header only).
 */
import { defineEntity, p } from '@mikro-orm/core';

/** The plan types. */
export const PLAN_TYPES = ['starter', 'professional', 'enterprise', 'custom'] as const;
export type PlanType = (typeof PLAN_TYPES)[number];

const PlanSchema = defineEntity({
  name: 'Plan',
  tableName: 'plans',
  properties: {
    id: p.enum(PLAN_TYPES).primary(),
    name: p.string(),
    seats: p.integer(),
    /** bigint columns come back as strings from the driver; numbers here (< 2^53) */
    apiCallsPerMonth: p.bigint('number').nullable(),
    storageBytes: p.bigint('number').nullable(),
    overLimit: p.enum(['block', 'warn'] as const),
    position: p.integer(),
  },
});

export class Plan extends PlanSchema.class {}
PlanSchema.setClass(Plan);

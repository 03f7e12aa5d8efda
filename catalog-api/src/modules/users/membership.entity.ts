/**
 * A membership (`user_publishers`): a user's role at one publisher. Inserting, changing or deleting
 * a row records the matching OpenFGA tuple in the relationship outbox (migration 0004's trigger),
 * so code never talks to OpenFGA to change a role.
 */
import { defineEntity, p } from '@mikro-orm/core';
import { TimestampText } from '../../db/base.entity.ts';

/**
 * Membership roles (docs/CONTRACTS.md, `user_publishers.role`), most powerful first: the system
 * roles (policies/src/permissions.ts) and `custom` (the membership's `customRoleId` names the role).
 */
export const ROLES = ['admin', 'manager', 'editor', 'viewer', 'creator', 'api_user', 'custom'] as const;
export type Role = (typeof ROLES)[number];

/** The staff roles in descending order of power (creator stands outside this hierarchy). */
export const STAFF_ROLES = ['admin', 'manager', 'editor', 'viewer'] as const;
export type StaffRole = (typeof STAFF_ROLES)[number];

/**
 * The most powerful of `roles` in the staff hierarchy admin ⊃ manager ⊃ editor ⊃ viewer.
 * @returns undefined for an empty list
 */
export function highestStaffRole(roles: Iterable<StaffRole>): StaffRole | undefined {
  let best: number | undefined;
  for (const r of roles) {
    const i = STAFF_ROLES.indexOf(r);
    if (best === undefined || i < best) best = i;
  }
  return best === undefined ? undefined : STAFF_ROLES[best];
}

const MembershipSchema = defineEntity({
  name: 'Membership',
  tableName: 'user_publishers',
  properties: {
    publisherId: p.uuid().primary(),
    userId: p.uuid().primary(),
    role: p.enum(ROLES),
    /** the custom role (role `custom`) */
    customRoleId: p.uuid().nullable(),
    /** a department-scoped membership's department (roles admin, editor, viewer) */
    departmentId: p.uuid().nullable(),
    /** the membership ends here (its tuple carries the `non_expired_grant` condition; migration 0012); null = no end */
    expiresAt: p.datetime().nullable(),
    createdAt: p.type(TimestampText).defaultRaw('now()'),
    updatedAt: p.type(TimestampText).defaultRaw('now()'),
  },
});

export class Membership extends MembershipSchema.class {}
MembershipSchema.setClass(Membership);

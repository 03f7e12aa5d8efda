/**
 * An invitation to join a publisher (`invitations`, migration 0006): email, the role (system role,
 * custom role, or a department role), a single-use token stored as its SHA-256 digest, valid 7
 * days. At most one open invitation per publisher and email (re-inviting replaces it).
 */
import { defineEntity, p } from '@mikro-orm/core';
import { TimestampText } from '../../db/base.entity.ts';

const InvitationSchema = defineEntity({
  name: 'Invitation',
  tableName: 'invitations',
  properties: {
    id: p.uuid().primary().defaultRaw('gen_random_uuid()'),
    publisherId: p.uuid(),
    email: p.string(),
    role: p.string(),
    customRoleId: p.uuid().nullable(),
    departmentId: p.uuid().nullable(),
    /** the end of the membership its acceptance creates (migration 0012) */
    membershipExpiresAt: p.datetime().nullable(),
    tokenHash: p.string(),
    expiresAt: p.datetime(),
    createdAt: p.type(TimestampText).defaultRaw('now()'),
    createdBy: p.uuid().nullable(),
    acceptedAt: p.datetime().nullable(),
    acceptedBy: p.uuid().nullable(),
    revokedAt: p.datetime().nullable(),
  },
});
export class Invitation extends InvitationSchema.class {}
InvitationSchema.setClass(Invitation);

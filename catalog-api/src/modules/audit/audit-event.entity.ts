/**
 * One row of the append-only audit log (`audit_events`, migration 0008): who (actor) did what
 * (action) to which object, in which publisher's chain, with the changed fields before and after,
 * and the request it came with.
 *
 * `chainSeq`, `prevHash`, `hash` and `occurredAt` belong to the database: the BEFORE INSERT trigger
 * sets them whatever the insert says, so the entity declares no default for them — an insert then
 * needs no RETURNING, which matters because most writers cannot read the log (RLS), and INSERT …
 * RETURNING needs the select policy too. The id is made here for the same reason.
 */
import { randomUUID } from 'node:crypto';
import { defineEntity, p } from '@mikro-orm/core';
import { TimestampText } from '../../db/base.entity.ts';

/** Who acted: a person, an API client, nobody known (a failed sign-in of an unknown email), a background job. */
export const ACTOR_KINDS = ['user', 'api_client', 'anonymous', 'system'] as const;
export type ActorKind = (typeof ACTOR_KINDS)[number];

const AuditEventSchema = defineEntity({
  name: 'AuditEvent',
  tableName: 'audit_events',
  properties: {
    id: p.uuid().primary().onCreate(() => randomUUID()),
    /** the chain: the publisher, or null for the platform chain */
    publisherId: p.uuid().nullable(),
    /** set by the database: 1, 2, 3 … per chain */
    chainSeq: p.bigint('number').nullable(),
    /** set by the database: the hash of the chain's previous row (null for the first) */
    prevHash: p.string().nullable(),
    /** set by the database: SHA-256 (hex) of the canonical text (migration 0008) */
    hash: p.string().nullable(),
    /** set by the database (clock_timestamp() when appended); text-valued for keyset pages */
    occurredAt: p.type(TimestampText).nullable(),
    actorId: p.uuid().nullable(),
    actorKind: p.enum(ACTOR_KINDS),
    action: p.string(),
    objectType: p.string(),
    objectId: p.uuid().nullable(),
    before: p.json<Record<string, unknown>>().nullable(),
    after: p.json<Record<string, unknown>>().nullable(),
    requestId: p.string().nullable(),
    clientIp: p.string().columnType('inet').nullable(),
    userAgent: p.string().nullable(),
  },
});

export class AuditEvent extends AuditEventSchema.class {}
AuditEventSchema.setClass(AuditEvent);

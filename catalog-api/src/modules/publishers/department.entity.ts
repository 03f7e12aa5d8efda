/**
 * A department of a publisher (`departments`, migration 0006): catalog rows and memberships may be
 * scoped to one. Soft-deleted (`notDeleted` filter); the name is unique per publisher among live
 * departments.
 */
import { defineEntity, p } from '@mikro-orm/core';
import { TimestampText, notDeleted } from '../../db/base.entity.ts';

const DepartmentSchema = defineEntity({
  name: 'Department',
  tableName: 'departments',
  properties: {
    id: p.uuid().primary().defaultRaw('gen_random_uuid()'),
    publisherId: p.uuid(),
    name: p.string(),
    description: p.string().default(''),
    createdAt: p.type(TimestampText).defaultRaw('now()'),
    updatedAt: p.type(TimestampText).defaultRaw('now()'),
    deletedAt: p.datetime().nullable(),
  },
  filters: notDeleted,
});

export class Department extends DepartmentSchema.class {}
DepartmentSchema.setClass(Department);

/**
 * Roles (`roles`, migration 0006): the system roles (no publisher; fixed ids and permission sets
 * from policies/src/permissions.ts) and publishers' custom roles (`role:<publisher>/<name>` in
 * OpenFGA — the name never changes). A role's permissions are {@link RolePermission} rows; the
 * permission catalogue is {@link Permission}.
 */
import { defineEntity, p } from '@mikro-orm/core';
import { TimestampText } from '../../db/base.entity.ts';

const RoleSchema = defineEntity({
  name: 'Role',
  tableName: 'roles',
  properties: {
    id: p.uuid().primary().defaultRaw('gen_random_uuid()'),
    /** null for a system role */
    publisherId: p.uuid().nullable(),
    name: p.string(),
    displayName: p.string().default(''),
    description: p.string().default(''),
    createdAt: p.type(TimestampText).defaultRaw('now()'),
    updatedAt: p.type(TimestampText).defaultRaw('now()'),
  },
});
export class Role extends RoleSchema.class {}
RoleSchema.setClass(Role);

const RolePermissionSchema = defineEntity({
  name: 'RolePermission',
  tableName: 'role_permissions',
  properties: {
    roleId: p.uuid().primary(),
    permission: p.string().primary(),
  },
});
export class RolePermission extends RolePermissionSchema.class {}
RolePermissionSchema.setClass(RolePermission);

const PermissionSchema = defineEntity({
  name: 'Permission',
  tableName: 'permissions',
  properties: {
    name: p.string().primary(),
    description: p.string(),
  },
});
export class Permission extends PermissionSchema.class {}
PermissionSchema.setClass(Permission);

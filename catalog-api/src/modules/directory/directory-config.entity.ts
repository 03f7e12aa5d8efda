/**
 * A publisher's Active Directory connection (`directory_configs`, one per publisher): where the
 * directory is, how to reach it safely, whom to bind as (the secret itself stays outside the
 * database: `bindSecretRef` is `env:NAME` or `file:/path`), which login attribute to search, which
 * email domains it serves, and how its groups map to the publisher's staff roles.
 */
import { defineEntity, p } from '@mikro-orm/core';
import type { StaffRole } from '../users/membership.entity.ts';

/** One group → role mapping; a member of several mapped groups gets the highest role. */
export type GroupRoleMapping = { group_dn: string; role: StaffRole };

export const LOGIN_ATTRIBUTES = ['userPrincipalName', 'sAMAccountName'] as const;
export type LoginAttribute = (typeof LOGIN_ATTRIBUTES)[number];

const DirectoryConfigSchema = defineEntity({
  name: 'DirectoryConfig',
  tableName: 'directory_configs',
  properties: {
    publisherId: p.uuid().primary(),
    /** `ldaps://host:port`, or `ldap://host:port` with `startTls`. */
    url: p.string(),
    startTls: p.boolean().default(false),
    /** PEM file of the CA(s) that sign the directory's certificate; null = the system CAs. */
    caFile: p.string().nullable(),
    /** The name to check the certificate against when it differs from the URL's host. */
    tlsServerName: p.string().nullable(),
    baseDn: p.string(),
    bindDn: p.string(),
    bindSecretRef: p.string(),
    loginAttribute: p.enum(LOGIN_ATTRIBUTES).default('userPrincipalName'),
    emailDomains: p.array(),
    groupRoleMap: p.json<GroupRoleMapping[]>().default('[]'),
    connectTimeoutMs: p.integer().default(2000),
    operationTimeoutMs: p.integer().default(3000),
    enabled: p.boolean().default(true),
    createdAt: p.datetime().defaultRaw('now()'),
    updatedAt: p.datetime().defaultRaw('now()'),
  },
});
export class DirectoryConfig extends DirectoryConfigSchema.class {}
DirectoryConfigSchema.setClass(DirectoryConfig);

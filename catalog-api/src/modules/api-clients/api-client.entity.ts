/**
 * An API client of a publisher (`api_clients`, migration 0006): an OAuth 2.0 confidential client
 * (client credentials grant, RFC 6749 §4.4). Its id is the `users` row (kind `api_client`) it acts
 * as — the `sub` of its access tokens, checked in OpenFGA like any user — and it is a member of its
 * publisher with role `api_user`. The secret (256 random bits) is stored as its SHA-256 digest.
 */
import { defineEntity, p } from '@mikro-orm/core';
import { TimestampText } from '../../db/base.entity.ts';

const ApiClientSchema = defineEntity({
  name: 'ApiClient',
  tableName: 'api_clients',
  properties: {
    id: p.uuid().primary(),
    publisherId: p.uuid(),
    name: p.string(),
    secretHash: p.string(),
    createdAt: p.type(TimestampText).defaultRaw('now()'),
    createdBy: p.uuid().nullable(),
    rotatedAt: p.datetime().nullable(),
    revokedAt: p.datetime().nullable(),
    lastUsedAt: p.datetime().nullable(),
  },
});
export class ApiClient extends ApiClientSchema.class {}
ApiClientSchema.setClass(ApiClient);

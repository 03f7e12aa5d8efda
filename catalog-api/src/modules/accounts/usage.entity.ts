/**
 * Daily usage (`account_usage`, migration 0007): per publisher and UTC day, the allowed API calls
 * the metering counted that day, and the storage bytes and seats last measured that day (null: not
 * measured). Written by the metering roll-up; read here.
 */
import { defineEntity, p } from '@mikro-orm/core';

const AccountUsageSchema = defineEntity({
  name: 'AccountUsage',
  tableName: 'account_usage',
  properties: {
    publisherId: p.uuid().primary(),
    /** the UTC day, `YYYY-MM-DD` */
    day: p.string().columnType('date').primary(),
    apiCalls: p.bigint('number'),
    storageBytes: p.bigint('number').nullable(),
    seatsUsed: p.integer().nullable(),
    updatedAt: p.datetime(),
  },
});

export class AccountUsage extends AccountUsageSchema.class {}
AccountUsageSchema.setClass(AccountUsage);

/** Allowed API calls per API client and UTC day (`api_client_usage`, migration 0007), written by the metering roll-up. */
const ApiClientUsageSchema = defineEntity({
  name: 'ApiClientUsage',
  tableName: 'api_client_usage',
  properties: {
    publisherId: p.uuid().primary(),
    clientId: p.uuid().primary(),
    day: p.string().columnType('date').primary(),
    apiCalls: p.bigint('number'),
    updatedAt: p.datetime(),
  },
});

export class ApiClientUsage extends ApiClientUsageSchema.class {}
ApiClientUsageSchema.setClass(ApiClientUsage);

/** Shared set-up for the policies suites: real OpenFGA and Redis from the environment (defaults per CONTRACTS.md). */
import { randomUUID } from 'node:crypto';
import { fgaClient } from '../../policies/src/model.ts';

export const OPENFGA_API_URL = process.env.OPENFGA_API_URL || 'http://127.0.0.1:8080';
export const REDIS_URL = process.env.REDIS_URL || 'redis://127.0.0.1:6379/0';

/** A store name no other run uses. */
export const uniqueStoreName = (label: string) => `test-policies-${label}-${randomUUID()}`;

/** Delete a store created by a test (ignores a store that is already gone). */
export async function deleteStore(storeId: string | undefined): Promise<void> {
  if (!storeId) return;
  await fgaClient(OPENFGA_API_URL, storeId).deleteStore().catch(() => undefined);
}

/**
 * The typed client of the end-to-end tests: openapi-fetch over the types scripts/openapi.ts
 * generates from the catalog API's OpenAPI document (test/support/catalog-api.d.ts), pointed at a
 * sidecar. A path, parameter or body the document does not describe fails the type-check, and the
 * test command checks the document against the running routes — so the tests cannot drift from
 * the API.
 */
import createClient, { type Client } from 'openapi-fetch';
import type { paths } from './catalog-api.d.ts';

/** A client of the catalog API through `sidecarUrl`, as the holder of `accessToken` (none: anonymous). */
export function apiClient(sidecarUrl: string, accessToken?: string, publisherId?: string): Client<paths> {
  const headers: Record<string, string> = {};
  if (accessToken) headers.authorization = `Bearer ${accessToken}`;
  if (publisherId) headers['x-publisher-id'] = publisherId;
  return createClient<paths>({ baseUrl: sidecarUrl, headers });
}


/**
 * OpenFGA's check caches as this project runs OpenFGA (scripts/services.sh writes the same
 * settings in shell; docker-compose.yml and deploy/k8s set them too; the test and bench helpers
 * start their private OpenFGA servers with {@link OPENFGA_CACHE_ENV}).
 *
 * The check query cache (sub-problem results) and the check iterator cache (datastore reads) cut
 * OpenFGA's CPU per Check several-fold (README "Benchmarks", `npm run bench -- openfga`), but may
 * answer from before a tuple change for up to their TTL. The sidecar keeps that from becoming a
 * stale allow: for `OPENFGA_CACHE_BYPASS_MS` after a decision's epochs change it asks with
 * HIGHER_CONSISTENCY (sidecar/src/pdp/decision-cache.ts). That time must cover the TTL plus the
 * longest a Check can run in OpenFGA (its request timeout): an answer computed from reads made just
 * before the change can be cached at the end of such a Check.
 */

/** TTL of both caches (s). */
export const OPENFGA_CACHE_TTL_S = 10;
/** OpenFGA's request timeout (s), set explicitly so that the bound below holds. */
export const OPENFGA_REQUEST_TIMEOUT_S = 3;
/** The sidecar's default OPENFGA_CACHE_BYPASS_MS: the caches' TTL + the request timeout (ms). */
export const DEFAULT_CACHE_BYPASS_MS = (OPENFGA_CACHE_TTL_S + OPENFGA_REQUEST_TIMEOUT_S) * 1000;

/** The `openfga run` environment that enables the caches (OpenFGA reads its flags from OPENFGA_* variables). */
export const OPENFGA_CACHE_ENV: Readonly<Record<string, string>> = {
  OPENFGA_CHECK_QUERY_CACHE_ENABLED: 'true',
  OPENFGA_CHECK_QUERY_CACHE_TTL: `${OPENFGA_CACHE_TTL_S}s`,
  OPENFGA_CHECK_ITERATOR_CACHE_ENABLED: 'true',
  OPENFGA_CHECK_ITERATOR_CACHE_TTL: `${OPENFGA_CACHE_TTL_S}s`,
  OPENFGA_REQUEST_TIMEOUT: `${OPENFGA_REQUEST_TIMEOUT_S}s`,
};

/**
 * The catalog API's view of its OpenFGA store for the authorization admin endpoints: the store
 * (OPENFGA_STORE_NAME, found by name as the outbox writer finds it), the active model (contract B:
 * `authz:{<storeId>}:active-model` in Redis, else the store's newest model — policies/src/active-model.ts),
 * the content of a model by id (models are immutable, so a bounded in-process cache keeps them), and
 * how OpenFGA failures become problems (unreachable → 503 `pdp-unavailable`, a refused request → 400).
 *
 * Sources: OpenFGA API (https://openfga.dev/api/service) — ListStores, ReadAuthorizationModels
 * (newest first), ReadAuthorizationModel; https://openfga.dev/docs/getting-started/immutable-models.
 */
import type { RedisClient } from '../../../../policies/src/redis.ts';
import { OpenFgaClient, type AuthorizationModel } from '@openfga/sdk';
import { ProblemError, problem } from '../../errors.ts';
import { findStore } from '../../../../policies/src/model.ts';
import { readActiveModel } from '../../../../policies/src/active-model.ts';

/** One OpenFGA call of an admin endpoint gives up after this long (ms); one retry on 429/5xx. */
export const FGA_TIMEOUT_MS = 5000;
/** Models kept in process by id (each is a few tens of KiB of JSON). */
const MODEL_CACHE_MAX = 32;

/** What the admin endpoints need to reach OpenFGA. */
export type AuthzFga = {
  apiUrl: string;
  /**
   * The store id.
   * @throws ProblemError 503 when OpenFGA is unreachable or the store does not exist yet
   */
  storeId(): Promise<string>;
  /** An SDK client for the store (timeout {@link FGA_TIMEOUT_MS}). @throws as {@link AuthzFga.storeId} */
  client(): Promise<OpenFgaClient>;
  /**
   * The active model id: the Redis key of contract B, else (absent, or Redis unreadable) the store's newest model.
   * @throws ProblemError 503 when OpenFGA is unreachable or the store has no model
   */
  activeModelId(): Promise<string>;
  /**
   * A model of the store by id (cached).
   * @throws ProblemError 404 for an id that names no model of the store, 503 when OpenFGA is unreachable
   */
  model(id: string): Promise<AuthorizationModel>;
  redis: RedisClient;
};

/**
 * The problem an OpenFGA (SDK) failure becomes: a request OpenFGA refused (400: validation, an
 * unknown model id, a bad tuple key) → 400 `bad-request` with OpenFGA's message; anything else —
 * connection refused, timeout, 429, 5xx — → 503 `pdp-unavailable` with `Retry-After: 1`.
 * A ProblemError passes through unchanged.
 */
export function fgaProblem(err: unknown): ProblemError {
  if (err instanceof ProblemError) return err;
  const e = err as { name?: string; statusCode?: number; apiErrorMessage?: string; message?: string };
  if (e.name === 'FgaValidationError' || e.name === 'FgaRequiredParamError') return problem.badRequest(e.message ?? 'OpenFGA refused the request.');
  if (typeof e.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 500 && e.statusCode !== 429) {
    return problem.badRequest(`OpenFGA refused the request: ${e.apiErrorMessage ?? e.message ?? 'bad request'}`);
  }
  return new ProblemError(503, 'pdp-unavailable', 'OpenFGA (the authorization service) is unavailable; try again later.', undefined, { 'retry-after': '1' });
}

/**
 * Run `fn` and turn an OpenFGA failure into its problem ({@link fgaProblem}).
 * @throws ProblemError only
 */
export async function withFga<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw fgaProblem(err);
  }
}

/**
 * Build the OpenFGA view for `storeName` at `apiUrl`. Nothing is contacted until first use; the
 * store id is cached once found (a missing store is looked up again next time).
 */
export function createAuthzFga(opts: { apiUrl: string; storeName: string; redis: RedisClient }): AuthzFga {
  let storeId: Promise<string> | null = null;
  const models = new Map<string, AuthorizationModel>();
  const fga = (id: string) => new OpenFgaClient({ apiUrl: opts.apiUrl, storeId: id, baseOptions: { timeout: FGA_TIMEOUT_MS }, retryParams: { maxRetry: 1, minWaitInMs: 50 } });

  const self: AuthzFga = {
    apiUrl: opts.apiUrl,
    redis: opts.redis,
    storeId() {
      storeId ??= withFga(async () => {
        const id = await findStore(opts.apiUrl, opts.storeName);
        if (!id) throw new ProblemError(503, 'pdp-unavailable', `The OpenFGA store "${opts.storeName}" does not exist yet.`, undefined, { 'retry-after': '1' });
        return id;
      });
      storeId.catch(() => (storeId = null));
      return storeId;
    },
    async client() {
      return fga(await self.storeId());
    },
    async activeModelId() {
      const id = await self.storeId();
      let keyed: string | undefined;
      try {
        keyed = await readActiveModel(opts.redis, id);
      } catch {
        keyed = undefined; // Redis unreadable: the newest model is the active one by definition (contract B)
      }
      if (keyed) return keyed;
      const res = await withFga(() => fga(id).readAuthorizationModels({ pageSize: 1 }));
      const newest = res.authorization_models?.[0];
      if (!newest) throw new ProblemError(503, 'pdp-unavailable', 'The OpenFGA store has no authorization model yet.', undefined, { 'retry-after': '1' });
      models.set(newest.id, newest);
      return newest.id;
    },
    async model(modelId) {
      const cached = models.get(modelId);
      if (cached) return cached;
      const c = await self.client();
      let model: AuthorizationModel | undefined;
      try {
        model = (await c.readAuthorizationModel({ authorizationModelId: modelId })).authorization_model;
      } catch (err) {
        const p = fgaProblem(err);
        throw p.status === 400 ? problem.notFound(`No authorization model ${modelId} in this store.`) : p;
      }
      if (!model) throw problem.notFound(`No authorization model ${modelId} in this store.`);
      if (models.size >= MODEL_CACHE_MAX) models.delete(models.keys().next().value!);
      models.set(modelId, model);
      return model;
    },
  };
  return self;
}

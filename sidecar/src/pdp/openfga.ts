/**
 * The policy decision point: OpenFGA Check through the official SDK, pinned to one store and
 * authorization model id (so a newly written model never changes answers under a running sidecar).
 * Per call: `OPENFGA_TIMEOUT_MS` (axios `timeout` via the SDK's `baseOptions`, plus an outer guard
 * of 2×timeout + 100 ms covering the one retry), at most one SDK retry (`maxRetry: 1`).
 * Any error or timeout → {@link PdpUnavailableError}; callers answer 503 and never cache it.
 */
import { OpenFgaClient } from '@openfga/sdk';

/** A relationship question: may `user` `relation` `object`? (`user:<uuid>`, `<type>:<id>`). */
export type CheckQuery = { user: string; relation: string; object: string };

/** The decision point's interface (OpenFGA today; a fake in unit tests). */
export type Pdp = {
  /** @returns whether allowed. @throws PdpUnavailableError when no answer could be obtained. */
  check(q: CheckQuery): Promise<boolean>;
};

/** OpenFGA could not answer (unreachable, timeout, 5xx, or rejected the request). */
export class PdpUnavailableError extends Error {
  constructor(message: string, cause?: unknown) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'PdpUnavailableError';
  }
}

/**
 * Create the OpenFGA PDP.
 * @param opts.apiUrl OpenFGA HTTP API URL; opts.storeId / opts.modelId the pinned store and model;
 *   opts.timeoutMs per-attempt timeout in ms (default 1000).
 */
export function createOpenFgaPdp(opts: { apiUrl: string; storeId: string; modelId: string; timeoutMs?: number }): Pdp {
  const timeoutMs = opts.timeoutMs ?? 1000;
  const client = new OpenFgaClient({
    apiUrl: opts.apiUrl,
    storeId: opts.storeId,
    authorizationModelId: opts.modelId,
    retryParams: { maxRetry: 1, minWaitInMs: 50 },
    baseOptions: { timeout: timeoutMs },
  });
  return {
    async check(q) {
      let timer: NodeJS.Timeout | undefined;
      const guard = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new PdpUnavailableError('OpenFGA check timed out')), 2 * timeoutMs + 100);
      });
      try {
        const res = await Promise.race([
          client.check(q, { authorizationModelId: opts.modelId, retryParams: { maxRetry: 1, minWaitInMs: 50 } }),
          guard,
        ]);
        if (typeof res.allowed !== 'boolean') throw new PdpUnavailableError('OpenFGA check returned no decision');
        return res.allowed;
      } catch (err) {
        if (err instanceof PdpUnavailableError) throw err;
        throw new PdpUnavailableError(`OpenFGA check failed: ${(err as Error).message}`, err);
      } finally {
        clearTimeout(timer);
      }
    },
  };
}

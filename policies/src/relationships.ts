/**
 * Writes and deletes relationship tuples in OpenFGA, then bumps the decision-cache epochs
 * (policies/src/epochs.ts) so no sidecar serves a decision the change invalidated.
 *
 * Sources: OpenFGA Write API (https://openfga.dev/api/service#/Relationship%20Tuples/Write):
 * at most 100 tuple changes per request, `writes.on_duplicate: "ignore"` and
 * `deletes.on_missing: "ignore"` make a request idempotent (OpenFGA ≥ v1.10; the SDK 0.9.7 exposes
 * them as `conflict.onDuplicateWrites` / `conflict.onMissingDeletes`).
 */
import {
  ClientWriteRequestOnDuplicateWrites,
  ClientWriteRequestOnMissingDeletes,
  type OpenFgaClient,
  type TupleKey,
  type TupleKeyWithoutCondition,
} from '@openfga/sdk';
import type { Redis, Cluster } from 'ioredis';
import { epochKeysToBump } from './epochs.ts';
import { bumpEpochs } from './epoch-push.ts';
import type { ModelRef } from './active-model.ts';

/** OpenFGA's limit of tuple changes (writes + deletes) in one Write request. */
export const MAX_TUPLES_PER_WRITE = 100;

export type { TupleKey };

type Change = { op: 'write'; tuple: TupleKey } | { op: 'delete'; tuple: TupleKeyWithoutCondition };

const tupleId = (t: { user: string; relation: string; object: string }) => `${t.object}#${t.relation}@${t.user}`;

/**
 * Applies relationship changes for one OpenFGA store and model.
 * Construct once per process with `{fga, redis, storeId, modelId}`; `redis: null` means no decision
 * cache is deployed (then there is nothing to invalidate). `modelId` is a fixed id or a
 * {@link ModelRef} (the active-model watcher, policies/src/active-model.ts) read at every request,
 * so writes follow a deployed model without a restart.
 */
export class RelationshipWriter {
  readonly fga: OpenFgaClient;
  readonly redis: Redis | Cluster | null;
  readonly storeId: string;
  readonly #model: ModelRef;

  constructor(opts: { fga: OpenFgaClient; redis: Redis | Cluster | null; storeId: string; modelId: string | ModelRef }) {
    this.fga = opts.fga;
    this.redis = opts.redis;
    this.storeId = opts.storeId;
    this.#model = typeof opts.modelId === 'string' ? { current: opts.modelId } : opts.modelId;
  }

  /** The authorization model id writes are validated against now. */
  get modelId(): string {
    return this.#model.current;
  }

  /**
   * Write and delete tuples idempotently, in requests of ≤ 100 changes (each request is atomic in
   * OpenFGA; the whole call is not), then INCR every epoch key from `epochKeysToBump` and publish
   * the new values to the sidecars (`bumpEpochs`, policies/src/epoch-push.ts).
   * Writing an existing tuple or deleting a missing one succeeds (no-op). Duplicates in the input
   * are collapsed. Writes are validated against `modelId`.
   *
   * Epochs are bumped after the writes (a decision computed before a write but cached afterwards
   * lands under the old epoch, which nobody reads any more) — also when a later chunk fails, for
   * the chunks already applied.
   * @throws Error when the same tuple is both written and deleted (order would be ambiguous; send
   *   them in two calls); the SDK's FgaApiError when OpenFGA rejects a request (e.g. a tuple invalid
   *   for the model) or is unreachable; the Redis error when the epochs cannot be bumped. Redis
   *   failure is an error, not a warning: the tuples are in OpenFGA but cached decisions would stay
   *   stale until their TTL, so the caller (the outbox relay) must retry — which is safe, because
   *   the write is idempotent.
   */
  async write({ writes = [], deletes = [] }: { writes?: TupleKey[]; deletes?: TupleKey[] }): Promise<void> {
    const changes = dedupe(writes, deletes);
    const applied: Change[] = [];
    let failure: unknown;
    for (let i = 0; i < changes.length; i += MAX_TUPLES_PER_WRITE) {
      const chunk = changes.slice(i, i + MAX_TUPLES_PER_WRITE);
      try {
        await this.writeChunk(chunk);
      } catch (err) {
        failure = err;
        break;
      }
      applied.push(...chunk);
    }
    await this.bumpEpochs(applied);
    if (failure !== undefined) throw failure;
  }

  private async writeChunk(chunk: Change[]): Promise<void> {
    const writes = chunk.flatMap((c) => (c.op === 'write' ? [c.tuple] : []));
    const deletes = chunk.flatMap((c) => (c.op === 'delete' ? [c.tuple] : []));
    await this.fga.write(
      { writes, deletes },
      {
        storeId: this.storeId,
        authorizationModelId: this.modelId,
        conflict: {
          onDuplicateWrites: ClientWriteRequestOnDuplicateWrites.Ignore,
          onMissingDeletes: ClientWriteRequestOnMissingDeletes.Ignore,
        },
      },
    );
  }

  private async bumpEpochs(applied: Change[]): Promise<void> {
    if (this.redis === null || applied.length === 0) return;
    const keys = epochKeysToBump(
      this.storeId,
      applied.map((c) => c.tuple),
    );
    // INCR + PUBLISH in one script (policies/src/epoch-push.ts): the sidecars' in-process epoch
    // views see the bump at once; the keys of one store share a Redis Cluster slot (epochs.ts).
    await bumpEpochs(this.redis, this.storeId, keys);
  }
}

function dedupe(writes: TupleKey[], deletes: TupleKey[]): Change[] {
  const seen = new Map<string, Change['op']>();
  const out: Change[] = [];
  for (const t of writes) {
    const id = tupleId(t);
    if (seen.has(id)) continue;
    seen.set(id, 'write');
    out.push({ op: 'write', tuple: t });
  }
  for (const t of deletes) {
    const id = tupleId(t);
    const prev = seen.get(id);
    if (prev === 'write') throw new Error(`tuple ${id} is both written and deleted in one call; send them in order, in two calls`);
    if (prev) continue;
    seen.set(id, 'delete');
    out.push({ op: 'delete', tuple: { user: t.user, relation: t.relation, object: t.object } });
  }
  return out;
}

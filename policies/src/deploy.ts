/**
 * Safe deploy of an authorization model (issue 10, "Safe change"): plan the model migration, run
 * a shadow of recent decisions, refuse when decisions change (unless accepted), then write the
 * model, rewrite the tuples and switch every running process to it.
 *
 * Order on the live store, so no process decides with a model whose tuples are missing:
 * write the candidate (the store's newest model) → write the migrated tuples next to the old ones
 * → publish the new active model (policies/src/active-model.ts: key + epoch + pub/sub) → delete
 * the old tuples. Each step is idempotent, so a deploy that failed half-way is finished by running
 * it again: the model is then already the newest ("unchanged") but not yet the active one, so the
 * re-run plans the migration from the active model to it, applies it again and publishes.
 */
import type { RedisClient } from './redis.ts';
import type { AuthorizationModel } from '@openfga/sdk';
import { publishActiveModel, readActiveModel } from './active-model.ts';
import { readRecentDecisions, type DecisionRecord } from './decision-log.ts';
import { type ModelJson, canonicalModel, fgaClient, modelContent, readLatestModel, resolveStore } from './model.ts';
import { type ModelMigration, type ModelMigrationStep, applyModelMigration, loadModelMigrations, planModelMigration } from './model-migrations.ts';
import { DEFAULT_SHADOW_SAMPLE, type ShadowReport, runShadow } from './shadow.ts';

/** The shadow run changed decisions and the deploy was not told to accept them; nothing was written. */
export class ShadowChangesError extends Error {
  readonly report: ShadowReport;
  constructor(report: ShadowReport) {
    super(`the candidate model changes ${report.changed.length} of ${report.replayed} recent decision(s); nothing deployed (accept them with --accept-changes)`);
    this.name = 'ShadowChangesError';
    this.report = report;
  }
}

/**
 * What {@link deployWithShadow} did. `shadow`: the report when a shadow ran; `shadowSkipped` says
 * why none ran: `unchanged` (same content as the newest model), `bootstrap` (the store had no
 * model), `skip-shadow` (asked), `no-decisions` (nothing recorded to replay).
 */
export type DeployResult = {
  storeId: string;
  modelId: string;
  written: boolean;
  baseModelId?: string;
  shadow?: ShadowReport;
  shadowSkipped?: 'unchanged' | 'bootstrap' | 'skip-shadow' | 'no-decisions';
  /** whether `modelId` was published as the active model (contract B) by this call */
  published: boolean;
  migration: { steps: ModelMigrationStep[]; written: number; deleted: number };
};

/**
 * Deploy `model` to the store named `storeName` behind a shadow run.
 * @param opts.redis where the decision log (contract A) is read and the active model published
 *   (contract B); null: no decisions (unless `decisions` is given), nothing published.
 * @param opts.decisions decisions to replay instead of the store's Redis stream (newest first).
 * @param opts.sample most decisions replayed (default 1000); `timeBudgetMs` the shadow's budget.
 * @param opts.acceptChanges deploy even when decisions change.
 * @param opts.skipShadow no shadow run (bootstrap of a platform without traffic; documented in policies/README.md).
 * @param opts.migrations migration files (default: policies/migrations/).
 * @returns see {@link DeployResult}.
 * @throws ModelMigrationPlanError (nothing written) when the model drops a used relation without a
 *   migration step; ShadowChangesError (nothing written) when decisions change and `acceptChanges`
 *   is not true; as `runShadow`, the SDK (OpenFGA refuses the model or a tuple) and Redis otherwise.
 */
export async function deployWithShadow(opts: {
  apiUrl: string;
  storeName: string;
  model: ModelJson;
  redis?: RedisClient | null;
  decisions?: readonly DecisionRecord[];
  sample?: number;
  timeBudgetMs?: number;
  acceptChanges?: boolean;
  skipShadow?: boolean;
  migrations?: readonly ModelMigration[];
}): Promise<DeployResult> {
  const redis = opts.redis ?? null;
  const storeId = await resolveStore(opts.apiUrl, opts.storeName, { create: true });
  const fga = fgaClient(opts.apiUrl, storeId);
  const newest = await readLatestModel(opts.apiUrl, storeId);
  const noMigration = { steps: [], written: 0, deleted: 0 };

  if (!newest) {
    const modelId = (await fga.writeAuthorizationModel(opts.model)).authorization_model_id;
    if (redis) await publishActiveModel(redis, storeId, modelId);
    return { storeId, modelId, written: true, shadowSkipped: 'bootstrap', published: redis !== null, migration: noMigration };
  }
  const activeId = redis ? await readActiveModel(redis, storeId) : undefined;
  let base: AuthorizationModel = newest;
  if (activeId && activeId !== newest.id) {
    base = (await fga.readAuthorizationModel({ authorizationModelId: activeId })).authorization_model ?? newest;
  }
  const migrations = opts.migrations ?? loadModelMigrations();
  if (canonicalModel(newest) === canonicalModel(opts.model)) {
    if (!redis || activeId === newest.id) return { storeId, modelId: newest.id, written: false, baseModelId: base.id, shadowSkipped: 'unchanged', published: false, migration: noMigration };
    // written earlier but not (yet) the active model: finish that deploy
    const steps = base.id === newest.id ? [] : planModelMigration(modelContent(base), opts.model, migrations);
    const migration = await switchTo(fga, steps, { storeId, baseModelId: base.id, candidateModelId: newest.id, redis });
    return { storeId, modelId: newest.id, written: false, baseModelId: base.id, shadowSkipped: 'unchanged', published: true, migration };
  }

  const steps = planModelMigration(modelContent(base), opts.model, migrations);

  let shadow: ShadowReport | undefined;
  let shadowSkipped: DeployResult['shadowSkipped'];
  if (opts.skipShadow) shadowSkipped = 'skip-shadow';
  else {
    const sample = opts.sample ?? DEFAULT_SHADOW_SAMPLE;
    const decisions = opts.decisions ?? (redis ? await readRecentDecisions(redis, storeId, { count: sample }) : []);
    if (decisions.length === 0) shadowSkipped = 'no-decisions';
    else {
      shadow = await runShadow({
        apiUrl: opts.apiUrl,
        storeId,
        storeName: opts.storeName,
        baseModelId: base.id,
        candidate: opts.model,
        decisions,
        migrations,
        sample,
        ...(opts.timeBudgetMs !== undefined ? { timeBudgetMs: opts.timeBudgetMs } : {}),
      });
      if (shadow.changed.length > 0 && !opts.acceptChanges) throw new ShadowChangesError(shadow);
    }
  }

  const modelId = (await fga.writeAuthorizationModel(opts.model)).authorization_model_id;
  const migration = await switchTo(fga, steps, { storeId, baseModelId: base.id, candidateModelId: modelId, redis });
  return {
    storeId,
    modelId,
    written: true,
    baseModelId: base.id,
    ...(shadow ? { shadow } : {}),
    ...(shadowSkipped ? { shadowSkipped } : {}),
    published: redis !== null,
    migration,
  };
}

/** Migrated tuples written → candidate published as the active model → old tuples deleted. */
async function switchTo(
  fga: ReturnType<typeof fgaClient>,
  steps: ModelMigrationStep[],
  ids: { storeId: string; baseModelId: string; candidateModelId: string; redis: RedisClient | null },
): Promise<DeployResult['migration']> {
  const added = await applyModelMigration(fga, steps, { ...ids, deleteOld: false });
  if (ids.redis) await publishActiveModel(ids.redis, ids.storeId, ids.candidateModelId);
  const removed = await applyModelMigration(fga, steps, ids);
  return { steps, written: added.written, deleted: removed.deleted };
}

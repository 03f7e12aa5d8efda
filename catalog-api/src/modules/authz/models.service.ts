/**
 * The store's authorization models for system admins (docs/CONTRACTS.md, "Authorization
 * administration"): the version history (newest first, with the active one — contract B), one
 * model as DSL, the line diff of two (policies/src/diff.ts over policies/src/model.ts `toDsl`, as
 * `npm run policies -- diff` shows it), a shadow run of a candidate (contract D), and the two
 * changes: deploy behind the shadow run (policies/src/deploy.ts, as `npm run policies -- deploy`)
 * and rollback (the old content written again as the newest model, then published as the active
 * one, as `npm run policies -- rollback`).
 *
 * OpenFGA models are immutable and there is no "activate" API: the newest model is the active one
 * (https://openfga.dev/docs/getting-started/immutable-models).
 */
import type { RedisClient } from '../../../../policies/src/redis.ts';
import type { AuthorizationModel } from '@openfga/sdk';
import { ProblemError, problem } from '../../errors.ts';
import { canonicalModel, modelContent, parseModel, toDsl, type ModelJson } from '../../../../policies/src/model.ts';
import { lineDiff } from '../../../../policies/src/diff.ts';
import { ulidTime } from '../../../../policies/src/ulid.ts';
import { publishActiveModel } from '../../../../policies/src/active-model.ts';
import { readRecentDecisions } from '../../../../policies/src/decision-log.ts';
import { DEFAULT_SHADOW_SAMPLE, runShadow, type ShadowReport } from '../../../../policies/src/shadow.ts';
import { deployWithShadow, ShadowChangesError } from '../../../../policies/src/deploy.ts';
import { ModelMigrationPlanError } from '../../../../policies/src/model-migrations.ts';
import { fgaProblem, withFga, type AuthzFga } from './fga.ts';

/** An OpenFGA id: a ULID (https://github.com/ulid/spec), Crockford base32, 26 characters. */
export const ULID_PATTERN = '^[0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{26}$';

/** Longest DSL a deploy or shadow run takes (characters); the model file is ~15 KiB. */
export const MAX_DSL_LENGTH = 256 * 1024;

/** Time budget of a shadow run started by the API, ms (the request must answer well before the client's timeout). */
export const API_SHADOW_BUDGET_MS = 20_000;

/** One model of the history. */
export type ModelSummary = { id: string; created_at: string };

/**
 * Every model of the store, newest first (ReadAuthorizationModels, pages of 50), and the active id.
 * @throws ProblemError 503 when OpenFGA is unreachable
 */
export async function listModels(fga: AuthzFga): Promise<{ active: string; models: ModelSummary[] }> {
  const client = await fga.client();
  const models: ModelSummary[] = [];
  let token: string | undefined;
  do {
    const page = await withFga(() => client.readAuthorizationModels({ pageSize: 50, ...(token ? { continuationToken: token } : {}) }));
    for (const m of page.authorization_models ?? []) models.push({ id: m.id, created_at: ulidTime(m.id).toISOString() });
    token = page.continuation_token || undefined;
  } while (token);
  return { active: await fga.activeModelId(), models };
}

/** The DSL text of a stored model (relations in name order, see `toDsl`). */
export function dslOf(model: AuthorizationModel): string {
  return toDsl(modelContent(model));
}

/**
 * One model as DSL.
 * @throws ProblemError 404 for an id that names no model of the store, 503 when OpenFGA is unreachable
 */
export async function getModel(fga: AuthzFga, id: string): Promise<{ id: string; created_at: string; dsl: string }> {
  const model = await fga.model(id);
  return { id: model.id, created_at: ulidTime(model.id).toISOString(), dsl: dslOf(model) };
}

/**
 * The line diff of two models' DSL (`-` only in `from`, `+` only in `to`, ` ` both).
 * @throws as {@link getModel}
 */
export async function diffModels(fga: AuthzFga, from: string, to: string): Promise<{ from: string; to: string; diff: string }> {
  const [a, b] = await Promise.all([fga.model(from), fga.model(to)]);
  return { from: a.id, to: b.id, diff: lineDiff(dslOf(a), dslOf(b)) };
}

/**
 * Parse a candidate's DSL.
 * @throws ProblemError 400 with the parser's message
 */
export function parseCandidate(dsl: string): ModelJson {
  try {
    return parseModel(dsl, 'dsl');
  } catch (err) {
    throw problem.badRequest((err as Error).message, [{ field: 'body.dsl', reason: 'not a valid OpenFGA model (DSL, schema 1.1)' }]);
  }
}

/** 409 `shadow-changes`: the problem body carries the shadow report (`shadow`), an RFC 9457 extension member. */
export class ShadowChangesProblem extends ProblemError {
  readonly report: ShadowReport;
  constructor(report: ShadowReport) {
    super(409, 'shadow-changes', `The candidate model changes ${report.changed.length} of ${report.replayed} recent decisions; nothing was deployed. Review the report and deploy again with accept_changes: true.`);
    this.report = report;
  }
  override toBody(instance?: string) {
    return { ...super.toBody(instance), shadow: this.report };
  }
}

/**
 * The problem an error of the deploy and shadow libraries becomes: shadow changes → 409 with the
 * report, a missing model migration → 400, an OpenFGA (SDK) failure as {@link fgaProblem};
 * anything else unchanged (the problems plugin maps it).
 */
function deployProblem(err: unknown): unknown {
  if (err instanceof ShadowChangesError) return new ShadowChangesProblem(err.report);
  if (err instanceof ModelMigrationPlanError) return problem.badRequest(err.message, [{ field: 'body.dsl', reason: 'a relation that tuples use is renamed or removed without a model migration (policies/migrations/)' }]);
  if ((err as { name?: string }).name?.startsWith('Fga')) return fgaProblem(err);
  return err;
}

/** An empty report: nothing to replay (no recorded decisions) or nothing changed in the content. */
function emptyReport(baseModelId: string): ShadowReport {
  return { candidate_model_id: '', base_model_id: baseModelId, replayed: 0, changed: [], groups: [] };
}

/**
 * Replay the store's recent decisions (contract A, up to {@link DEFAULT_SHADOW_SAMPLE}) against a
 * candidate (contract D) without changing anything live.
 * @throws ProblemError 400 for invalid DSL or a missing model migration, 503 when OpenFGA or Redis is unavailable
 */
export async function shadowCandidate(fga: AuthzFga, storeName: string, dsl: string): Promise<ShadowReport> {
  const candidate = parseCandidate(dsl);
  const storeId = await fga.storeId();
  const base = await fga.activeModelId();
  const decisions = await readDecisions(fga.redis, storeId, DEFAULT_SHADOW_SAMPLE);
  if (decisions.length === 0) return emptyReport(base);
  try {
    return await runShadow({ apiUrl: fga.apiUrl, storeId, storeName, baseModelId: base, candidate, decisions, timeBudgetMs: API_SHADOW_BUDGET_MS });
  } catch (err) {
    throw deployProblem(err);
  }
}

/**
 * The store's recent decisions, newest first.
 * @throws ProblemError 503 when Redis is unavailable
 */
export async function readDecisions(redis: RedisClient, storeId: string, count: number, filter: { allowed?: boolean; publisher?: string; sinceId?: string } = {}) {
  try {
    return await readRecentDecisions(redis, storeId, { count, ...filter });
  } catch {
    throw new ProblemError(503, 'upstream-unavailable', 'The decision log (Redis) is unavailable; try again later.', undefined, { 'retry-after': '1' });
  }
}

/** What a deploy answers. */
export type DeployAnswer = { model_id: string; written: boolean; previous_model_id: string; shadow: ShadowReport };

/**
 * Deploy a candidate behind a shadow run (policies/src/deploy.ts `deployWithShadow`): refused with
 * 409 when recent decisions change and `acceptChanges` is not true; otherwise written as the
 * store's newest model (unless the newest already has its content), its model migration applied
 * and published as the active model (every sidecar switches within 1 s).
 * @throws ProblemError 400 (invalid DSL, missing migration), 409 `shadow-changes`, 503 (OpenFGA, Redis)
 */
export async function deployCandidate(fga: AuthzFga, storeName: string, dsl: string, acceptChanges: boolean): Promise<DeployAnswer> {
  const model = parseCandidate(dsl);
  const previous = await fga.activeModelId();
  try {
    const r = await deployWithShadow({ apiUrl: fga.apiUrl, storeName, model, redis: fga.redis, acceptChanges, timeBudgetMs: API_SHADOW_BUDGET_MS });
    return { model_id: r.modelId, written: r.written, previous_model_id: previous, shadow: r.shadow ?? emptyReport(r.baseModelId ?? previous) };
  } catch (err) {
    throw deployProblem(err);
  }
}

/**
 * Roll back to model `id`: its content is written again as the newest model (unless the newest
 * already has it) and published as the active model (contract B).
 * @returns the model id now active, the one active before, and whether a model was written
 * @throws ProblemError 404 for an unknown id, 503 when OpenFGA or Redis is unavailable
 */
export async function rollbackTo(fga: AuthzFga, id: string): Promise<{ model_id: string; previous_model_id: string; written: boolean }> {
  const old = await fga.model(id);
  const previous = await fga.activeModelId();
  const client = await fga.client();
  const newest = (await withFga(() => client.readAuthorizationModels({ pageSize: 1 }))).authorization_models?.[0];
  let modelId: string;
  let written = false;
  if (newest && canonicalModel(newest) === canonicalModel(old)) modelId = newest.id;
  else {
    modelId = (await withFga(() => client.writeAuthorizationModel(modelContent(old)))).authorization_model_id;
    written = true;
  }
  try {
    await publishActiveModel(fga.redis, await fga.storeId(), modelId);
  } catch {
    throw new ProblemError(503, 'upstream-unavailable', `Model ${modelId} was written but could not be published as the active model (Redis); roll back again.`, undefined, { 'retry-after': '1' });
  }
  return { model_id: modelId, previous_model_id: previous, written };
}

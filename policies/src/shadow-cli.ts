/**
 * The `shadow` and `deploy` commands of the policies CLI (policies/src/cli.ts): where decisions
 * come from (the store's Redis decision stream, contract A, or a JSONL file), and the printed
 * report. The work itself is policies/src/shadow.ts and policies/src/deploy.ts.
 */
import { readFileSync } from 'node:fs';
import { activeModelKey, withRedis } from './active-model.ts';
import { redisConnectionWithUrl } from './redis.ts';
import { readRecentDecisions, type DecisionRecord } from './decision-log.ts';
import { deployWithShadow, ShadowChangesError } from './deploy.ts';
import { loadModel, resolveStore } from './model.ts';
import { DEFAULT_MIGRATIONS_DIR, loadModelMigrations } from './model-migrations.ts';
import { DEFAULT_SHADOW_SAMPLE, formatShadowReport, runShadow } from './shadow.ts';

/** Options shared by `shadow` and `deploy` (commander's camel-cased flags). */
export type ShadowCliOptions = {
  apiUrl: string;
  storeName: string;
  model: string;
  redisUrl: string;
  sample?: string;
  fromFile?: string;
  migrations?: string;
  budget?: string;
};

/**
 * Decisions of a JSONL file: one contract A record per line (blank lines ignored).
 * @throws Error naming the file and line of a line that is not a record's JSON.
 */
export function readDecisionsFile(file: string): DecisionRecord[] {
  const out: DecisionRecord[] = [];
  readFileSync(file, 'utf8').split('\n').forEach((line, i) => {
    if (!line.trim()) return;
    let r: DecisionRecord;
    try {
      r = JSON.parse(line) as DecisionRecord;
    } catch (err) {
      throw new Error(`${file}:${i + 1}: not JSON: ${(err as Error).message}`, { cause: err });
    }
    if (!r || typeof r.subject !== 'string' || typeof r.relation !== 'string' || typeof r.object !== 'string' || typeof r.rule !== 'string') {
      throw new Error(`${file}:${i + 1}: not a decision record (needs subject, relation, object, rule)`);
    }
    out.push(r);
  });
  return out;
}

/** `--sample N` as a positive integer. @throws Error otherwise. */
function sampleOf(value: string | undefined): number {
  const n = value === undefined ? DEFAULT_SHADOW_SAMPLE : Number(value);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--sample must be a positive integer, got "${value}"`);
  return n;
}

/** `--budget <ms>` as a positive integer, or undefined for the default. @throws Error otherwise. */
function budgetOf(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--budget must be a positive number of ms, got "${value}"`);
  return n;
}

/**
 * `shadow`: replay recent decisions (the Redis stream, or `--from-file`) against the model file and
 * print the report. Writes nothing to the live store.
 */
export async function shadowCommand(opts: ShadowCliOptions, print: (s: string) => void = console.log): Promise<void> {
  const candidate = loadModel(opts.model);
  const sample = sampleOf(opts.sample);
  const storeId = await resolveStore(opts.apiUrl, opts.storeName);
  const decisions = opts.fromFile ? readDecisionsFile(opts.fromFile) : await withRedis(redisConnectionWithUrl(opts.redisUrl), (r) => readRecentDecisions(r, storeId, { count: sample }));
  if (decisions.length === 0) {
    print('no recent decisions to replay');
    return;
  }
  const budget = budgetOf(opts.budget);
  const report = await runShadow({
    apiUrl: opts.apiUrl,
    storeId,
    storeName: opts.storeName,
    candidate,
    decisions,
    sample,
    migrations: loadModelMigrations(opts.migrations ?? DEFAULT_MIGRATIONS_DIR),
    ...(budget ? { timeBudgetMs: budget } : {}),
  });
  print(formatShadowReport(report));
}

/**
 * `deploy`: shadow first (unless `--skip-shadow`), print the report, refuse (throw) when decisions
 * change unless `--accept-changes`, then write the model, apply the model migrations and publish it
 * as the active model (contract B).
 * @throws ShadowChangesError / ModelMigrationPlanError (nothing written), as `deployWithShadow`.
 */
export async function deployCommand(
  opts: ShadowCliOptions & { acceptChanges?: boolean; skipShadow?: boolean },
  print: (s: string) => void = console.log,
): Promise<void> {
  const model = loadModel(opts.model);
  const sample = sampleOf(opts.sample);
  const decisions = opts.fromFile ? readDecisionsFile(opts.fromFile) : undefined;
  const budget = budgetOf(opts.budget);
  const res = await withRedis(redisConnectionWithUrl(opts.redisUrl), (redis) =>
    deployWithShadow({
      apiUrl: opts.apiUrl,
      storeName: opts.storeName,
      model,
      redis,
      sample,
      migrations: loadModelMigrations(opts.migrations ?? DEFAULT_MIGRATIONS_DIR),
      ...(decisions ? { decisions } : {}),
      ...(budget ? { timeBudgetMs: budget } : {}),
      ...(opts.acceptChanges ? { acceptChanges: true } : {}),
      ...(opts.skipShadow ? { skipShadow: true } : {}),
    }).catch((err: unknown) => {
      if (err instanceof ShadowChangesError) print(formatShadowReport(err.report));
      throw err;
    }),
  );
  if (res.shadow) print(formatShadowReport(res.shadow));
  if (res.shadowSkipped === 'no-decisions') print('no recent decisions to replay; deploying without a shadow run');
  if (res.shadowSkipped === 'skip-shadow') print('shadow run skipped (--skip-shadow)');
  for (const s of res.migration.steps) {
    print(`migration ${s.file}: ${s.op === 'rename' ? `${s.type}#${s.from} → ${s.type}#${s.to}` : `remove ${s.type}#${s.relation}`}`);
  }
  if (res.migration.steps.length) print(`migrated tuples: ${res.migration.written} written, ${res.migration.deleted} deleted`);
  print(`store ${opts.storeName} ${res.storeId}`);
  print(`model ${res.modelId} (${res.written ? 'written' : 'unchanged'})`);
  print(res.published ? `active model ${res.modelId} published (${activeModelKey(res.storeId)}): running sidecars switch within 1 s` : `active model ${res.modelId} (already published)`);
}

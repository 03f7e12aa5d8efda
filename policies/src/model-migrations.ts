/**
 * Model migrations: when a new authorization model renames or removes a relation that tuples use,
 * the tuples must be rewritten in the same deploy (policies/migrations/README.md).
 *
 * A migration file `policies/migrations/NNNN-<name>.yaml` holds
 * `{ renames: [{type, from, to}], removes: [{type, relation}] }`. Each entry applies to a deploy when
 * the base (live) model has the relation and the candidate lacks it. {@link planModelMigration}
 * turns the files into steps (or refuses), {@link applyModelMigration} rewrites the store's tuples,
 * and {@link outboxTranslator} maps the relation names of `authz_outbox` rows written by database
 * triggers that still use the old names (catalog-api/src/outbox/relay.ts).
 *
 * Sources: OpenFGA tuples can only be written to directly assignable relations, and a userset
 * user `type:id#relation` names a relation of its type (https://openfga.dev/docs/concepts);
 * Write API validation against `authorization_model_id`, ≤ 100 changes per request
 * (policies/src/relationships.ts).
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parse } from 'yaml';
import { z } from 'zod';
import type { OpenFgaClient, TupleKey } from '@openfga/sdk';
import type { Redis, Cluster } from 'ioredis';
import { POLICIES_DIR, type ModelJson, loadModel } from './model.ts';
import { RelationshipWriter } from './relationships.ts';
import { globalEpochKey } from './epochs.ts';
import { bumpEpochs } from './epoch-push.ts';
import { readAllTuples, typeOf } from './tuples.ts';

/** Default folder of migration files: policies/migrations/. */
export const DEFAULT_MIGRATIONS_DIR = resolve(POLICIES_DIR, 'migrations');

const name = z.string().regex(/^[a-z_][a-z0-9_]*$/, 'an OpenFGA type or relation name');
const fileSchema = z
  .object({
    renames: z.array(z.object({ type: name, from: name, to: name }).strict()).default([]),
    removes: z.array(z.object({ type: name, relation: name }).strict()).default([]),
  })
  .strict();

/** One migration file as loaded. */
export type ModelMigration = {
  file: string; // base name, e.g. 0001-rename-viewer.yaml
  renames: { type: string; from: string; to: string }[];
  removes: { type: string; relation: string }[];
};

/** One tuple rewrite of a deploy. */
export type ModelMigrationStep =
  | { op: 'rename'; type: string; from: string; to: string; file: string }
  | { op: 'remove'; type: string; relation: string; file: string };

/** The candidate drops relations that tuples may use, and no migration step covers them. */
export class ModelMigrationPlanError extends Error {
  /** `type#relation` of every uncovered relation. */
  readonly missing: string[];
  constructor(message: string, missing: string[]) {
    super(message);
    this.name = 'ModelMigrationPlanError';
    this.missing = missing;
  }
}

/**
 * Load every `*.yaml` / `*.yml` file of `dir`, in file-name order (the order steps apply).
 * @returns [] when the folder is missing or has no YAML file.
 * @throws Error naming the file when one is not valid YAML or not `{renames?, removes?}` as above.
 */
export function loadModelMigrations(dir: string = DEFAULT_MIGRATIONS_DIR): ModelMigration[] {
  let files: string[];
  try {
    files = readdirSync(dir).filter((f) => /\.ya?ml$/.test(f)).sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  return files.map((file) => {
    try {
      const parsed = fileSchema.parse(parse(readFileSync(join(dir, file), 'utf8')) ?? {});
      return { file, renames: parsed.renames, removes: parsed.removes };
    } catch (err) {
      throw new Error(`${join(dir, file)}: invalid model migration: ${(err as Error).message}`, { cause: err });
    }
  });
}

type RelationIndex = Map<string, Set<string>>; // type → relation names

function relationIndex(model: ModelJson): RelationIndex {
  return new Map(model.type_definitions.map((t) => [t.type, new Set(Object.keys(t.relations ?? {}))]));
}
const has = (idx: RelationIndex, type: string, relation: string) => idx.get(type)?.has(relation) ?? false;

/**
 * Relations of `model` that tuples can use, as `type#relation`: the directly assignable ones (a
 * tuple's relation) and those named by a type restriction `type#relation` (a userset user).
 */
export function tupleRelations(model: ModelJson): Set<string> {
  const out = new Set<string>();
  for (const t of model.type_definitions) {
    for (const [rel, meta] of Object.entries(t.metadata?.relations ?? {})) {
      const direct = meta.directly_related_user_types ?? [];
      if (direct.length > 0) out.add(`${t.type}#${rel}`);
      for (const ref of direct) if (ref.relation) out.add(`${ref.type}#${ref.relation}`);
    }
  }
  return out;
}

/**
 * Plan the tuple rewrites of a deploy from `base` (the live model) to `candidate`.
 * An entry of a migration file becomes a step when `base` has its relation (`from` / `relation`)
 * and `candidate` lacks it; entries that do not apply are skipped (files stay in the folder).
 * @returns the steps in file order ([] when nothing to rewrite).
 * @throws ModelMigrationPlanError listing every relation that `candidate` drops while tuples can use
 *   it ({@link tupleRelations} of `base`) and no step covers it, or a rename whose `to` the candidate
 *   lacks (the rewritten tuples would be invalid).
 */
export function planModelMigration(base: ModelJson, candidate: ModelJson, migrations: readonly ModelMigration[]): ModelMigrationStep[] {
  const b = relationIndex(base);
  const c = relationIndex(candidate);
  const steps: ModelMigrationStep[] = [];
  const problems: string[] = [];
  const missing: string[] = [];
  for (const m of migrations) {
    for (const r of m.renames) {
      if (!has(b, r.type, r.from) || has(c, r.type, r.from)) continue;
      if (!has(c, r.type, r.to)) {
        problems.push(`${m.file}: renames ${r.type}#${r.from} to ${r.type}#${r.to}, which the candidate model does not define`);
        missing.push(`${r.type}#${r.from}`);
        continue;
      }
      steps.push({ op: 'rename', type: r.type, from: r.from, to: r.to, file: m.file });
    }
    for (const r of m.removes) {
      if (has(b, r.type, r.relation) && !has(c, r.type, r.relation)) steps.push({ op: 'remove', type: r.type, relation: r.relation, file: m.file });
    }
  }
  const covered = new Set(steps.map((s) => `${s.type}#${s.op === 'rename' ? s.from : s.relation}`));
  for (const used of tupleRelations(base)) {
    const [type, relation] = used.split('#') as [string, string];
    if (has(c, type, relation) || covered.has(used) || missing.includes(used)) continue;
    missing.push(used);
    problems.push(`${used}: the candidate model drops it, tuples may use it, and no migration renames or removes it`);
  }
  if (problems.length > 0) {
    throw new ModelMigrationPlanError(
      `model migration needed (add a file to policies/migrations/ with renames/removes):\n  ${problems.join('\n  ')}`,
      missing,
    );
  }
  return steps;
}

/** How one tuple changes under `steps`: the tuple to write (undefined: none) when it changes at all. */
type Rewrite = { write?: TupleKey; delete: TupleKey };

/**
 * The rewrite of one tuple: a step renames the tuple's relation (object of the step's type) and
 * the relation of a userset user (`type:id#from`); a remove deletes such tuples.
 * @returns undefined when no step touches the tuple.
 */
export function rewriteTuple(tuple: TupleKey, steps: readonly ModelMigrationStep[]): Rewrite | undefined {
  let next: TupleKey | undefined = { ...tuple };
  for (const s of steps) {
    const cur: TupleKey | undefined = next;
    if (!cur) break;
    const from = s.op === 'rename' ? s.from : s.relation;
    const userHash: number = cur.user.indexOf('#');
    const userMatches: boolean = userHash > 0 && typeOf(cur.user) === s.type && cur.user.slice(userHash + 1) === from;
    const relMatches: boolean = typeOf(cur.object) === s.type && cur.relation === from;
    if (!userMatches && !relMatches) continue;
    if (s.op === 'remove') next = undefined;
    else next = { ...cur, ...(relMatches ? { relation: s.to } : {}), ...(userMatches ? { user: `${cur.user.slice(0, userHash)}#${s.to}` } : {}) };
  }
  if (next && next.user === tuple.user && next.relation === tuple.relation) return undefined;
  return { ...(next ? { write: next } : {}), delete: tuple };
}

/**
 * Rewrite the store's tuples for `steps`: write each renamed tuple (validated against the candidate
 * model, keeping its condition), then delete the old ones (validated against the base model), in
 * requests of ≤ 100 changes through {@link RelationshipWriter}, which bumps the user/object epochs;
 * the global decision epoch is bumped once at the end. Idempotent: a re-run after a crash reads
 * the tuples again, re-writes (duplicates ignored) and deletes what is left; a finished migration
 * re-run changes nothing.
 * @param opts.deleteOld false: only write the new tuples (the shadow run's copy keeps the old ones
 *   for the base model; a deploy writes first, switches models, then runs again to delete).
 * @returns counts of tuples written and deleted (0/0 when nothing was left to rewrite).
 * @throws the SDK's FgaApiError when OpenFGA rejects a write (e.g. the candidate's relation does not
 *   allow the tuple's user type), or the Redis error of the epoch bump.
 */
export async function applyModelMigration(
  fga: OpenFgaClient,
  steps: readonly ModelMigrationStep[],
  opts: { storeId: string; baseModelId: string; candidateModelId: string; redis?: Redis | Cluster | null; deleteOld?: boolean; tuples?: TupleKey[] },
): Promise<{ written: number; deleted: number }> {
  if (steps.length === 0) return { written: 0, deleted: 0 };
  const tuples = opts.tuples ?? (await readAllTuples(fga, opts.storeId));
  const rewrites = tuples.flatMap((t) => rewriteTuple(t, steps) ?? []);
  const writes = rewrites.flatMap((r) => (r.write ? [r.write] : []));
  const deletes = opts.deleteOld === false ? [] : rewrites.map((r) => r.delete);
  const redis = opts.redis ?? null;
  if (writes.length) await new RelationshipWriter({ fga, redis, storeId: opts.storeId, modelId: opts.candidateModelId }).write({ writes });
  if (deletes.length) await new RelationshipWriter({ fga, redis, storeId: opts.storeId, modelId: opts.baseModelId }).write({ deletes });
  if (redis && writes.length + deletes.length > 0) await bumpEpochs(redis, opts.storeId, [globalEpochKey(opts.storeId)]); // pushed to the sidecars' epoch views
  return { written: writes.length, deleted: deletes.length };
}

/** An outbox tuple as the relay sends it. */
export type OutboxTuple = { user: string; relation: string; object: string };

/**
 * The relay's relation mapping for `model` (the model the relay writes against): the renames and
 * removes whose old relation `model` no longer defines, in file order (so `a→b` then `b→c` maps
 * `a` to `c`). Rows written by database triggers that still use an old name land right until a
 * database migration updates the triggers.
 * @returns a pure function: the translated tuple, or null when the tuple's relation was removed
 *   (the relay drops the row with a log line); the same object when nothing applies.
 */
export function outboxTranslator(migrations: readonly ModelMigration[], model: ModelJson): (t: OutboxTuple) => OutboxTuple | null {
  const idx = relationIndex(model);
  const steps: ModelMigrationStep[] = migrations.flatMap((m) => [
    ...m.renames.filter((r) => !has(idx, r.type, r.from)).map((r) => ({ op: 'rename' as const, ...r, file: m.file })),
    ...m.removes.filter((r) => !has(idx, r.type, r.relation)).map((r) => ({ op: 'remove' as const, ...r, file: m.file })),
  ]);
  return (t) => {
    if (steps.length === 0) return t;
    const r = rewriteTuple(t, steps);
    if (!r) return t;
    return r.write ? { user: r.write.user, relation: r.write.relation, object: r.write.object } : null;
  };
}

/**
 * The relay's default translator: {@link outboxTranslator} of the files in policies/migrations/ for
 * the local model (policies/model.fga — the model the catalog API deploys and writes against).
 * Without migration files it is the identity and reads no model.
 * @throws as {@link loadModelMigrations} and `loadModel` (an invalid file must not be ignored).
 */
export function defaultOutboxTranslator(dir: string = DEFAULT_MIGRATIONS_DIR): (t: OutboxTuple) => OutboxTuple | null {
  const migrations = loadModelMigrations(dir);
  if (migrations.length === 0) return (t) => t;
  return outboxTranslator(migrations, loadModel());
}

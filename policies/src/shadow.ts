/**
 * Shadow runs (contract D, docs/CONTRACTS.md "Shadow runs"): replay recent real decisions
 * (contract A records) against a candidate authorization model before it goes live, and report
 * every decision that would change, grouped by route rule and the subject's role at the publisher.
 *
 * How: a scratch store `shadow-<storeName>-<time>` gets every tuple of the live store (with their
 * conditions), the live (base) model and the candidate; the model migration of the deploy
 * (policies/src/model-migrations.ts) writes the renamed tuples next to the old ones, so both models
 * answer on the same tuples and only the model's change shows (not tuple changes since the
 * decision was made). Each distinct question (subject, relation, object, context) is checked once
 * per model with BatchCheck. The scratch store is always deleted, also on errors.
 *
 * Sources: OpenFGA BatchCheck (https://openfga.dev/api/service#/Relationship%20Queries/BatchCheck,
 * ≤ 50 checks per request by default), Read with no tuple key pages through every tuple
 * (policies/src/tuples.ts), Write ≤ 100 tuples per request (policies/src/relationships.ts).
 */
import { ClientWriteStatus, type ClientBatchCheckItem, type TupleKey } from '@openfga/sdk';
import type { DecisionRecord } from './decision-log.ts';
import { contextHash } from './epochs.ts';
import { type ModelJson, fgaClient, modelContent } from './model.ts';
import { type ModelMigration, type ModelMigrationStep, applyModelMigration, loadModelMigrations, planModelMigration } from './model-migrations.ts';
import { readAllTuples, typeOf } from './tuples.ts';

/** One replayed decision whose answer changes under the candidate. */
export type ShadowChange = { decision: DecisionRecord; before: boolean; after: boolean; role?: string };

/** Changed decisions of one (route rule, role) pair. */
export type ShadowGroup = { rule: string; role: string; allowed_to_denied: number; denied_to_allowed: number };

/**
 * The result of {@link runShadow}. `base_model_id` is the live model's id; `candidate_model_id` is
 * the candidate's id in the (deleted) scratch store — a deploy writes it under a new id.
 * `replayed`: decisions replayed (after the sample cut, without the skipped ones); `checks`: distinct
 * questions asked per model; `skipped`: decisions whose relation the base model does not define
 * (recorded under an older model); `truncated`: the time budget ran out before every decision was
 * replayed (`replayed` counts the finished ones).
 */
export type ShadowReport = {
  candidate_model_id: string;
  base_model_id: string;
  replayed: number;
  changed: ShadowChange[];
  groups: ShadowGroup[];
  checks?: number;
  skipped?: number;
  truncated?: boolean;
};

/** Most decisions replayed by default (`--sample`). */
export const DEFAULT_SHADOW_SAMPLE = 1000;
/** Default time budget of the replay, ms. */
export const DEFAULT_SHADOW_BUDGET_MS = 60_000;
/** Questions per round (one BatchCheck call per model, the SDK splits it into requests of 50). */
const ROUND = 200;

type Question = { key: string; user: string; relation: string; object: string; candidateRelation?: string; context?: Record<string, unknown>; decisions: DecisionRecord[] };

/**
 * Replay `decisions` against the live model and `candidate` in a scratch store with the live
 * store's tuples.
 * @param opts.apiUrl OpenFGA HTTP API; `opts.storeId` the live store.
 * @param opts.storeName names the scratch store (`shadow-<storeName>-<time>`; default the store id).
 * @param opts.baseModelId the live model (default: the store's newest model).
 * @param opts.decisions contract A records, newest first; the first `sample` (default 1000) are used.
 * @param opts.migrations migration files (default: policies/migrations/), planned with
 *   `planModelMigration(base, candidate, …)` and applied to the scratch copy.
 * @param opts.timeBudgetMs budget of the replay in ms (default 60 000); past it the report is `truncated`.
 * @returns the report; `changed` in the order of `decisions`.
 * @throws ModelMigrationPlanError before any store is created when the candidate drops a used
 *   relation without a step; Error when the live store has no model; Error naming the question when
 *   a Check fails (e.g. a malformed object); the SDK's FgaApiError when OpenFGA refuses a model or
 *   a tuple. The scratch store is deleted in every case.
 */
export async function runShadow(opts: {
  apiUrl: string;
  storeId: string;
  candidate: ModelJson;
  decisions: readonly DecisionRecord[];
  migrations?: readonly ModelMigration[];
  storeName?: string;
  baseModelId?: string;
  sample?: number;
  timeBudgetMs?: number;
}): Promise<ShadowReport> {
  const deadline = Date.now() + (opts.timeBudgetMs ?? DEFAULT_SHADOW_BUDGET_MS);
  const live = fgaClient(opts.apiUrl, opts.storeId);
  const base = opts.baseModelId
    ? (await live.readAuthorizationModel({ authorizationModelId: opts.baseModelId })).authorization_model
    : (await live.readAuthorizationModels({ pageSize: 1 })).authorization_models?.[0];
  if (!base) throw new Error(`store ${opts.storeId} has no authorization model to compare with`);
  const baseJson = modelContent(base);
  const steps = planModelMigration(baseJson, opts.candidate, opts.migrations ?? loadModelMigrations());

  const sample = opts.decisions.slice(0, opts.sample ?? DEFAULT_SHADOW_SAMPLE);
  const baseRelations = relationsByType(baseJson);
  const candidateRelations = relationsByType(opts.candidate);
  const { questions, skipped } = toQuestions(sample, baseRelations, candidateRelations, steps);

  const scratchId = (await fgaClient(opts.apiUrl).createStore({ name: scratchStoreName(opts.storeName ?? opts.storeId) })).id;
  const scratch = fgaClient(opts.apiUrl, scratchId);
  try {
    const baseId = (await scratch.writeAuthorizationModel(baseJson)).authorization_model_id;
    const candidateId = (await scratch.writeAuthorizationModel(opts.candidate)).authorization_model_id;
    const tuples = await readAllTuples(live);
    await copyTuples(scratch, baseId, tuples);
    await applyModelMigration(scratch, steps, { storeId: scratchId, baseModelId: baseId, candidateModelId: candidateId, deleteOld: false, tuples });

    const roles = roleIndex(tuples);
    const changed = new Map<DecisionRecord, ShadowChange>();
    let replayed = 0;
    let asked = 0;
    let truncated = false;
    for (let i = 0; i < questions.length; i += ROUND) {
      if (Date.now() > deadline) {
        truncated = true;
        break;
      }
      const round = questions.slice(i, i + ROUND);
      const [before, after] = await Promise.all([
        batchCheck(scratch, baseId, round.map((q) => item(q, q.relation))),
        batchCheck(scratch, candidateId, round.flatMap((q) => (q.candidateRelation ? [item(q, q.candidateRelation)] : []))),
      ]);
      for (const q of round) {
        const b = before.get(q.key)!;
        const a = q.candidateRelation ? after.get(q.key)! : false;
        replayed += q.decisions.length;
        if (a === b) continue;
        for (const d of q.decisions) changed.set(d, { decision: d, before: b, after: a, role: roles.roleOf(d) });
      }
      asked += round.length;
    }
    const ordered = sample.flatMap((d) => changed.get(d) ?? []);
    return {
      candidate_model_id: candidateId,
      base_model_id: base.id,
      replayed,
      changed: ordered,
      groups: groupChanges(ordered),
      checks: asked,
      skipped,
      ...(truncated ? { truncated } : {}),
    };
  } finally {
    await scratch.deleteStore().catch(() => undefined);
  }
}

/**
 * `shadow-<storeName>-<time>` (time as 20261201T174846875Z), within OpenFGA's store-name rule
 * `^[a-zA-Z0-9\s.\-/^_&@]{3,64}$` (CreateStoreRequest): the store name is cut to its first 37
 * characters and other characters become `_`.
 */
export function scratchStoreName(storeName: string, now: Date = new Date()): string {
  return `shadow-${storeName.replace(/[^a-zA-Z0-9.\-/^_&@]/g, '_').slice(0, 37)}-${now.toISOString().replace(/[-:.]/g, '')}`;
}

function relationsByType(model: ModelJson): Map<string, Set<string>> {
  return new Map(model.type_definitions.map((t) => [t.type, new Set(Object.keys(t.relations ?? {}))]));
}

/** Collapse identical questions; map the relation through renames for the candidate. */
function toQuestions(
  decisions: readonly DecisionRecord[],
  base: Map<string, Set<string>>,
  candidate: Map<string, Set<string>>,
  steps: readonly ModelMigrationStep[],
): { questions: Question[]; skipped: number } {
  const byKey = new Map<string, Question>();
  let skipped = 0;
  for (const d of decisions) {
    const type = typeOf(d.object);
    if (!base.get(type)?.has(d.relation)) {
      skipped++;
      continue;
    }
    const key = JSON.stringify([d.subject, d.relation, d.object, contextHash(d.context)]);
    let q = byKey.get(key);
    if (!q) {
      let rel = d.relation;
      for (const s of steps) if (s.op === 'rename' && s.type === type && s.from === rel) rel = s.to;
      const candidateRelation = candidate.get(type)?.has(rel) ? rel : undefined; // absent: denied under the candidate
      q = { key, user: d.subject, relation: d.relation, object: d.object, ...(candidateRelation ? { candidateRelation } : {}), ...(d.context && Object.keys(d.context).length ? { context: d.context } : {}), decisions: [] };
      byKey.set(key, q);
    }
    q.decisions.push(d);
  }
  return { questions: [...byKey.values()], skipped };
}

const item = (q: Question, relation: string): Checked => ({
  key: q.key,
  check: { user: q.user, relation, object: q.object, ...(q.context ? { context: q.context } : {}) },
});

type Checked = { key: string; check: ClientBatchCheckItem };

/**
 * BatchCheck the questions against one model (the SDK splits them into requests of ≤ 50).
 * @returns question key → allowed.
 * @throws Error naming the first failing check (OpenFGA's per-check error or a refused request).
 */
async function batchCheck(fga: ReturnType<typeof fgaClient>, modelId: string, items: Checked[]): Promise<Map<string, boolean>> {
  const out = new Map<string, boolean>();
  if (items.length === 0) return out;
  const checks = items.map((it, i) => ({ ...it.check, correlationId: `q${i}` }));
  const res = await fga.batchCheck({ checks }, { authorizationModelId: modelId, maxBatchSize: 50, maxParallelRequests: 4 }).catch((err: Error) => {
    throw new Error(`shadow: BatchCheck failed: ${err.message}`, { cause: err });
  });
  const byId = new Map(res.result.map((r) => [r.correlationId, r]));
  checks.forEach((c, i) => {
    const r = byId.get(c.correlationId);
    if (!r || r.error) throw new Error(`shadow: Check ${c.user} ${c.relation} ${c.object} failed: ${r?.error?.message ?? 'no answer'}`);
    out.set(items[i]!.key, r.allowed);
  });
  return out;
}

/**
 * Where each subject stands at each publisher, from the copied tuples: the relations `user:<id>`
 * holds directly on `publisher:<p>` (admin, manager, editor, viewer, creator, api_user),
 * `department_<relation>` for a department of the publisher, `role:<name>` for a custom role of
 * it, `system_admin` for a platform admin; `none` when nothing.
 */
function roleIndex(tuples: readonly TupleKey[]) {
  const direct = new Map<string, Set<string>>(); // `${user}|${object}` → relations
  const parent = new Map<string, string>(); // work:1 / department:d / role:r → publisher uuid
  const add = (k: string, rel: string) => (direct.get(k) ?? direct.set(k, new Set()).get(k)!).add(rel);
  for (const t of tuples) {
    if (t.relation === 'publisher' && t.user.startsWith('publisher:')) parent.set(t.object, t.user.slice('publisher:'.length));
    if (t.user.startsWith('user:') && !t.user.includes('#')) add(`${t.user}|${t.object}`, t.relation);
  }
  const publisherOf = (d: DecisionRecord): string | undefined =>
    d.publisher ?? (typeOf(d.object) === 'publisher' ? d.object.slice('publisher:'.length) : parent.get(d.object));
  const byUser = new Map<string, string[]>(); // user → objects it holds something on
  for (const k of direct.keys()) {
    const [user, object] = k.split('|') as [string, string];
    (byUser.get(user) ?? byUser.set(user, []).get(user)!).push(object);
  }
  return {
    roleOf(d: DecisionRecord): string {
      const p = publisherOf(d);
      const roles: string[] = [];
      if (direct.get(`${d.subject}|system:platform`)?.has('admin')) roles.push('system_admin');
      if (p) {
        for (const r of direct.get(`${d.subject}|publisher:${p}`) ?? []) roles.push(r);
        for (const object of byUser.get(d.subject) ?? []) {
          const type = typeOf(object);
          if (type === 'department' && parent.get(object) === p) for (const r of direct.get(`${d.subject}|${object}`)!) roles.push(`department_${r}`);
          if (type === 'role' && (parent.get(object) ?? object.slice(5).split('/')[0]) === p) roles.push(`role:${object.slice(object.indexOf('/') + 1)}`);
        }
      }
      return roles.length ? [...new Set(roles)].sort().join('+') : 'none';
    },
  };
}

/** Count changes per (rule, role), sorted by rule then role. */
export function groupChanges(changes: readonly ShadowChange[]): ShadowGroup[] {
  const groups = new Map<string, ShadowGroup>();
  for (const c of changes) {
    const role = c.role ?? 'none';
    const k = JSON.stringify([c.decision.rule, role]);
    const g = groups.get(k) ?? groups.set(k, { rule: c.decision.rule, role, allowed_to_denied: 0, denied_to_allowed: 0 }).get(k)!;
    if (c.before && !c.after) g.allowed_to_denied++;
    else g.denied_to_allowed++;
  }
  return [...groups.values()].sort((a, b) => a.rule.localeCompare(b.rule) || a.role.localeCompare(b.role));
}

/**
 * A person-readable report: a summary line, then (when decisions change) a table with one row per
 * (rule, role): allowed→denied, denied→allowed and up to two example subject → object pairs.
 */
export function formatShadowReport(r: ShadowReport): string {
  const lines = [
    `shadow run: ${r.replayed} decision(s) replayed${r.checks !== undefined ? ` (${r.checks} distinct check(s))` : ''} against candidate ${r.candidate_model_id} (base ${r.base_model_id})` +
      (r.skipped ? `; ${r.skipped} skipped (relation unknown to the base model)` : '') +
      (r.truncated ? '; TRUNCATED: the time budget ran out' : ''),
  ];
  if (r.changed.length === 0) {
    lines.push('no decision changes');
    return lines.join('\n');
  }
  lines.push(`${r.changed.length} decision(s) change:`);
  const rows = r.groups.map((g) => {
    const examples = r.changed
      .filter((c) => c.decision.rule === g.rule && (c.role ?? 'none') === g.role)
      .map((c) => `${c.decision.subject} ${c.decision.relation} ${c.decision.object}`);
    return [g.rule, g.role, String(g.allowed_to_denied), String(g.denied_to_allowed), [...new Set(examples)].slice(0, 2).join('; ')];
  });
  const header = ['rule', 'role', 'allowed→denied', 'denied→allowed', 'examples'];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
  const fmt = (cells: string[]) => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join('  ').trimEnd();
  lines.push(fmt(header), fmt(widths.map((w) => '-'.repeat(w))), ...rows.map(fmt));
  return lines.join('\n');
}

/**
 * Write `tuples` into the (empty) scratch store: the SDK's non-transactional write, 100 tuples per
 * request, 8 requests at a time — the copy is most of a shadow run's time on a big store, and no
 * atomicity is needed (a failed run deletes the store).
 * @throws Error naming the first tuple OpenFGA refused (and how many were refused).
 */
async function copyTuples(scratch: ReturnType<typeof fgaClient>, modelId: string, tuples: TupleKey[]): Promise<void> {
  if (tuples.length === 0) return;
  const res = await scratch.write({ writes: tuples }, { authorizationModelId: modelId, transaction: { disable: true, maxPerChunk: 100, maxParallelRequests: 8 } });
  const failed = res.writes.filter((w) => w.status === ClientWriteStatus.FAILURE);
  if (failed.length) {
    const t = failed[0]!.tuple_key;
    throw new Error(`copying the store's tuples into the scratch store failed for ${failed.length} tuple(s), e.g. ${t.object}#${t.relation}@${t.user}: ${failed[0]!.err?.message ?? 'refused'}`, { cause: failed[0]!.err });
  }
}

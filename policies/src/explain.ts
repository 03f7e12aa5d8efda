/**
 * Explain and inspect decisions for security admins (docs/CONTRACTS.md; contract C of issue 10):
 * `explain` — allowed or denied, and the path or the reasons, readable by a person; `whoCan` /
 * `whatCan` — ListUsers / StreamedListObjects with truncation reported (policies/src/inspect.ts).
 * Admin tools, not the hot path: they use the OpenFGA SDK directly and pin one authorization model
 * (the given one, else the store's newest — the active one, contract B) for every call.
 * The walk over OpenFGA's Expand trees is in policies/src/explain-tree.ts.
 */
import type { AuthorizationModel } from '@openfga/sdk';
import { fgaClient } from './model.ts';
import { newWalk, check, whyAllowed, whyDenied, type ExplainStep } from './explain-tree.ts';

import { queryContext } from './inspect.ts';

export { whoCan, whatCan, serverLimits, queryContext, type ServerLimits } from './inspect.ts';
export type { ExplainStep };

/** The answer of {@link explain}. */
export type Explanation = {
  allowed: boolean;
  user: string;
  relation: string;
  object: string;
  /** The authorization model that decided. */
  model_id: string;
  /** Allowed: the chain from the user's tuple to the decision (first = the tuple, last = `relation` of `object`). */
  path: ExplainStep[];
  /** Denied: readable reasons (no role, shut out by …, missing link). */
  denied_because?: string[];
  /** Set when a bound (depth, OpenFGA calls) cut the explanation: what was not explained. */
  truncated?: string;
  /** A person-readable multi-line explanation. */
  text: string;
};

/** A malformed question (user, object, relation unknown to the model): the caller's mistake, not OpenFGA's. */
export class ExplainInputError extends Error {
  override name = 'ExplainInputError';
}

const OBJECT_RE = /^[^:#\s]+:[^#\s]+$/;

/**
 * The authorization model to explain with: `modelId` when given, else the store's newest.
 * @throws ExplainInputError when the store has no model or not that one (the SDK's 4xx).
 */
async function loadAuthorizationModel(apiUrl: string, storeId: string, modelId?: string): Promise<AuthorizationModel> {
  const fga = fgaClient(apiUrl, storeId);
  if (modelId) {
    const res = await fga.readAuthorizationModel({ authorizationModelId: modelId }).catch((err: unknown) => {
      throw new ExplainInputError(`authorization model ${modelId} not found in store ${storeId}: ${(err as Error).message}`);
    });
    if (!res.authorization_model) throw new ExplainInputError(`authorization model ${modelId} not found in store ${storeId}`);
    return res.authorization_model;
  }
  const res = await fga.readAuthorizationModels({ pageSize: 1 });
  const latest = res.authorization_models?.[0];
  if (!latest) throw new ExplainInputError(`store ${storeId} has no authorization model`);
  return latest;
}

/**
 * Explain whether `user` holds `relation` on `object`, and why.
 *
 * One Check decides; then, for an allow, the path is built from Expand walked recursively with Check
 * on the candidate branches (policies/src/explain-tree.ts), e.g. `editor of publisher:p (tuple
 * publisher:p#editor@user:u) → works_update_all of publisher:p (editor, not frozen) → can_update of
 * work:w (works_update_all from publisher (publisher:p))`; for a deny, `denied_because` lists the
 * reasons (`no role at publisher:p gives works_update_all (…)`, `shut out: publisher:p is suspended …`).
 * Ids are shown as they are (no database lookups).
 * @param opts.user an OpenFGA user, `user:<uuid>`.
 * @param opts.object `type:id`, e.g. `work:<uuid>`.
 * @param opts.context condition context passed to every Check (e.g. `{client_ip}`; `current_time`
 *   defaults to now, see queryContext in policies/src/inspect.ts).
 * @param opts.maxDepth nested relations followed at most (default 25); opts.maxCalls OpenFGA calls
 *   at most (default 200) — when reached, `truncated` says so and the rest is not explained.
 * @throws ExplainInputError on a malformed user/object, a relation the model lacks, or a condition
 *   parameter missing from the context; the SDK's FgaError when OpenFGA fails.
 */
export async function explain(opts: {
  apiUrl: string; storeId: string; modelId?: string; user: string; relation: string; object: string;
  context?: Record<string, unknown>; maxDepth?: number; maxCalls?: number;
}): Promise<Explanation> {
  const { user, relation, object } = opts;
  if (!OBJECT_RE.test(user) && !/^[^:#\s]+:\*$/.test(user)) throw new ExplainInputError(`user must be "<type>:<id>" (e.g. user:<uuid>), got "${user}"`);
  if (!OBJECT_RE.test(object)) throw new ExplainInputError(`object must be "<type>:<id>" (e.g. work:<uuid>), got "${object}"`);
  const model = await loadAuthorizationModel(opts.apiUrl, opts.storeId, opts.modelId);
  const type = object.slice(0, object.indexOf(':'));
  const typeDef = model.type_definitions.find((t) => t.type === type);
  if (!typeDef) throw new ExplainInputError(`the authorization model ${model.id} has no type "${type}"`);
  if (!typeDef.relations?.[relation]) throw new ExplainInputError(`type "${type}" has no relation "${relation}" in the authorization model ${model.id}`);

  const walk = newWalk({
    fga: fgaClient(opts.apiUrl, opts.storeId), modelId: model.id, model, user,
    context: queryContext(opts.context), maxDepth: opts.maxDepth, maxCalls: opts.maxCalls,
  });
  const base = { user, relation, object, model_id: model.id };
  let result: Omit<Explanation, 'text'>;
  try {
    if (await check(walk, object, relation)) {
      result = { ...base, allowed: true, path: await whyAllowed(walk, object, relation) };
    } else {
      result = { ...base, allowed: false, path: [], denied_because: await whyDenied(walk, object, relation) };
    }
  } catch (err) {
    const message = (err as Error).message ?? '';
    if (/missing context parameters/.test(message)) {
      throw new ExplainInputError(`${message.replace(/^.*?Error failed/, 'failed')}: pass it in the context (e.g. {"client_ip":"203.0.113.7"})`, { cause: err });
    }
    throw err;
  }
  if (walk.cut) result.truncated = walk.cut;
  return { ...result, text: formatExplanation(result) };
}

/**
 * The person-readable text of an explanation:
 * ```
 * ALLOWED: user:u can_update work:w (model 01…)
 *   user:u
 *   → editor of publisher:p (tuple publisher:p#editor@user:u)
 *   → …
 * ```
 * or `DENIED: …` followed by `because:` and one `- reason` line each.
 */
export function formatExplanation(e: Omit<Explanation, 'text'>): string {
  const lines = [`${e.allowed ? 'ALLOWED' : 'DENIED'}: ${e.user} ${e.relation} ${e.object} (model ${e.model_id})`];
  if (e.allowed) {
    lines.push(`  ${e.user}`);
    for (const s of e.path) lines.push(`  → ${s.text}`);
  } else {
    lines.push('because:');
    for (const r of e.denied_because ?? []) lines.push(`  - ${r}`);
    if (!e.denied_because?.length) lines.push('  - nothing in the model gives it');
  }
  if (e.truncated) lines.push(`(${e.truncated})`);
  return lines.join('\n');
}

/**
 * The walker behind `explain` (policies/src/explain.ts): why a user holds — or does not hold — a
 * relation on an object, read from OpenFGA's userset trees.
 *
 * Expand (https://openfga.dev/api/service#/Relationship%20Queries/Expand) answers one level of a
 * relation's rewrite per call: `leaf.users` (direct tuples: users, `type:*` wildcards, usersets such
 * as `department:d#admin`), `leaf.computed` (another relation), `leaf.tupleToUserset` (the tupleset
 * objects' relation), and `union` / `intersection` / `difference` nodes. The walker follows it with
 * Check (https://openfga.dev/api/service#/Relationship%20Queries/Check) on the candidate children so
 * that only branches holding for the user are explained: union — the first child that holds;
 * intersection — all of them; difference — the base holds and the subtraction does not;
 * tupleToUserset — the tupleset object whose relation holds; a direct leaf — the tuple naming the
 * user, a wildcard, or a userset that is then explained in turn. Read
 * (https://openfga.dev/api/service#/Relationship%20Tuples/Read) tells whether a direct tuple carries
 * a condition: Expand ignores conditions, so such a tuple only counts as "unknown" and the parent's
 * Check result decides (three-valued logic).
 *
 * The authorization model read once beside the trees names the pieces (the same shape as the tree:
 * `this` ↔ users leaf, `computedUserset` ↔ computed, `tupleToUserset` ↔ tupleToUserset …).
 * Bounds: depth of nested relations (default 25, OpenFGA's own resolve-node-limit) and OpenFGA
 * calls (default 200); once reached, what is left is reported as not explained.
 */
import { ConsistencyPreference, type AuthorizationModel, type Node, type OpenFgaClient, type Userset } from '@openfga/sdk';

/** One link of an explanation: `relation` of `object` holds, `via` how (a tuple or the rewrite). */
export type ExplainStep = { object: string; relation: string; via: string; text: string };

/** Three-valued truth: undefined when only a conditional tuple could decide (Expand ignores conditions). */
type Holds = boolean | undefined;

/** Raised inside the walk when a bound is reached; caught at the relation that was being explained. */
class BoundReached extends Error {}

/** The state of one explanation: the client, the model, the user, caches and bounds. */
export type Walk = {
  fga: OpenFgaClient;
  modelId: string;
  model: AuthorizationModel;
  user: string;
  context?: Record<string, unknown>;
  maxDepth: number;
  maxCalls: number;
  /** OpenFGA calls made so far (Check, Expand, Read). */
  calls: number;
  /** Set to a readable message when a bound cut the explanation. */
  cut?: string;
  checks: Map<string, Promise<boolean>>;
  expands: Map<string, Promise<Node>>;
  conditions: Map<string, Promise<string | undefined | null>>;
};

/**
 * A new walk for `user`.
 * @param opts.maxDepth nested relations followed at most (default 25).
 * @param opts.maxCalls OpenFGA requests at most (default 200).
 */
export function newWalk(opts: {
  fga: OpenFgaClient; modelId: string; model: AuthorizationModel; user: string;
  context?: Record<string, unknown>; maxDepth?: number; maxCalls?: number;
}): Walk {
  return {
    fga: opts.fga, modelId: opts.modelId, model: opts.model, user: opts.user, context: opts.context,
    maxDepth: opts.maxDepth ?? 25, maxCalls: opts.maxCalls ?? 200, calls: 0,
    checks: new Map(), expands: new Map(), conditions: new Map(),
  };
}

const OPTS = (w: Walk) => ({ authorizationModelId: w.modelId, consistency: ConsistencyPreference.HigherConsistency });

function spend(w: Walk): void {
  if (w.calls >= w.maxCalls) {
    w.cut ??= `explanation cut: the bound of ${w.maxCalls} OpenFGA calls was reached`;
    throw new BoundReached(w.cut);
  }
  w.calls += 1;
}

/** `type:id#relation` → [object, relation]; `type:id` → [object, undefined]. */
function splitUserset(s: string): [string, string | undefined] {
  const i = s.indexOf('#');
  return i < 0 ? [s, undefined] : [s.slice(0, i), s.slice(i + 1)];
}

const typeOf = (object: string) => object.slice(0, object.indexOf(':'));

/** Check(user, relation, object) with the walk's context, memoised. */
export function check(w: Walk, object: string, relation: string): Promise<boolean> {
  const key = `${object}#${relation}`;
  let p = w.checks.get(key);
  if (!p) {
    spend(w);
    p = w.fga
      .check({ user: w.user, relation, object, ...(w.context ? { context: w.context } : {}) }, OPTS(w))
      .then((r) => r.allowed === true);
    w.checks.set(key, p);
  }
  return p;
}

function expand(w: Walk, object: string, relation: string): Promise<Node> {
  const key = `${object}#${relation}`;
  let p = w.expands.get(key);
  if (!p) {
    spend(w);
    p = w.fga.expand({ relation, object }, OPTS(w)).then((r) => {
      if (!r.tree?.root) throw new Error(`Expand ${key}: empty tree`);
      return r.tree.root;
    });
    w.expands.set(key, p);
  }
  return p;
}

/** The condition name on tuple object#relation@user (null: no condition; undefined: no such tuple). */
function tupleCondition(w: Walk, object: string, relation: string, user: string): Promise<string | undefined | null> {
  const key = `${object}#${relation}@${user}`;
  let p = w.conditions.get(key);
  if (!p) {
    spend(w);
    p = w.fga.read({ user, relation, object }, { consistency: ConsistencyPreference.HigherConsistency }).then((r) => {
      const t = r.tuples?.[0];
      if (!t) return undefined;
      return t.key.condition?.name || null;
    });
    w.conditions.set(key, p);
  }
  return p;
}

/** The model's rewrite of `relation` on the type of `object`. @throws Error when the model has no such relation. */
function rewriteOf(w: Walk, object: string, relation: string): Userset {
  const type = typeOf(object);
  const rewrite = w.model.type_definitions.find((t) => t.type === type)?.relations?.[relation];
  if (!rewrite) throw new Error(`the authorization model ${w.modelId} has no relation "${relation}" on type "${type}"`);
  return rewrite;
}

/**
 * A short text of a rewrite as the DSL writes it, e.g. `(grant_works_update or editor) but not frozen`,
 * `works_update_all from publisher`, `direct tuple`.
 */
export function describeRewrite(u: Userset, nested = false): string {
  const wrap = (s: string) => (nested ? `(${s})` : s);
  if (u.this) return 'direct tuple';
  if (u.computedUserset) return u.computedUserset.relation ?? '?';
  if (u.tupleToUserset) return `${u.tupleToUserset.computedUserset.relation} from ${u.tupleToUserset.tupleset.relation}`;
  if (u.union) return wrap(u.union.child.map((c) => describeRewrite(c, true)).join(' or '));
  if (u.intersection) return wrap(u.intersection.child.map((c) => describeRewrite(c, true)).join(' and '));
  if (u.difference) return wrap(`${describeRewrite(u.difference.base, true)} but not ${describeRewrite(u.difference.subtract, true)}`);
  return '?';
}

const childrenOf = (node: Node) => node.union?.nodes ?? node.intersection?.nodes ?? [];
const rewriteChildren = (u: Userset) => u.union?.child ?? u.intersection?.child ?? [];

/** Candidates of a direct leaf for the user: [the tuple's user, its userset to explain next (if any)]. */
type Candidate = { tupleUser: string; userset?: [string, string] };

async function directCandidates(w: Walk, node: Node): Promise<Candidate[]> {
  const listed = node.leaf?.users?.users ?? [];
  const out: Candidate[] = [];
  const wildcard = `${typeOf(w.user)}:*`;
  for (const u of listed) {
    if (u === w.user || u === wildcard) out.push({ tupleUser: u });
  }
  for (const u of listed) {
    const [obj, rel] = splitUserset(u);
    if (rel && (await check(w, obj, rel))) out.push({ tupleUser: u, userset: [obj, rel] });
  }
  return out;
}

/** Whether the tuple object#relation@c holds outright (true), or only under a condition (undefined). */
async function candidateHolds(w: Walk, object: string, relation: string, c: Candidate): Promise<Holds> {
  return (await tupleCondition(w, object, relation, c.tupleUser)) ? undefined : true;
}

/** Truth of one node of `object#relation`'s tree for the walk's user. */
async function holds(w: Walk, object: string, relation: string, node: Node): Promise<Holds> {
  if (node.leaf?.users) {
    let result: Holds = false;
    for (const c of await directCandidates(w, node)) {
      const h = await candidateHolds(w, object, relation, c);
      if (h) return true;
      result = undefined;
    }
    return result;
  }
  if (node.leaf?.computed) {
    const [o, r] = splitUserset(node.leaf.computed.userset);
    return check(w, o, r!);
  }
  if (node.leaf?.tupleToUserset) {
    for (const c of node.leaf.tupleToUserset.computed) {
      const [o, r] = splitUserset(c.userset);
      if (await check(w, o, r!)) return true;
    }
    return false;
  }
  if (node.union) {
    let result: Holds = false;
    for (const c of node.union.nodes) {
      const h = await holds(w, object, relation, c);
      if (h) return true;
      if (h === undefined) result = undefined;
    }
    return result;
  }
  if (node.intersection) {
    let result: Holds = true;
    for (const c of node.intersection.nodes) {
      const h = await holds(w, object, relation, c);
      if (h === false) return false;
      if (h === undefined) result = undefined;
    }
    return result;
  }
  if (node.difference) {
    const base = await holds(w, object, relation, node.difference.base);
    if (base === false) return false;
    const sub = await holds(w, object, relation, node.difference.subtract);
    if (sub === true) return false;
    return base === true && sub === false ? true : undefined;
  }
  return false;
}

type Proof = { steps: ExplainStep[]; via: string };

const tupleText = (object: string, relation: string, user: string) => `${object}#${relation}@${user}`;

/** Explain a node known to hold (its parent's Check said so). */
async function prove(w: Walk, object: string, relation: string, node: Node, rewrite: Userset, depth: number, stack: Set<string>): Promise<Proof> {
  if (node.leaf?.users) {
    const candidates = await directCandidates(w, node);
    let pick: Candidate | undefined;
    let condition: string | undefined;
    for (const c of candidates) {
      if (await candidateHolds(w, object, relation, c)) { pick = c; break; }
    }
    if (!pick && candidates[0]) {
      pick = candidates[0];
      condition = (await tupleCondition(w, object, relation, pick.tupleUser)) ?? undefined;
    }
    if (!pick) return { steps: [], via: 'direct tuple (not found by Expand)' };
    const cond = condition ? `, condition ${condition} holds for the context` : '';
    const via = `${pick.tupleUser.endsWith(':*') ? 'wildcard tuple' : 'tuple'} ${tupleText(object, relation, pick.tupleUser)}${cond}`;
    const steps = pick.userset ? await whyAllowed(w, pick.userset[0], pick.userset[1], depth + 1, stack) : [];
    return { steps, via };
  }
  if (node.leaf?.computed) {
    const [o, r] = splitUserset(node.leaf.computed.userset);
    return { steps: await whyAllowed(w, o, r!, depth + 1, stack), via: o === object ? r! : `${o}#${r}` };
  }
  if (node.leaf?.tupleToUserset) {
    const ttu = node.leaf.tupleToUserset;
    const tuplesetRel = splitUserset(ttu.tupleset)[1] ?? rewrite.tupleToUserset?.tupleset.relation ?? '?';
    for (const c of ttu.computed) {
      const [o, r] = splitUserset(c.userset);
      if (await check(w, o, r!)) {
        return { steps: await whyAllowed(w, o, r!, depth + 1, stack), via: `${r} from ${tuplesetRel} (${o})` };
      }
    }
    return { steps: [], via: `${describeRewrite(rewrite)} (no tupleset object holds it)` };
  }
  if (node.union) {
    const kids = node.union.nodes;
    const rw = rewriteChildren(rewrite);
    let firstUnknown = -1;
    for (let i = 0; i < kids.length; i++) {
      const h = await holds(w, object, relation, kids[i]!);
      if (h) return prove(w, object, relation, kids[i]!, rw[i] ?? {}, depth, stack);
      if (h === undefined && firstUnknown < 0) firstUnknown = i;
    }
    if (firstUnknown >= 0) return prove(w, object, relation, kids[firstUnknown]!, rw[firstUnknown] ?? {}, depth, stack);
    return { steps: [], via: `${describeRewrite(rewrite)} (no branch holds now)` };
  }
  if (node.intersection) {
    const rw = rewriteChildren(rewrite);
    const proofs: Proof[] = [];
    for (let i = 0; i < node.intersection.nodes.length; i++) {
      proofs.push(await prove(w, object, relation, node.intersection.nodes[i]!, rw[i] ?? {}, depth, stack));
    }
    return { steps: proofs.flatMap((p) => p.steps), via: proofs.map((p) => p.via).join(' and ') };
  }
  if (node.difference) {
    const base = await prove(w, object, relation, node.difference.base, rewrite.difference?.base ?? {}, depth, stack);
    const sub = rewrite.difference ? describeRewrite(rewrite.difference.subtract, true) : '?';
    return { steps: base.steps, via: `${base.via}, not ${sub}` };
  }
  return { steps: [], via: '?' };
}

/**
 * The chain of steps by which the walk's user holds `relation` on `object` (the caller knows it
 * holds): the steps of what it rests on first, then the step of `object#relation` itself.
 * A bound reached inside returns what is explained with a last step saying so.
 */
export async function whyAllowed(w: Walk, object: string, relation: string, depth = 0, stack = new Set<string>()): Promise<ExplainStep[]> {
  const key = `${object}#${relation}`;
  const cutStep = (why: string): ExplainStep[] => [{ object, relation, via: why, text: `${relation} of ${object} (not explained further: ${why})` }];
  if (depth > w.maxDepth) {
    w.cut ??= `explanation cut: the depth bound of ${w.maxDepth} nested relations was reached`;
    return cutStep(w.cut);
  }
  if (stack.has(key)) return cutStep('cycle in the model');
  try {
    const node = await expand(w, object, relation);
    const inner = new Set(stack).add(key);
    const proof = await prove(w, object, relation, node, rewriteOf(w, object, relation), depth, inner);
    const step: ExplainStep = { object, relation, via: proof.via, text: `${relation} of ${object} (${proof.via})` };
    return [...proof.steps, step];
  } catch (err) {
    if (err instanceof BoundReached) return cutStep(err.message);
    throw err;
  }
}

/** Whether the tree of a relation itself (one Expand level) has a difference or intersection. */
function hasExclusion(node: Node): boolean {
  if (node.difference || node.intersection) return true;
  return childrenOf(node).some(hasExclusion);
}

/** Whether a users leaf of this level names the user or its wildcard (a tuple exists, e.g. one whose condition fails). */
function namesUser(w: Walk, node: Node): boolean {
  const listed = node.leaf?.users?.users;
  if (listed) return listed.includes(w.user) || listed.includes(`${typeOf(w.user)}:*`);
  return childrenOf(node).some((c) => namesUser(w, c));
}

/**
 * A computed/tupleToUserset target worth explaining when it fails: it can exclude (`… but not
 * frozen`), or a tuple names the user there and yet it fails (a condition that does not hold).
 */
async function worthFollowing(w: Walk, object: string, relation: string): Promise<boolean> {
  const node = await expand(w, object, relation);
  return hasExclusion(node) || namesUser(w, node);
}

function isLeaf(node: Node): boolean {
  return !!node.leaf;
}

/** Reasons a node known not to hold fails. */
async function refute(w: Walk, object: string, relation: string, node: Node, rewrite: Userset, depth: number, stack: Set<string>): Promise<string[]> {
  if (node.leaf?.users) {
    const candidates = await directCandidates(w, node);
    if (candidates.length) {
      const c = candidates[0]!;
      const cond = await tupleCondition(w, object, relation, c.tupleUser);
      return [`tuple ${tupleText(object, relation, c.tupleUser)} has condition ${cond ?? '?'}, which does not hold for the context`];
    }
    return [`${w.user} is not ${relation} of ${object} (no tuple)`];
  }
  if (node.leaf?.computed) {
    const [o, r] = splitUserset(node.leaf.computed.userset);
    if (await worthFollowing(w, o, r!)) return whyDenied(w, o, r!, depth + 1, stack);
    return [`${w.user} is not ${r} of ${o}`];
  }
  if (node.leaf?.tupleToUserset) {
    const ttu = node.leaf.tupleToUserset;
    const tuplesetRel = splitUserset(ttu.tupleset)[1] ?? '?';
    if (!ttu.computed.length) return [`${object} has no ${tuplesetRel} (no ${tuplesetRel} tuple), so nothing comes from ${describeRewrite(rewrite)}`];
    const out: string[] = [];
    for (const c of ttu.computed) {
      const [o, r] = splitUserset(c.userset);
      if (await worthFollowing(w, o, r!)) out.push(...(await whyDenied(w, o, r!, depth + 1, stack)));
      else out.push(`${w.user} is not ${r} of ${o}`);
    }
    return out;
  }
  if (node.union) {
    const rw = rewriteChildren(rewrite);
    const simple: string[] = [];
    const out: string[] = [];
    for (let i = 0; i < node.union.nodes.length; i++) {
      const kid = node.union.nodes[i]!;
      const kidRw = rw[i] ?? {};
      let follow = !isLeaf(kid);
      if (!follow && kid.leaf?.computed) follow = await worthFollowing(w, ...(splitUserset(kid.leaf.computed.userset) as [string, string]));
      if (!follow && kid.leaf?.tupleToUserset) {
        const ttu = kid.leaf.tupleToUserset;
        follow = ttu.computed.length === 0;
        for (const c of ttu.computed) if (!follow) follow = await worthFollowing(w, ...(splitUserset(c.userset) as [string, string]));
      }
      if (!follow && kid.leaf?.users && (await directCandidates(w, kid)).length) follow = true;
      if (follow) out.push(...(await refute(w, object, relation, kid, kidRw, depth, stack)));
      else simple.push(describeRewrite(kidRw));
    }
    if (simple.length) out.unshift(`no role at ${object} gives ${relation} (${w.user} has none of: ${simple.join(', ')})`);
    return out;
  }
  if (node.intersection) {
    const rw = rewriteChildren(rewrite);
    for (let i = 0; i < node.intersection.nodes.length; i++) {
      const kid = node.intersection.nodes[i]!;
      if ((await holds(w, object, relation, kid)) === false) return refute(w, object, relation, kid, rw[i] ?? {}, depth, stack);
    }
    return [`${describeRewrite(rewrite)} on ${object} does not hold (a conditional tuple fails for the context)`];
  }
  if (node.difference) {
    const diff = rewrite.difference;
    const base = await holds(w, object, relation, node.difference.base);
    if (base !== true) return refute(w, object, relation, node.difference.base, diff?.base ?? {}, depth, stack);
    const proof = await prove(w, object, relation, node.difference.subtract, diff?.subtract ?? {}, depth, stack);
    return [shutOutText(w, object, relation, describeRewrite(diff?.subtract ?? {}), proof)];
  }
  return [`${relation} of ${object} does not hold`];
}

/** "shut out: publisher:p is suspended (tuple …) → shut_out of publisher:p → frozen of publisher:p, which takes away …". */
function shutOutText(w: Walk, object: string, relation: string, subtract: string, proof: Proof): string {
  const [first, ...rest] = proof.steps;
  let head: string;
  if (!first) head = `${subtract} of ${object} holds (${proof.via})`;
  else if (first.via.startsWith('wildcard tuple')) head = `${first.object} is ${first.relation} (${first.via})`;
  else head = `${w.user} is ${first.relation} of ${first.object} (${first.via})`;
  const chain = rest.map((s) => `${s.relation} of ${s.object}`);
  if (!first) chain.length = 0;
  return `shut out: ${[head, ...chain].join(' → ')}, which takes away ${relation} of ${object} (… but not ${subtract})`;
}

/**
 * Readable reasons the walk's user does not hold `relation` on `object` (the caller knows it
 * does not): the missing roles, the exclusions that apply (shut out, frozen), absent links.
 */
export async function whyDenied(w: Walk, object: string, relation: string, depth = 0, stack = new Set<string>()): Promise<string[]> {
  const key = `${object}#${relation}`;
  if (depth > w.maxDepth) {
    w.cut ??= `explanation cut: the depth bound of ${w.maxDepth} nested relations was reached`;
    return [`${relation} of ${object}: not explained further (${w.cut})`];
  }
  if (stack.has(key)) return [];
  try {
    const node = await expand(w, object, relation);
    return await refute(w, object, relation, node, rewriteOf(w, object, relation), depth, new Set(stack).add(key));
  } catch (err) {
    if (err instanceof BoundReached) return [`${relation} of ${object}: not explained further (${err.message})`];
    throw err;
  }
}

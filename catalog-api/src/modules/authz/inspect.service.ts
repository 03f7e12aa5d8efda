/**
 * Explain and inspect decisions through the API (issue 10 §1; contract C, policies/src/explain.ts):
 * `explain` (allowed or denied, and the path or the reasons), `who-can` (OpenFGA ListUsers) and
 * `what-can` (StreamedListObjects, truncation reported), each with the active model and the
 * condition context every Check of the model needs (policies/src/conditions.ts). What a publisher
 * admin gets back is narrowed to their publisher here: its members (who-can), and its objects
 * (what-can) — catalog rows as RLS shows them in the publisher context.
 */
import { explain, whatCan, whoCan, ExplainInputError, type Explanation } from '../../../../policies/src/explain.ts';
import { checkContext } from '../../../../policies/src/conditions.ts';
import { problem } from '../../errors.ts';
import type { RequestTx } from '../../db/context.ts';
import type { Orm } from '../../db/orm.ts';
import { isUuid } from '../common/http.ts';
import { usersById, type UserSummary } from './access.service.ts';
import { withFga, type AuthzFga } from './fga.ts';
import type { Reach } from './scope.ts';

/** Most objects one what-can returns (more → `truncated`). */
export const WHAT_CAN_MAX_RESULTS = 1000;

/** The condition context of the checks: `at` (default now) and `client_ip` (default unknown: outside every office network). */
export function contextOf(q: { at?: string; client_ip?: string }): Record<string, unknown> {
  return { ...checkContext(q.at ? Date.parse(q.at) : Date.now(), q.client_ip) };
}

/** The library's input errors are the caller's (400); the SDK's as every OpenFGA call ({@link withFga}). */
async function run<T>(fn: () => Promise<T>): Promise<T> {
  return withFga(async () => {
    try {
      return await fn();
    } catch (err) {
      if (err instanceof ExplainInputError) throw problem.badRequest(err.message);
      throw err;
    }
  });
}

/**
 * Explain `user:<userId>` `relation` `object` with the active model.
 * @throws ProblemError 400 (the library refuses the question), 503 (OpenFGA)
 */
export async function explainDecision(fga: AuthzFga, q: { userId: string; relation: string; object: string; context: Record<string, unknown> }): Promise<Explanation> {
  const [storeId, modelId] = [await fga.storeId(), await fga.activeModelId()];
  return run(() => explain({ apiUrl: fga.apiUrl, storeId, modelId, user: `user:${q.userId}`, relation: q.relation, object: q.object, context: q.context }));
}

/** What who-can answers. */
export type WhoCanAnswer = { users: UserSummary[]; usersets: string[]; truncated: boolean };

/**
 * Who holds `relation` on `object` (users of type `user`), with their emails and names; a
 * publisher admin sees only their publisher's members (the caller filters usersets with
 * {@link usersetInReach}).
 * @throws ProblemError 400, 503 (OpenFGA)
 */
export async function whoCanOn(
  fga: AuthzFga,
  authOrm: Orm,
  reach: Reach,
  q: { relation: string; object: string; context: Record<string, unknown> },
): Promise<WhoCanAnswer> {
  const [storeId, modelId] = [await fga.storeId(), await fga.activeModelId()];
  const r = await run(() => whoCan({ apiUrl: fga.apiUrl, storeId, modelId, relation: q.relation, object: q.object, context: q.context }));
  const ids = r.users.map((u) => u.slice(u.indexOf(':') + 1)).filter(isUuid);
  const users = await usersById(authOrm, reach, ids);
  return { users, usersets: r.usersets, truncated: r.truncated };
}

/**
 * The objects of `type` that `user:<userId>` holds `relation` on (at most {@link WHAT_CAN_MAX_RESULTS}).
 * @throws ProblemError 400, 503 (OpenFGA)
 */
export async function whatCanOf(fga: AuthzFga, q: { userId: string; relation: string; type: string; context: Record<string, unknown> }): Promise<{ objects: string[]; truncated: boolean }> {
  const [storeId, modelId] = [await fga.storeId(), await fga.activeModelId()];
  return run(() => whatCan({ apiUrl: fga.apiUrl, storeId, modelId, user: `user:${q.userId}`, relation: q.relation, type: q.type, context: q.context, maxResults: WHAT_CAN_MAX_RESULTS }));
}

const ROW_TABLES: Record<string, string> = { work: 'works', songwriter: 'songwriters', recording: 'recordings', department: 'departments' };

/**
 * The objects (`type:id`, one type) that are in a publisher admin's reach, in the publisher
 * context `tx` (RLS): the publisher itself, its custom roles, and the departments and catalog rows
 * visible there. System objects are left out.
 */
export async function objectsInReach(tx: RequestTx, reach: Reach, type: string, objects: readonly string[]): Promise<string[]> {
  if (reach.all) return [...objects];
  const ids = objects.map((o) => o.slice(o.indexOf(':') + 1));
  if (type === 'publisher') return objects.filter((_, i) => ids[i] === reach.publisherId);
  if (type === 'role') return objects.filter((_, i) => ids[i]!.slice(0, 36) === reach.publisherId);
  const table = ROW_TABLES[type];
  if (!table) return [];
  const uuids = ids.filter(isUuid);
  if (uuids.length === 0) return [];
  const rows = await tx.sql<{ id: string }>(`select id::text as id from ${table} where id = any($1::uuid[])`, [uuids]);
  const visible = new Set(rows.map((r) => r.id));
  return objects.filter((_, i) => visible.has(ids[i]!));
}

/** Request-scoped helper: does `userset` (`type:id#relation` or `type:*`) belong to a publisher admin's reach? */
export function usersetInReach(tx: RequestTx, reach: Reach): (userset: string) => Promise<boolean> {
  return async (userset) => {
    if (reach.all) return true;
    const object = userset.split('#', 1)[0]!;
    if (object.endsWith(':*')) return true; // a wildcard names no one in particular
    const type = object.slice(0, object.indexOf(':'));
    return (await objectsInReach(tx, reach, type, [object])).length === 1;
  };
}

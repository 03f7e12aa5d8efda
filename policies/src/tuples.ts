/**
 * Reading every relationship tuple of an OpenFGA store.
 *
 * Source: OpenFGA Read API (https://openfga.dev/api/service#/Relationship%20Tuples/Read): a Read
 * with no tuple key returns every tuple of the store, paged by `continuation_token` (page size ≤ 100).
 * A type-only object (`publisher:`) needs a user, so "all tuples of one relation" is this full read,
 * filtered by the caller.
 */
import type { OpenFgaClient, TupleKey } from '@openfga/sdk';

/** OpenFGA's largest Read page. */
export const READ_PAGE_SIZE = 100;

/**
 * Every tuple of the store, with the condition it carries (`{name, context}`) when it has one.
 * @param fga a client (its configured store is used unless `storeId` is given).
 * @returns tuple keys in the order OpenFGA pages them (no order is promised).
 * @throws the SDK's FgaApiError when OpenFGA rejects the request or is unreachable.
 */
export async function readAllTuples(fga: OpenFgaClient, storeId?: string): Promise<TupleKey[]> {
  const out: TupleKey[] = [];
  let token: string | undefined;
  do {
    const page = await fga.read({}, { pageSize: READ_PAGE_SIZE, ...(storeId ? { storeId } : {}), ...(token ? { continuationToken: token } : {}) });
    for (const t of page.tuples ?? []) {
      const k = t.key;
      out.push(k.condition?.name ? { user: k.user, relation: k.relation, object: k.object, condition: { name: k.condition.name, context: k.condition.context ?? {} } } : { user: k.user, relation: k.relation, object: k.object });
    }
    token = page.continuation_token || undefined;
  } while (token);
  return out;
}

/** `<object>#<relation>@<user>`: the identity of a tuple (its condition aside). */
export const tupleString = (t: { user: string; relation: string; object: string }): string => `${t.object}#${t.relation}@${t.user}`;

/** The type of an OpenFGA object or user (`publisher:1` → `publisher`, `department:d#admin` → `department`). */
export const typeOf = (objectOrUser: string): string => objectOrUser.slice(0, objectOrUser.indexOf(':'));

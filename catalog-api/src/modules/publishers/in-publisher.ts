/**
 * The request transaction of a route under /api/v1/publishers/{publisherId}: that publisher is the
 * context (the sidecar checked the route rule's permission on `publisher:{publisherId}`), the
 * handler's permission is checked again, and the publisher row is loaded (404 when not visible).
 * Shared by every feature whose routes live under a publisher.
 */
import { problem } from '../../errors.ts';
import { requirePermission, type RequestTx } from '../../db/context.ts';
import { inRequestTx, pathId, type RouteDeps } from '../common/http.ts';
import { Publisher } from './publisher.entity.ts';

/**
 * Run `fn` in the context of the publisher of the path, with `permission` required.
 * @throws ProblemError 403 without the permission, 404 when the publisher is not visible
 */
export async function inPublisher<T>(
  deps: RouteDeps,
  request: Parameters<typeof inRequestTx>[1],
  publisherId: string,
  permission: string | null,
  fn: (tx: RequestTx, publisher: Publisher) => Promise<T>,
  options: { mutating?: boolean; includeArchived?: boolean } = {},
): Promise<T> {
  const id = pathId(publisherId);
  return inRequestTx(
    deps,
    request,
    async (tx) => {
      if (permission) requirePermission(tx, permission);
      const publisher = await tx.em.findOne(Publisher, { id }, options.includeArchived ? { filters: { notDeleted: false } } : {});
      if (!publisher) throw problem.notFound('No such publisher.');
      return fn(tx, publisher);
    },
    { pathPublisherId: id, mutating: options.mutating },
  );
}

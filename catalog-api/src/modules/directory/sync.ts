/**
 * Directory sync: bring the memberships of a publisher's directory users in line with its Active
 * Directory — `npm run directory -- sync [publisher]` and a periodic job in the catalog API
 * (DIRECTORY_SYNC_INTERVAL_MS).
 *
 * For every member whose `auth_source` is `ad`, looked up by objectGUID with the service account:
 * gone from the directory, disabled (userAccountControl ACCOUNTDISABLE), or in no mapped group any
 * more → the membership is deleted (the outbox deletes its tuple) and every session of the user is
 * revoked; a different role → the membership changes. One publisher at a time, under a
 * transaction-level advisory lock, so concurrent runs (several API processes) skip rather than
 * repeat each other. A directory that cannot be reached is reported and skipped; nothing changes.
 */
import type { EntityManager } from '@mikro-orm/postgresql';
import { query } from '../../db/orm.ts';
import type { AuthDeps } from '../auth/deps.ts';
import { revokeSessions } from '../auth/sessions.service.ts';
import { Membership } from '../users/membership.entity.ts';
import { User } from '../users/user.entity.ts';
import { DirectoryConfig } from './directory-config.entity.ts';
import { DirectoryError, UAC_ACCOUNTDISABLE, roleForGroups } from './gateway.ts';
import { NO_REQUEST_META } from '../../db/context.ts';
import { recordAuditEvent } from '../audit/audit.service.ts';

/** What the sync needs. */
export type SyncDeps = Pick<AuthDeps, 'orm' | 'directory' | 'revocations' | 'flushOutbox' | 'log'>;

/** The outcome for one publisher. */
export type SyncSummary = {
  publisherId: string;
  /** directory members looked at */
  checked: number;
  /** memberships deleted (user gone, disabled or in no mapped group) */
  removed: number;
  /** memberships whose role changed */
  roleChanged: number;
  /** sessions revoked */
  sessionsRevoked: number;
  /** set when the publisher was skipped: the directory failed, or another process holds the lock */
  skipped?: string;
};

/**
 * Sync one publisher's directory, or every enabled one.
 * @param publisherId a publisher id, or undefined for all
 * @returns one summary per directory configuration
 */
export async function syncDirectories(deps: SyncDeps, publisherId?: string): Promise<SyncSummary[]> {
  const configs = await deps.orm.em.fork().find(DirectoryConfig, { enabled: true, ...(publisherId ? { publisherId } : {}) }, { orderBy: { publisherId: 'asc' } });
  const out: SyncSummary[] = [];
  for (const config of configs) out.push(await syncOne(deps, config));
  if (out.some((s) => s.removed + s.roleChanged > 0)) await deps.flushOutbox();
  if (out.some((s) => s.sessionsRevoked > 0)) await deps.revocations.publish();
  return out;
}

async function syncOne(deps: SyncDeps, config: DirectoryConfig): Promise<SyncSummary> {
  const summary: SyncSummary = { publisherId: config.publisherId, checked: 0, removed: 0, roleChanged: 0, sessionsRevoked: 0 };
  try {
    await deps.orm.em.fork().transactional(async (em: EntityManager) => {
      const [lock] = await query<{ ok: boolean }>(em, `select pg_try_advisory_xact_lock(hashtextextended('directory-sync:' || $1, 0)) as ok`, [config.publisherId]);
      if (!lock?.ok) {
        summary.skipped = 'another sync of this publisher is running';
        return;
      }
      const memberships = await em.find(Membership, { publisherId: config.publisherId });
      const users = memberships.length ? await em.find(User, { id: { $in: memberships.map((m) => m.userId) }, authSource: 'ad' }) : [];
      const withGuid = users.filter((u) => u.externalId);
      const entries = await deps.directory.lookup(config, withGuid.map((u) => u.externalId!));
      for (const user of users) {
        summary.checked += 1;
        const m = memberships.find((x) => x.userId === user.id)!;
        const found = user.externalId ? entries.get(user.externalId) : null;
        const disabled = !found || (found.user.userAccountControl & UAC_ACCOUNTDISABLE) !== 0;
        const role = disabled ? undefined : roleForGroups(config.groupRoleMap, found.groups);
        // the job is the actor (`system`), in the publisher's chain
        const audit = { id: null, kind: 'system' } as const;
        const chain = { objectType: 'member', objectId: user.id, publisherId: config.publisherId } as const;
        if (!role) {
          const before = { role: m.role, department_id: m.departmentId ?? null };
          em.remove(m);
          summary.removed += 1;
          const revoked = await revokeSessions(em, { userId: user.id }, 'directory_sync');
          summary.sessionsRevoked += revoked;
          await recordAuditEvent(em, audit, NO_REQUEST_META, { ...chain, action: 'member.removed', before, after: { reason: disabled ? 'directory-account-gone' : 'no-mapped-group', sessions_revoked: revoked } });
        } else if (role !== m.role) {
          const before = { role: m.role };
          m.role = role;
          summary.roleChanged += 1;
          await recordAuditEvent(em, audit, NO_REQUEST_META, { ...chain, action: 'member.role_changed', before, after: { role } });
        }
      }
    });
  } catch (err) {
    if (!(err instanceof DirectoryError)) throw err;
    summary.skipped = `directory ${err.reason}: ${err.message}`;
    deps.log.warn({ publisherId: config.publisherId, reason: err.reason, error: err.message }, 'directory sync skipped');
    return summary;
  }
  deps.log.info({ ...summary }, 'directory sync');
  return summary;
}

/**
 * The periodic sync of every enabled directory. Runs every `intervalMs` (0 = never); a run that
 * throws is logged and the next one tries again.
 */
export function startDirectorySync(deps: SyncDeps, intervalMs: number): { stop(): Promise<void> } {
  if (intervalMs <= 0) return { stop: async () => undefined };
  let running: Promise<unknown> = Promise.resolve();
  const timer = setInterval(() => {
    running = syncDirectories(deps).catch((err: unknown) => deps.log.error({ err: { message: (err as Error).message } }, 'directory sync failed'));
  }, intervalMs);
  timer.unref();
  return {
    stop: async () => {
      clearInterval(timer);
      await running;
    },
  };
}

/**
 * `npm run directory -- sync [publisher]`: run the directory sync (sync.ts) once, for one publisher
 * (slug or id) or every enabled directory, print one summary line per publisher, deliver the
 * membership changes to OpenFGA and announce revoked sessions. Exit code 0, or 1 when a directory
 * was skipped (unreachable, misconfigured) or the run failed.
 * Environment: DATABASE_URL, AUTH_DATABASE_URL, REDIS_URL, OPENFGA_* (catalog-api/src/config.ts) and
 * the bind secrets the directory configurations name.
 */
import { Command } from 'commander';
import { loadConfig } from '../../config.ts';
import { createOrm } from '../../db/orm.ts';
import { OutboxRelay } from '../../outbox/relay.ts';
import { createRelationshipWriter } from '../../outbox/writer.ts';
import { createRedis } from '../../redis.ts';
import { RevocationPublisher } from '../auth/revocations.ts';
import { isUuid } from '../common/http.ts';
import { Publisher } from '../publishers/publisher.entity.ts';
import { createDirectoryGateway } from './gateway.ts';
import { syncDirectories } from './sync.ts';

const log = {
  info: (o: object, m?: string) => console.error(JSON.stringify({ level: 'info', msg: m, ...o })),
  warn: (o: object, m?: string) => console.error(JSON.stringify({ level: 'warn', msg: m, ...o })),
  error: (o: object, m?: string) => console.error(JSON.stringify({ level: 'error', msg: m, ...o })),
};

const program = new Command('directory').description("Work with publishers' Active Directory").exitOverride();
program
  .command('sync')
  .argument('[publisher]', 'a publisher slug or id (default: every enabled directory)')
  .description('bring directory users\u2019 memberships in line with the directory now')
  .action(async (publisher?: string) => {
    const config = loadConfig();
    const authOrm = await createOrm(config, 'auth');
    const orm = await createOrm(config, 'jobs'); // the outbox relay's role
    const redis = createRedis(config);
    const writer = await createRelationshipWriter(config);
    try {
      let publisherId: string | undefined;
      if (publisher) {
        const p = await authOrm.em.fork().findOne(Publisher, isUuid(publisher) ? { id: publisher.toLowerCase() } : { slug: publisher });
        if (!p) throw new Error(`no publisher ${publisher}`);
        publisherId = p.id;
      }
      const relay = new OutboxRelay({ orm, sink: writer.sink, logger: log });
      const revocations = new RevocationPublisher({ orm: authOrm, redis, accessTokenTtlMs: config.ACCESS_TOKEN_TTL_S * 1000, intervalMs: 1000, log });
      const summaries = await syncDirectories(
        { orm: authOrm, directory: createDirectoryGateway(), revocations, flushOutbox: async () => void (await relay.drain()), log },
        publisherId,
      );
      for (const s of summaries) {
        console.log(
          s.skipped
            ? `${s.publisherId}: skipped — ${s.skipped}`
            : `${s.publisherId}: ${s.checked} directory members checked, ${s.removed} removed, ${s.roleChanged} role changes, ${s.sessionsRevoked} sessions revoked`,
        );
      }
      if (summaries.length === 0) console.log('no enabled directory configuration');
      if (summaries.some((s) => s.skipped)) process.exitCode = 1;
    } finally {
      await writer.close();
      redis.disconnect();
      await orm.close(true);
      await authOrm.close(true);
    }
  });

try {
  await program.parseAsync(process.argv);
} catch (err) {
  const e = err as { code?: string; exitCode?: number; message?: string };
  if (e.code?.startsWith('commander.')) process.exit(e.exitCode ?? 2);
  console.error(`directory: ${e.message ?? String(err)}`);
  process.exit(1);
}

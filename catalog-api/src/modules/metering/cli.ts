/**
 * `npm run metering -- rollup | measure`: run one metering job now (rollup.ts) and print what it did.
 * `rollup`: Redis counts → `account_usage` / `api_client_usage`, limits → Redis; `measure`: seats
 * and storage → today's rows. Exit code 0; 1 when it failed; 3 when another process holds the
 * job's lock (nothing done — that process is doing it).
 * Environment: JOBS_DATABASE_URL, AUTH_DATABASE_URL, REDIS_URL, METERING_KEY_PREFIX (catalog-api/src/config.ts).
 */
import { once } from 'node:events';
import { Command } from 'commander';
import { loadConfig } from '../../config.ts';
import { createOrm } from '../../db/orm.ts';
import { createRedis } from '../../redis.ts';
import { measure, rollUp, type MeteringDeps } from './rollup.ts';

/** Connect, run `job`, disconnect. */
async function withDeps<T>(job: (deps: MeteringDeps) => Promise<T>): Promise<T> {
  const config = loadConfig();
  const orm = await createOrm(config, 'jobs');
  const authOrm = await createOrm(config, 'auth');
  const redis = createRedis(config);
  try {
    // the client connects in the background and queues nothing: wait for it
    if (redis.status !== 'ready') await once(redis, 'ready', { signal: AbortSignal.timeout(5000) });
    return await job({ orm, authOrm, redis, prefix: config.METERING_KEY_PREFIX });
  } finally {
    redis.disconnect();
    await orm.close(true);
    await authOrm.close(true);
  }
}

const program = new Command('metering').description('API-call metering: roll-up and measurements').exitOverride();
program
  .command('rollup')
  .description('roll the Redis counts up into account_usage and publish the limits now')
  .action(async () => {
    const s = await withDeps(rollUp);
    if (!s) {
      console.log('another process is rolling up; nothing done');
      process.exitCode = 3;
    } else console.log(`${s.publishers} publishers, ${s.limited} limits published, ${s.days} publisher-days written`);
  });
program
  .command('measure')
  .description("measure every publisher's seats and catalog storage into today's usage row now")
  .action(async () => {
    const n = await withDeps((deps) => measure(deps));
    if (n === null) {
      console.log('another process is measuring; nothing done');
      process.exitCode = 3;
    } else console.log(`${n} publishers measured`);
  });

try {
  await program.parseAsync(process.argv);
} catch (err) {
  const e = err as { code?: string; exitCode?: number; message?: string };
  if (e.code?.startsWith('commander.')) process.exit(e.exitCode ?? 2);
  console.error(`metering: ${e.message ?? String(err)}`);
  process.exit(1);
}

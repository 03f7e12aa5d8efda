/**
 * `npm run events -- <command>`: the domain-event relay outside the API process, and its dead letters.
 *
 * - `run`: publish until SIGTERM/SIGINT (timer + LISTEN), then finish the batch in flight and exit 0.
 *   Any number may run beside the API's relays: one batch at a time across all of them.
 * - `drain`: publish what is due now and exit (0, or 1 when a batch failed).
 * - `status`: pending events, lag (seconds) and open dead letters, as JSON.
 * - `dead-letters`: the open dead letters, as JSON (oldest first).
 * - `retry <id>`: put a dead-lettered event back at its place in the order (its publisher's later
 *   events follow it); `discard <id>`: let its publisher's events go on without it. Exit 1 when
 *   there is no open dead letter with that id.
 * - `consume [--type <type>] [--max <n>]`: receive and DELETE events from SQS_QUEUE_URL until it is
 *   empty (a downstream consumer's view; on the local queue nobody else consumes), printing the
 *   bodies of those of `type` (all without it) as JSON lines.
 * Environment: JOBS_DATABASE_URL (the role catalog_jobs) and the SQS_* / AWS_* / EVENTS_* settings (catalog-api/src/config.ts).
 * Logs are JSON lines on stderr; results go to stdout.
 */
import { Command } from 'commander';
import { pathToFileURL } from 'node:url';
import { loadConfig } from '../config.ts';
import { createOrm, type Orm } from '../db/orm.ts';
import type { Logger } from '../logger.ts';
import { eventStats, openDeadLetters, resolveDeadLetter, type DeadLetterAction } from './outbox.ts';
import { createEventPublisher } from './runner.ts';
import { createSqsClient } from './sqs.ts';
import { consumeEvents } from './consumer.ts';

const log: Logger = {
  info: (o, m) => console.error(JSON.stringify({ level: 'info', time: new Date().toISOString(), msg: m, ...o })),
  warn: (o, m) => console.error(JSON.stringify({ level: 'warn', time: new Date().toISOString(), msg: m, ...o })),
  error: (o, m) => console.error(JSON.stringify({ level: 'error', time: new Date().toISOString(), msg: m, ...errFields(o) })),
};

function errFields(o: object): object {
  const e = (o as { err?: unknown }).err;
  return e instanceof Error ? { ...o, err: { name: e.name, message: e.message } } : o;
}

/** Connect as the relays' role (`catalog_jobs`, JOBS_DATABASE_URL), run `fn`, disconnect. */
async function withOrm<T>(fn: (orm: Orm) => Promise<T>): Promise<T> {
  const orm = await createOrm(loadConfig(), 'jobs');
  try {
    return await fn(orm);
  } finally {
    await orm.close(true);
  }
}

/** Run the relay until a signal; resolves when it has stopped. */
async function run(): Promise<void> {
  const config = loadConfig();
  const orm = await createOrm(config, 'jobs');
  const publisher = createEventPublisher(config, orm, { logger: log });
  publisher.start();
  log.info({ queue: config.SQS_QUEUE_URL }, 'domain events: relay running');
  await new Promise<void>((resolve) => {
    const stop = (signal: string) => {
      log.info({ signal }, 'domain events: stopping');
      resolve();
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
  await publisher.stop();
  await orm.close(true);
}

const program = new Command('events').description('Domain events: the relay to SQS and its dead letters').exitOverride();
program.command('run').description('publish domain events until SIGTERM').action(run);
program
  .command('drain')
  .description('publish what is due now, then exit')
  .action(async () => {
    const config = loadConfig();
    await withOrm(async (orm) => {
      const publisher = createEventPublisher(config, orm, { logger: log, listen: false });
      try {
        const result = await publisher.relay.drain();
        console.log(JSON.stringify(result));
        if (result.error) process.exitCode = 1;
      } finally {
        await publisher.stop();
      }
    });
  });
program
  .command('status')
  .description('pending events, lag and open dead letters')
  .action(() => withOrm(async (orm) => console.log(JSON.stringify(await eventStats(orm)))));
program
  .command('dead-letters')
  .description('the open dead letters, oldest first')
  .action(() => withOrm(async (orm) => console.log(JSON.stringify(await openDeadLetters(orm), null, 2))));
program
  .command('consume')
  .description('receive and delete events until the queue is empty, printing those of --type')
  .option('--type <type>', 'print only events of this type (e.g. work.updated)')
  .option('--max <n>', 'stop after this many messages', (v) => Number.parseInt(v, 10))
  .action(async (opts: { type?: string; max?: number }) => {
    const config = loadConfig();
    if (!config.SQS_QUEUE_URL) throw new Error('SQS_QUEUE_URL is not set (eval "$(bash scripts/services.sh)" first)');
    const client = createSqsClient(config);
    try {
      const n = await consumeEvents(client, config.SQS_QUEUE_URL, (e) => {
        if (!opts.type || e.type === opts.type) console.log(JSON.stringify(e));
      }, { max: opts.max });
      log.info({ consumed: n }, 'domain events: consumed');
    } finally {
      client.destroy();
    }
  });
for (const [name, action, what] of [
  ['retry', 'retry', 'put the event back at its place in the order'],
  ['discard', 'discard', 'let its publisher’s events go on without it'],
] as const) {
  program
    .command(name)
    .argument('<id>', 'the dead letter’s id (see dead-letters)')
    .description(what)
    .action((id: string) =>
      withOrm(async (orm) => {
        const done = await resolveDeadLetter(orm, id, action as DeadLetterAction);
        console.log(done ? `dead letter ${id}: ${action === 'retry' ? 'retried' : 'discarded'}` : `no open dead letter ${id}`);
        if (!done) process.exitCode = 1;
      }),
    );
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  try {
    await program.parseAsync(process.argv);
  } catch (err) {
    const e = err as { code?: string; exitCode?: number; message?: string };
    if (e.code?.startsWith('commander.')) process.exitCode = e.exitCode ?? 2;
    else {
      console.error(`events: ${e.message ?? String(err)}`);
      process.exitCode = 1;
    }
  }
}

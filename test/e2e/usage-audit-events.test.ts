/**
 * Accounts, usage, audit and events through the assembled stack, as a publisher's admin sees them
 * (the README's "Accounts" walk-through): an editor's calls through the sidecar show in the
 * publisher's usage after the flush and roll-up; the audit log says who changed a work and what
 * changed; the work.updated event is on the SQS queue (goaws, read with the AWS SDK). Runs on a
 * database, a metering key prefix and a queue of its own; the seed's own events count as published.
 */
import t from 'tap';
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { SQSClient } from '@aws-sdk/client-sqs';
import pg from 'pg';
import { migrateUp } from '../../migrations/migrate.ts';
import { seed } from '../../migrations/seed/run.ts';
import { createTestDb, type TestDb } from '../migrations/db.ts';
import { apiClient } from '../support/api-client.ts';
import { createTestQueue, deleteTestQueue, receiveAll, sqsEnv, testSqsClient, type ReceivedEvent } from '../support/sqs.ts';
import { PUBLISHER_IDS } from './policy.ts';
import { startStack, tokenFor, type Stack } from './stack.ts';

const DMP = PUBLISHER_IDS.dmp;
const EDITOR = '20000000-0000-4000-8000-000000000002'; // editor@dmp.example (migrations/seed/demo.ts)

let db: TestDb;
let stack: Stack;
let sqs: SQSClient;
let queue: string;
t.before(async () => {
  db = await createTestDb('e2eaccounts');
  Object.assign(process.env, { DATABASE_OWNER_URL: db.ownerUrl, DATABASE_URL: db.appUrl, AUTH_DATABASE_URL: db.authUrl, JOBS_DATABASE_URL: db.jobsUrl });
  // The demo seed's ~2,400 creation events would reach the queue first (FIFO per publisher): they
  // are history here, so mark them published before the stack's relay starts (its seed is then a no-op).
  await migrateUp(db.ownerUrl);
  await seed(db.ownerUrl);
  const su = new pg.Client({ connectionString: db.adminUrl });
  await su.connect();
  await su.query(`update domain_events set published_at = now() where published_at is null`);
  await su.end();
  sqs = testSqsClient();
  queue = await createTestQueue(sqs, 'e2e-accounts');
  stack = await startStack({
    sidecars: 1,
    env: { ...sqsEnv(), SQS_QUEUE_URL: queue, METERING_KEY_PREFIX: `e2e-accounts-${randomUUID()}`, METERING_ROLLUP_INTERVAL_MS: '200', EVENTS_INTERVAL_MS: '200' },
  });
});
t.teardown(async () => {
  await stack?.stop();
  await deleteTestQueue(sqs, queue);
  sqs?.destroy();
  await db?.drop();
});

t.test('calls show in usage, the audit log says who changed what, work.updated is on the queue', async (t) => {
  const sidecar = stack.sidecars[0]!.url;
  const [admin, editor] = [await tokenFor('admin@dmp.example'), await tokenFor('editor@dmp.example')];
  const usageToday = async () => {
    const r = await apiClient(sidecar, admin).GET('/api/v1/publishers/{publisherId}/account/usage', { params: { path: { publisherId: DMP } } });
    return r.data!.days.at(-1)!.api_calls;
  };
  const before = await usageToday(); // itself a counted call, like every call below

  const asEditor = apiClient(sidecar, editor, DMP);
  const page = await asEditor.GET('/api/v1/works', { params: { query: { limit: 1 } } });
  const work = page.data!.items[0]!;
  const patched = await asEditor.PATCH('/api/v1/works/{id}', { params: { path: { id: work.id } }, body: { title: 'Renamed by the editor' } });
  t.equal(patched.response.status, 200);

  // 1 (the usage read) + 2 (list, patch); the next usage read counts itself only after it is answered
  let seen = -1;
  for (const started = Date.now(); Date.now() - started < 10_000; await sleep(200)) {
    seen = await usageToday();
    if (seen >= before + 3) break;
  }
  t.ok(seen >= before + 3, `usage counts the calls just made (${before} → ${seen})`);

  const audit = await apiClient(sidecar, admin, DMP).GET('/api/v1/audit', { params: { query: { object_type: 'work', object_id: work.id } } });
  t.equal(audit.response.status, 200);
  t.match(audit.data!.items[0], { action: 'work.updated', actor_id: EDITOR, actor_kind: 'user', publisher_id: DMP, object_id: work.id, before: { title: work.title }, after: { title: 'Renamed by the editor' } });

  const events: ReceivedEvent[] = [];
  for (const started = Date.now(); Date.now() - started < 10_000 && !events.some((e) => e.type === 'work.updated'); await sleep(200)) {
    events.push(...(await receiveAll(sqs, queue)));
  }
  const updated = events.filter((e) => e.type === 'work.updated' && e.object_id === work.id);
  t.equal(updated.length, 1, 'the work.updated event arrived once');
  t.match(updated[0], { publisher_id: DMP, actor_user_id: EDITOR, data: { title: 'Renamed by the editor' } });
});

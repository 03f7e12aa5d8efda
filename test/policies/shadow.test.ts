/**
 * Shadow runs and the deploy behind them (policies/src/shadow.ts, policies/src/deploy.ts, CLI
 * `shadow` / `deploy`) against the real OpenFGA and Redis: a live store with the project's model and
 * a few members; recorded decisions (contract A) replayed against candidates in scratch stores.
 */
import { ConsistencyPreference } from '@openfga/sdk';
import t from 'tap';
import { randomUUID } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Redis } from 'ioredis';
import { DEFAULT_MODEL_FILE, fgaClient, parseModel, resolveStore } from '../../policies/src/model.ts';
import { RelationshipWriter } from '../../policies/src/relationships.ts';
import { appendDecisions, decisionStreamKey, type DecisionRecord } from '../../policies/src/decision-log.ts';
import { activeModelKey } from '../../policies/src/active-model.ts';
import { formatShadowReport, runShadow, scratchStoreName } from '../../policies/src/shadow.ts';
import { ShadowChangesError, deployWithShadow } from '../../policies/src/deploy.ts';
import { OPENFGA_API_URL, REDIS_URL, deleteStore, uniqueStoreName } from './helpers.ts';

const ROOT = resolve(import.meta.dirname, '../..');
const DSL = readFileSync(DEFAULT_MODEL_FILE, 'utf8');
const BASE = parseModel(DSL, 'model.fga');
/** The candidate of the issue: viewers no longer read the whole catalogue (works_read_all without viewer). */
const NO_VIEWER_DSL = DSL.split('\n').map((l) => (l.trim().startsWith('define works_read_all:') ? l.replace(/\bviewer\b/, 'editor') : l)).join('\n');
t.not(NO_VIEWER_DSL, DSL, 'the candidate differs from model.fga');
const NO_VIEWER = parseModel(NO_VIEWER_DSL, 'candidate');

const storeName = uniqueStoreName('shadow');
const storeId = await resolveStore(OPENFGA_API_URL, storeName, { create: true });
const fga = fgaClient(OPENFGA_API_URL, storeId);
const baseId = (await fga.writeAuthorizationModel(BASE)).authorization_model_id;
const redis = new Redis(REDIS_URL);
t.teardown(async () => {
  await redis.del(decisionStreamKey(storeId), activeModelKey(storeId));
  redis.disconnect();
  await deleteStore(storeId);
});

const [P, V, E, C, S, W] = [randomUUID(), randomUUID(), randomUUID(), randomUUID(), randomUUID(), randomUUID()];
await new RelationshipWriter({ fga, redis: null, storeId, modelId: baseId }).write({
  writes: [
    { user: 'system:platform', relation: 'system', object: `publisher:${P}` },
    { user: `user:${V}`, relation: 'viewer', object: `publisher:${P}` },
    { user: `user:${E}`, relation: 'editor', object: `publisher:${P}` },
    { user: `publisher:${P}`, relation: 'publisher', object: `role:${P}/clerk` },
    { user: `user:${C}`, relation: 'assignee', object: `role:${P}/clerk` },
    { user: `role:${P}/clerk#assignee`, relation: 'grant_works_read', object: `publisher:${P}` },
    { user: `publisher:${P}`, relation: 'publisher', object: `work:${W}` },
  ],
});

let seq = 0;
const decision = (subject: string, rule: 'list' | 'get', allowed = true): DecisionRecord => ({
  id: `0190a000-0000-7000-8000-${String(++seq).padStart(12, '0')}`,
  time: new Date().toISOString(),
  request_id: randomUUID(),
  subject: `user:${subject}`,
  ...(rule === 'list' ? { relation: 'works_read', object: `publisher:${P}`, rule: 'GET /api/v1/works' } : { relation: 'can_read', object: `work:${W}`, rule: 'GET /api/v1/works/{id}' }),
  publisher: P,
  allowed,
  source: 'pdp',
  model_id: baseId,
  latency_ms: 1.5,
});
const DECISIONS: DecisionRecord[] = [
  decision(V, 'list'), decision(V, 'get'), decision(V, 'list'), // the viewer, one question twice
  decision(E, 'list'), decision(E, 'get'),
  decision(C, 'list'), decision(C, 'get'),
  decision(S, 'list', false), // a stranger: denied before and after
];

/** Stores whose name starts with `shadow-<storeName>-` (the scratch stores of this suite). */
async function scratchStores(): Promise<string[]> {
  const prefix = scratchStoreName(storeName).replace(/[^-]*$/, '');
  const names: string[] = [];
  let token: string | undefined;
  do {
    const page = await fgaClient(OPENFGA_API_URL).listStores({ pageSize: 100, ...(token ? { continuationToken: token } : {}) });
    for (const s of page.stores ?? []) if (s.name.startsWith(prefix)) names.push(s.name);
    token = page.continuation_token || undefined;
  } while (token);
  return names;
}
const modelIds = async () => (await fga.readAuthorizationModels({ pageSize: 50 })).authorization_models.map((m) => m.id);

t.test('a candidate without viewer in works_read_all: the viewer\u2019s reads turn denied, grouped by (rule, viewer)', async (t) => {
  const r = await runShadow({ apiUrl: OPENFGA_API_URL, storeId, storeName, candidate: NO_VIEWER, decisions: DECISIONS, migrations: [] });
  t.equal(r.base_model_id, baseId);
  t.match(r.candidate_model_id, /^[0-9A-Z]{26}$/);
  t.equal(r.replayed, DECISIONS.length);
  t.equal(r.checks, 7, 'the repeated question was asked once');
  t.same(
    r.changed.map((c) => [c.decision.id, c.before, c.after, c.role]),
    [DECISIONS[0], DECISIONS[1], DECISIONS[2]].map((d) => [d!.id, true, false, 'viewer']),
    'exactly the viewer\u2019s three decisions change',
  );
  t.same(r.groups, [
    { rule: 'GET /api/v1/works', role: 'viewer', allowed_to_denied: 2, denied_to_allowed: 0 },
    { rule: 'GET /api/v1/works/{id}', role: 'viewer', allowed_to_denied: 1, denied_to_allowed: 0 },
  ]);
  const text = formatShadowReport(r);
  t.match(text, /8 decision\(s\) replayed \(7 distinct check\(s\)\)/);
  t.match(text, /^rule\s+role\s+allowed→denied\s+denied→allowed\s+examples$/m);
  t.match(text, new RegExp(`^GET /api/v1/works\\s+viewer\\s+2\\s+0\\s+user:${V} works_read publisher:${P}$`, 'm'));
  t.same(await scratchStores(), [], 'the scratch store is deleted');
});

t.test('an identical candidate changes nothing; roles come from the copied tuples', async (t) => {
  const r = await runShadow({ apiUrl: OPENFGA_API_URL, storeId, storeName, candidate: BASE, decisions: DECISIONS, migrations: [], sample: 5 });
  t.equal(r.replayed, 5, '--sample bounds the replay');
  t.same(r.changed, []);
  t.same(r.groups, []);
  t.match(formatShadowReport(r), /no decision changes/);
  // the opposite change shows the other roles: a candidate where only admins read the catalogue
  const adminsOnly = parseModel(DSL.split('\n').map((l) => (l.trim().startsWith('define works_read_all:') ? '    define works_read_all: admin but not shut_out' : l)).join('\n'), 'admins-only');
  const r2 = await runShadow({ apiUrl: OPENFGA_API_URL, storeId, storeName, candidate: adminsOnly, decisions: DECISIONS, migrations: [] });
  t.same(r2.groups.map((g) => [g.rule, g.role, g.allowed_to_denied]), [
    ['GET /api/v1/works', 'editor', 1], ['GET /api/v1/works', 'role:clerk', 1], ['GET /api/v1/works', 'viewer', 2],
    ['GET /api/v1/works/{id}', 'editor', 1], ['GET /api/v1/works/{id}', 'role:clerk', 1], ['GET /api/v1/works/{id}', 'viewer', 1],
  ]);
  t.same(await scratchStores(), []);
});

t.test('a failing Check fails the run, and the scratch store is still deleted', async (t) => {
  const bad = { ...decision(V, 'get'), object: 'work:not a valid id' };
  await t.rejects(runShadow({ apiUrl: OPENFGA_API_URL, storeId, storeName, candidate: NO_VIEWER, decisions: [DECISIONS[0]!, bad], migrations: [] }), /shadow: (BatchCheck|Check .*) failed/);
  t.same(await scratchStores(), [], 'no scratch store left behind');
});

t.test('deploy refuses a model that changes decisions and writes nothing; --accept-changes deploys', async (t) => {
  const before = await modelIds();
  const err = await deployWithShadow({ apiUrl: OPENFGA_API_URL, storeName, model: NO_VIEWER, decisions: DECISIONS, redis, migrations: [] }).catch((e: unknown) => e);
  t.ok(err instanceof ShadowChangesError, String(err));
  t.equal((err as ShadowChangesError).report.changed.length, 3);
  t.same(await modelIds(), before, 'the store\u2019s models are unchanged');
  t.equal(await redis.get(activeModelKey(storeId)), null, 'nothing published');

  // the CLI: decisions from the store's Redis stream (contract A)
  await appendDecisions(redis, storeId, [...DECISIONS].reverse(), 1000);
  const dir = mkdtempSync(join(tmpdir(), 'shadow-'));
  const file = join(dir, 'model.fga');
  writeFileSync(file, NO_VIEWER_DSL);
  const cli = (...args: string[]) => {
    const r = spawnSync(process.execPath, ['policies/src/cli.ts', ...args, '--store-name', storeName, '--api-url', OPENFGA_API_URL, '--redis-url', REDIS_URL], { cwd: ROOT, encoding: 'utf8' });
    return { code: r.status, out: r.stdout, err: r.stderr };
  };
  const refused = cli('deploy', '--model', file);
  t.equal(refused.code, 1, refused.err);
  t.match(refused.out, new RegExp(`^GET /api/v1/works\\s+viewer\\s+2\\s+0`, 'm'), 'the report is printed');
  t.match(refused.err, /changes 3 of 8 recent decision\(s\); nothing deployed/);
  t.same(await modelIds(), before);

  const accepted = cli('deploy', '--model', file, '--accept-changes');
  t.equal(accepted.code, 0, accepted.err);
  t.match(accepted.out, /3 decision\(s\) change/);
  const id = /model (\S+) \(written\)/.exec(accepted.out)?.[1];
  t.ok(id, accepted.out);
  t.equal((await modelIds())[0], id, 'the candidate is the newest model');
  t.equal(await redis.get(activeModelKey(storeId)), id, 'and the published active model');
  t.equal((await fga.check({ user: `user:${V}`, relation: 'works_read', object: `publisher:${P}` }, { consistency: ConsistencyPreference.HigherConsistency })).allowed, false);

  // the shadow command on a file of decisions: the deployed model vs model.fga → the reverse change
  const jsonl = join(dir, 'decisions.jsonl');
  writeFileSync(jsonl, DECISIONS.map((d) => JSON.stringify(d)).join('\n') + '\n');
  const shadow = cli('shadow', '--from-file', jsonl);
  t.equal(shadow.code, 0, shadow.err);
  t.match(shadow.out, new RegExp(`^GET /api/v1/works\\s+viewer\\s+0\\s+2`, 'm'), 'denied→allowed for the viewer');

  // no recorded decisions (Redis none given): says so and deploys
  const back = await deployWithShadow({ apiUrl: OPENFGA_API_URL, storeName, model: BASE, redis: null, migrations: [] });
  t.equal(back.shadowSkipped, 'no-decisions');
  t.equal(back.written, true);
  await redis.del(decisionStreamKey(storeId));
  const skipped = cli('deploy', '--model', file);
  t.equal(skipped.code, 0, skipped.err);
  t.match(skipped.out, /no recent decisions to replay/);
});

/**
 * Model migrations (policies/src/model-migrations.ts) and their use by the deploy: planning from
 * files, rewriting tuples in the real OpenFGA (renamed relation, userset users), re-runs, the
 * outbox relay's translation, and the refusal of a candidate that drops a used relation.
 */
import { ConsistencyPreference } from '@openfga/sdk';
import t from 'tap';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_MODEL_FILE, fgaClient, parseModel, resolveStore } from '../../policies/src/model.ts';
import { RelationshipWriter } from '../../policies/src/relationships.ts';
import { readAllTuples, tupleString } from '../../policies/src/tuples.ts';
import { ModelMigrationPlanError, applyModelMigration, defaultOutboxTranslator, loadModelMigrations, outboxTranslator, planModelMigration } from '../../policies/src/model-migrations.ts';
import { deployWithShadow } from '../../policies/src/deploy.ts';
import type { DecisionRecord } from '../../policies/src/decision-log.ts';
import { OPENFGA_API_URL, deleteStore, uniqueStoreName } from './helpers.ts';

const DSL = readFileSync(DEFAULT_MODEL_FILE, 'utf8');
const BASE = parseModel(DSL, 'model.fga');
/** publisher#viewer renamed to publisher#reader (only in the publisher type; department keeps its viewer). */
function renamedDsl(): string {
  const start = DSL.indexOf('\ntype publisher');
  const end = DSL.indexOf('\ntype ', start + 1);
  return DSL.slice(0, start) + DSL.slice(start, end).replace(/(?<![#_])\bviewer\b/g, 'reader') + DSL.slice(end);
}
const RENAMED = parseModel(renamedDsl(), 'renamed');
const dir = mkdtempSync(join(tmpdir(), 'model-migrations-'));
writeFileSync(join(dir, '0001-viewer-becomes-reader.yaml'), 'renames:\n  - { type: publisher, from: viewer, to: reader }\n');
writeFileSync(join(dir, '0002-unrelated.yaml'), 'removes:\n  - { type: publisher, relation: legacy_x }\n');
writeFileSync(join(dir, 'notes.txt'), 'not a migration');

t.test('loading and planning', async (t) => {
  const migrations = loadModelMigrations(dir);
  t.same(migrations.map((m) => m.file), ['0001-viewer-becomes-reader.yaml', '0002-unrelated.yaml']);
  t.same(planModelMigration(BASE, RENAMED, migrations), [{ op: 'rename', type: 'publisher', from: 'viewer', to: 'reader', file: '0001-viewer-becomes-reader.yaml' }]);
  t.same(planModelMigration(BASE, BASE, migrations), [], 'nothing applies to an unchanged model');
  t.same(loadModelMigrations(join(dir, 'missing')), []);

  const err = (() => { try { planModelMigration(BASE, RENAMED, []); } catch (e) { return e; } })();
  t.ok(err instanceof ModelMigrationPlanError);
  t.same((err as ModelMigrationPlanError).missing, ['publisher#viewer']);
  t.match((err as Error).message, /publisher#viewer: the candidate model drops it, tuples may use it, and no migration renames or removes it/);

  const badDir = mkdtempSync(join(tmpdir(), 'model-migrations-bad-'));
  writeFileSync(join(badDir, '0001.yaml'), 'renames:\n  - { type: publisher, from: viewer }\n');
  t.throws(() => loadModelMigrations(badDir), /0001\.yaml: invalid model migration/);
  const toMissing = [{ file: 'x.yaml', renames: [{ type: 'publisher', from: 'viewer', to: 'watcher' }], removes: [] }];
  t.throws(() => planModelMigration(BASE, RENAMED, toMissing), /renames publisher#viewer to publisher#watcher, which the candidate model does not define/);
});

t.test('the relay translation: old-name outbox rows land under the new name; removed ones are dropped', async (t) => {
  const migrations = [
    ...loadModelMigrations(dir),
    { file: '0003.yaml', renames: [{ type: 'department', from: 'admin', to: 'head' }], removes: [{ type: 'publisher', relation: 'creator' }] },
  ];
  const withoutDeptAdmin = parseModel(renamedDsl(), 'x'); // department#admin is still defined here
  const translate = outboxTranslator(migrations, withoutDeptAdmin);
  t.same(translate({ user: 'user:u', relation: 'viewer', object: 'publisher:p' }), { user: 'user:u', relation: 'reader', object: 'publisher:p' });
  t.same(translate({ user: 'user:u', relation: 'viewer', object: 'department:d' }), { user: 'user:u', relation: 'viewer', object: 'department:d' }, 'another type is untouched');
  t.same(translate({ user: 'department:d#admin', relation: 'department_admin', object: 'publisher:p' }), { user: 'department:d#admin', relation: 'department_admin', object: 'publisher:p' }, 'not active while the model defines department#admin');
  t.same(translate({ user: 'user:u', relation: 'editor', object: 'publisher:p' }), { user: 'user:u', relation: 'editor', object: 'publisher:p' });
  const noCreator = structuredClone(RENAMED); // only the relation names matter to the translator
  delete noCreator.type_definitions.find((d) => d.type === 'publisher')!.relations!.creator;
  t.equal(outboxTranslator(migrations, noCreator)({ user: 'user:u', relation: 'creator', object: 'publisher:p' }), null, 'a removed relation\u2019s row is dropped');
  t.same(outboxTranslator(migrations, BASE)({ user: 'user:u', relation: 'viewer', object: 'publisher:p' })?.relation, 'viewer', 'nothing applies to a model that still has viewer');
  t.same(defaultOutboxTranslator()({ user: 'user:u', relation: 'viewer', object: 'publisher:p' }), { user: 'user:u', relation: 'viewer', object: 'publisher:p' }, 'the project ships no migration yet: identity');
});

t.test('a rename deploy: tuples rewritten, Check answers the same under the new name, re-runs are idempotent', async (t) => {
  const storeName = uniqueStoreName('migr');
  const storeId = await resolveStore(OPENFGA_API_URL, storeName, { create: true });
  t.teardown(() => deleteStore(storeId));
  const fga = fgaClient(OPENFGA_API_URL, storeId);
  const baseId = (await fga.writeAuthorizationModel(BASE)).authorization_model_id;
  const [P, V, W, D] = [randomUUID(), randomUUID(), randomUUID(), randomUUID()];
  await new RelationshipWriter({ fga, redis: null, storeId, modelId: baseId }).write({
    writes: [
      { user: `user:${V}`, relation: 'viewer', object: `publisher:${P}` },
      { user: `publisher:${P}`, relation: 'publisher', object: `work:${W}` },
      { user: `user:${V}`, relation: 'viewer', object: `department:${D}` },
    ],
  });
  const decisions: DecisionRecord[] = [
    { id: randomUUID(), time: new Date().toISOString(), request_id: 'r1', subject: `user:${V}`, relation: 'works_read', object: `publisher:${P}`, publisher: P, rule: 'GET /api/v1/works', allowed: true, source: 'pdp', model_id: baseId, latency_ms: 1 },
    { id: randomUUID(), time: new Date().toISOString(), request_id: 'r2', subject: `user:${V}`, relation: 'can_read', object: `work:${W}`, publisher: P, rule: 'GET /api/v1/works/{id}', allowed: true, source: 'pdp', model_id: baseId, latency_ms: 1 },
  ];

  // without the migration file: refused, nothing written
  await t.rejects(deployWithShadow({ apiUrl: OPENFGA_API_URL, storeName, model: RENAMED, decisions, migrations: [] }), /publisher#viewer/);
  t.equal((await fga.readAuthorizationModels({})).authorization_models.length, 1, 'no model written');

  const res = await deployWithShadow({ apiUrl: OPENFGA_API_URL, storeName, model: RENAMED, decisions, migrations: loadModelMigrations(dir) });
  t.same(res.shadow?.changed, [], 'the shadow run migrated its copy: no decision changes');
  t.equal(res.shadow?.replayed, 2);
  t.same(res.migration, { steps: planModelMigration(BASE, RENAMED, loadModelMigrations(dir)), written: 1, deleted: 1 });
  const tuples = (await readAllTuples(fga)).map(tupleString).sort();
  t.ok(tuples.includes(`publisher:${P}#reader@user:${V}`), 'renamed tuple written');
  t.notOk(tuples.includes(`publisher:${P}#viewer@user:${V}`), 'old tuple deleted');
  t.ok(tuples.includes(`department:${D}#viewer@user:${V}`), 'department#viewer untouched');
  const check = async (relation: string, object: string) => (await fga.check({ user: `user:${V}`, relation, object }, { authorizationModelId: res.modelId, consistency: ConsistencyPreference.HigherConsistency })).allowed;
  t.equal(await check('works_read', `publisher:${P}`), true);
  t.equal(await check('can_read', `work:${W}`), true);
  t.equal(await check('reader', `publisher:${P}`), true);

  const steps = res.migration.steps;
  const ids = { storeId, baseModelId: baseId, candidateModelId: res.modelId };
  t.same(await applyModelMigration(fga, steps, ids), { written: 0, deleted: 0 }, 're-run of a finished migration: nothing to do');

  // a crash after the writes (old tuples still there): the re-run finishes it
  await new RelationshipWriter({ fga, redis: null, storeId, modelId: baseId }).write({ writes: [{ user: `user:${V}`, relation: 'viewer', object: `publisher:${P}` }] });
  t.same(await applyModelMigration(fga, steps, { ...ids, deleteOld: false }), { written: 1, deleted: 0 });
  t.same(await applyModelMigration(fga, steps, ids), { written: 1, deleted: 1 }, 'duplicate write ignored, old tuple deleted');
  t.same((await readAllTuples(fga)).map(tupleString).sort(), tuples, 'the same tuples as after the deploy');
});

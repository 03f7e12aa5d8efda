import t from 'tap';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { canonicalModel, deployModel, findStore, loadModel, readLatestModel, resolveStore } from '../../policies/src/model.ts';
import { OPENFGA_API_URL, deleteStore, uniqueStoreName } from './helpers.ts';
import { CATALOG_RESOURCES, PERMISSION_NAMES, grantRelation, permissionRelation } from '../../policies/src/permissions.ts';

t.test('loadModel: the contract types and relations, every permission of the catalogue on publisher', async (t) => {
  const m = loadModel();
  t.equal(m.schema_version, '1.1');
  const rels = Object.fromEntries(m.type_definitions.map((d) => [d.type, Object.keys(d.relations ?? {}).sort()]));
  const row = ['can_delete', 'can_read', 'can_update', 'department', 'owner', 'publisher'];
  const catalogAll = CATALOG_RESOURCES.flatMap((r) => ['read', 'create', 'update'].map((a) => `${r}_${a}_all`));
  t.same(rels, {
    user: [],
    system: ['admin', 'can_administer', 'disabled'],
    role: ['assignee', 'publisher'],
    department: ['active_editor', 'active_viewer', 'admin', 'editor', 'publisher', 'viewer'],
    publisher: [
      'active_creator', 'admin', 'api_user', 'creator', 'department_admin', 'department_editor', 'department_viewer', 'editor', 'manager',
      'frozen', 'off_network', 'read_only', 'scoped_reader', 'scoped_writer', 'shut_out', 'suspended', 'system', 'viewer', 'writing_creator',
      ...PERMISSION_NAMES.map(permissionRelation),
      ...PERMISSION_NAMES.map(grantRelation),
      ...catalogAll,
    ].sort(),
    work: row,
    songwriter: row,
    recording: row,
  });
});

t.test('loadModel: syntax and semantic errors name the file', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'policies-model-'));
  const bad = join(dir, 'bad.fga');
  writeFileSync(bad, 'model\n  schema 1.1\ntype user\n  relations\n    define viewer: [user] or editor\n');
  t.throws(() => loadModel(bad), { message: new RegExp(`^${bad}: invalid OpenFGA model`) });
  writeFileSync(bad, 'this is not a model');
  t.throws(() => loadModel(bad), { message: /invalid OpenFGA model/ });
});

t.test('canonicalModel ignores key order, nulls, empty strings and empty conditions', async (t) => {
  const a = { schema_version: '1.1', type_definitions: [{ type: 'user', relations: {}, metadata: null as never }], conditions: {} };
  const b = { type_definitions: [{ metadata: undefined, relations: {}, type: 'user' }], schema_version: '1.1' };
  t.equal(canonicalModel(a), canonicalModel(b));
  t.not(canonicalModel(a), canonicalModel({ ...b, type_definitions: [{ type: 'person', relations: {} }] }));
});

t.test('deployModel against the real OpenFGA', async (t) => {
  const storeName = uniqueStoreName('deploy');
  let storeId: string | undefined;
  t.teardown(() => deleteStore(storeId));

  t.equal(await findStore(OPENFGA_API_URL, storeName), undefined);
  await t.rejects(resolveStore(OPENFGA_API_URL, storeName), { message: /no OpenFGA store named/ });

  const first = await deployModel({ apiUrl: OPENFGA_API_URL, storeName });
  storeId = first.storeId;
  t.equal(first.written, true, 'first deploy creates the store and writes the model');
  t.equal(await resolveStore(OPENFGA_API_URL, storeName), first.storeId, 'the store is found by name');
  t.equal((await readLatestModel(OPENFGA_API_URL, first.storeId))?.id, first.modelId);

  const second = await deployModel({ apiUrl: OPENFGA_API_URL, storeName });
  t.same(second, { storeId: first.storeId, modelId: first.modelId, written: false }, 'same content: nothing written');

  const dir = mkdtempSync(join(tmpdir(), 'policies-model-'));
  const changedFile = join(dir, 'model.fga');
  writeFileSync(changedFile, readFileSync(loadModelPath(), 'utf8').replace('define audit_read: (grant_audit_read or admin) but not shut_out', 'define audit_read: (grant_audit_read or manager) but not shut_out'));
  const third = await deployModel({ apiUrl: OPENFGA_API_URL, storeName, modelFile: changedFile });
  t.equal(third.written, true, 'changed content is written');
  t.equal(third.storeId, first.storeId);
  t.not(third.modelId, first.modelId);

  const commentOnly = join(dir, 'comment.fga');
  writeFileSync(commentOnly, `# a new comment\n${readFileSync(changedFile, 'utf8')}`);
  const fourth = await deployModel({ apiUrl: OPENFGA_API_URL, storeName, modelFile: commentOnly });
  t.same(fourth, { storeId: first.storeId, modelId: third.modelId, written: false }, 'a comment is not a change');

  const back = await deployModel({ apiUrl: OPENFGA_API_URL, storeName });
  t.equal(back.written, true, 'going back to the original content writes it again as the newest');
});

function loadModelPath(): string {
  return join(import.meta.dirname, '..', '..', 'policies', 'model.fga');
}

import t from 'tap';
import { loadRouteRules } from '../../policies/src/routes.ts';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { DEFAULT_MODEL_FILE, resolveStore } from '../../policies/src/model.ts';
import { OPENFGA_API_URL, deleteStore, uniqueStoreName } from './helpers.ts';

const ROOT = resolve(import.meta.dirname, '../..');
const storeName = uniqueStoreName('cli');
const cli = (...args: string[]) => {
  const r = spawnSync(process.execPath, ['policies/src/cli.ts', ...args], {
    cwd: ROOT,
    encoding: 'utf8',
    env: { ...process.env, OPENFGA_API_URL, OPENFGA_STORE_NAME: storeName },
  });
  return { code: r.status, out: r.stdout, err: r.stderr };
};
t.teardown(async () => deleteStore(await resolveStore(OPENFGA_API_URL, storeName).catch(() => undefined)));

t.test('validate', async (t) => {
  const r = cli('validate');
  t.equal(r.code, 0, r.err);
  t.match(r.out, new RegExp(`ok: 8 types .* ${loadRouteRules().length} route rules`));
  const dir = mkdtempSync(join(tmpdir(), 'policies-cli-'));
  const routes = join(dir, 'routes.yaml');
  writeFileSync(routes, 'version: 1\nroutes:\n  - { method: GET, path: "/x/{id}", relation: can_fly, object: "work:{id}" }\n');
  const bad = cli('validate', '--routes', routes);
  t.equal(bad.code, 1);
  t.match(bad.err, /routes\[0\] \(GET \/x\/\{id\}\): type "work" has no relation "can_fly"/);
});

t.test('deploy, diff, models, rollback', async (t) => {
  t.match(cli('diff').err, /no OpenFGA store named/);
  const d1 = cli('deploy');
  t.equal(d1.code, 0, d1.err);
  const first = /model (\S+) \(written\)/.exec(d1.out)?.[1];
  t.ok(first, d1.out);
  t.match(cli('deploy').out, new RegExp(`model ${first} \\(unchanged\\)`));
  t.match(cli('diff', '--exit-code').out, /no changes/);

  const dir = mkdtempSync(join(tmpdir(), 'policies-cli-'));
  const changed = join(dir, 'model.fga');
  writeFileSync(changed, readFileSync(DEFAULT_MODEL_FILE, 'utf8').replace('define audit_read: (grant_audit_read or admin) but not shut_out', 'define audit_read: (grant_audit_read or manager) but not shut_out'));
  const diff = cli('diff', '--model', changed, '--exit-code');
  t.equal(diff.code, 1);
  t.match(diff.out, /^-\s+define audit_read: \(grant_audit_read or admin\) but not shut_out$/m);
  t.match(diff.out, /^\+\s+define audit_read: \(grant_audit_read or manager\) but not shut_out$/m);
  t.equal(diff.out.split('\n').filter((l) => /^[-+] /.test(l)).length, 2, 'only the changed line differs');

  const second = /model (\S+) \(written\)/.exec(cli('deploy', '--model', changed).out)?.[1];
  t.ok(second);
  const models = cli('models').out.trim().split('\n');
  t.equal(models.length, 2);
  t.match(models[0], new RegExp(`^${second}  \\d{4}-\\d\\d-\\d\\dT.*\\(latest\\)$`));
  t.match(models[1], new RegExp(`^${first}  `));

  const rb = cli('rollback', first!);
  t.equal(rb.code, 0, rb.err);
  const third = /model (\S+) \(content of/.exec(rb.out)?.[1];
  t.ok(third && third !== first && third !== second, rb.out);
  t.match(cli('diff', '--exit-code').out, /no changes/, 'the rolled-back content equals the local model again');
  t.match(cli('rollback', first!).out, /nothing written/);
  t.equal(cli('rollback', '01ARZ3NDEKTSV4RRFFQ69G5FAV').code, 1);
});

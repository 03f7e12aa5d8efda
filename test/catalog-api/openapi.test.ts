/**
 * The OpenAPI document as app developers meet it: up to date with the routes (docs/openapi.json and
 * the typed client's types are regenerated and compared), every operation with an operationId, a
 * summary, a description, a tag the document defines, a security requirement and its error
 * responses, `servers` naming the sidecar — and Spectral's standard OpenAPI ruleset
 * (`spectral:oas`, .spectral.yaml) reporting no error and no warning.
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { DOCUMENT_FILE, TYPES_FILE, renderOpenApi } from '../../scripts/openapi.ts';

const ROOT = resolve(import.meta.dirname, '../..');

t.test('docs/openapi.json and test/support/catalog-api.d.ts match the routes (run `npm run openapi`)', async (t) => {
  const { json, types } = await renderOpenApi();
  t.equal(readFileSync(DOCUMENT_FILE, 'utf8'), json, 'the document');
  t.equal(readFileSync(TYPES_FILE, 'utf8'), types, 'the typed client types');
});

t.test('every operation is documented for app developers', async (t) => {
  const doc = JSON.parse(readFileSync(DOCUMENT_FILE, 'utf8'));
  const tags = new Set((doc.tags as { name: string }[]).map((x) => x.name));
  t.match(doc.servers, [{ url: /^https?:\/\//, description: /sidecar/ }], 'servers names the sidecar');
  const ids = new Set<string>();
  let operations = 0;
  for (const [path, item] of Object.entries<Record<string, any>>(doc.paths)) {
    for (const [method, op] of Object.entries<any>(item)) {
      operations++;
      const name = `${method.toUpperCase()} ${path}`;
      t.match(op.operationId, /^[a-z][A-Za-z]+$/, `${name}: operationId`);
      t.notOk(ids.has(op.operationId), `${name}: operationId unique`);
      ids.add(op.operationId);
      t.ok(op.summary && op.description, `${name}: summary and description`);
      t.ok(op.tags?.length && op.tags.every((tag: string) => tags.has(tag)), `${name}: tags defined in the document`);
      t.ok(Array.isArray(op.security ?? doc.security), `${name}: security requirement (global or its own)`);
      t.ok(Object.keys(op.responses).some((s) => /^[45]\d\d$/.test(s)), `${name}: error responses`);
    }
  }
  t.ok(operations >= 70, `${operations} operations`);
});

t.test("Spectral's standard OpenAPI ruleset: no errors, no warnings", async (t) => {
  const r = spawnSync(process.execPath, [resolve(ROOT, 'node_modules/@stoplight/spectral-cli/dist/index.js'), 'lint', DOCUMENT_FILE, '--ruleset', resolve(ROOT, '.spectral.yaml'), '--format', 'json', '--fail-severity', 'hint'], {
    cwd: ROOT,
    encoding: 'utf8',
    timeout: 120_000,
  });
  const json = r.stdout.slice(r.stdout.indexOf('['), r.stdout.lastIndexOf(']') + 1);
  const results = JSON.parse(json || '[]') as { code: string; message: string; path: string[] }[];
  t.same(results.map((x) => `${x.code}: ${x.message} at ${x.path.join('.')}`), [], 'no findings at any severity');
  t.equal(r.status, 0, r.stderr);
});

import t from 'tap';
import { copyFileSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_MODEL_FILE } from '../../policies/src/model.ts';
import { findFgaBinary, findTestFiles, runModelTests } from '../../policies/src/fga-cli.ts';
import { OUTPUT, renderTests } from '../../policies/tests/generate.ts';

t.test('the generated model tests are up to date', async (t) => {
  t.equal(readFileSync(OUTPUT, 'utf8'), renderTests(), 'run `node policies/tests/generate.ts`');
});

t.test('fga model test passes on policies/tests/*.fga.yaml', async (t) => {
  // No skip: a missing binary fails here with findFgaBinary's message (how to build it).
  const files = findTestFiles();
  t.ok(files.length >= 1, 'there are model test files');
  for (const r of await runModelTests(files)) {
    t.equal(r.code, 0, `${r.file}\n${r.output}`);
    t.match(r.output, /Checks (\d+)\/\1 passing/);
  }
});

t.test('a wrong expectation makes fga model test fail', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'policies-fga-'));
  copyFileSync(DEFAULT_MODEL_FILE, join(dir, 'model.fga'));
  const file = join(dir, 'wrong.fga.yaml');
  writeFileSync(
    file,
    [
      'model_file: ./model.fga',
      'tuples:',
      '  - { user: "user:v", relation: viewer, object: "publisher:p" }',
      'tests:',
      '  - name: a viewer may not invite members',
      '    check:',
      '      - user: user:v',
      '        object: publisher:p',
      '        assertions: { members_invite: true }',
      '',
    ].join('\n'),
  );
  const [r] = await runModelTests([file]);
  t.not(r!.code, 0, r!.output);
  t.match(r!.output, /FAILING/);
});

t.test('a missing fga binary is a clear error', async (t) => {
  t.throws(() => findFgaBinary('/nonexistent/fga', ''), { message: /OpenFGA CLI not found at \/nonexistent\/fga nor on PATH: build it with/ });
});

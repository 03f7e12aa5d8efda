import t from 'tap';
import { copyFileSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_MODEL_FILE } from '../../policies/src/model.ts';
import { findFgaBinary, findTestFiles, runModelTests } from '../../policies/src/fga-cli.ts';
import { spawnSync } from 'node:child_process';
import { OUTPUTS } from '../../policies/tests/generate.ts';

const GENERATOR = new URL('../../policies/tests/generate.ts', import.meta.url).pathname;

t.test('the generated model tests are up to date', async (t) => {
  // In a child process: tap's own YAML set-up (tap-yaml) changes how the `yaml` package quotes
  // timestamps inside this process, so the comparison runs where the generator normally runs.
  const child = spawnSync(process.execPath, [GENERATOR, '--check'], { encoding: 'utf8' });
  t.equal(child.status, 0, `${child.stdout}${child.stderr}run \`node policies/tests/generate.ts\``);
  for (const file of Object.values(OUTPUTS)) t.match(child.stdout, `${file} is up to date`);
});

t.test('fga model test passes on policies/tests/*.fga.yaml', async (t) => {
  // No skip: a missing binary fails here with findFgaBinary's message (how to build it).
  const files = findTestFiles();
  t.ok(files.length >= 2, 'there are model test files (the generated two at least)');
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

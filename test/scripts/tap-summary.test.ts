/**
 * `npm test`'s closing lines (scripts/tap-summary.ts): the counts CI reads, and each failed test by
 * its full name with where it failed, innermost only, so a failure deep in a long log is named at
 * its end — also a file that timed out or crashed.
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { counts, failures } from '../../scripts/tap-summary.ts';

const SCRIPT = resolve(import.meta.dirname, '../../scripts/tap-summary.ts');

// What tap 21 writes for a failed assertion in a nested subtest, a passing file, a failed t.equal
// (a diff, no found/wanted) and a file that timed out.
const LOG = [
  'TAP version 14',
  '# Subtest: test/a.test.ts',
  '    # Subtest: group one',
  '        ok 1 - fine',
  '        not ok 2 - should be equal',
  '          ---',
  '          found: 3',
  '          wanted: 4',
  '          at:',
  '            fileName: test/a.test.ts',
  '            lineNumber: 12',
  '          ...',
  '        1..2',
  '    not ok 1 - group one # time=3ms',
  '    1..1',
  'not ok 1 - test/a.test.ts # time=10ms',
  '# Subtest: test/b.test.ts',
  '    ok 1 - b fine',
  '    1..1',
  'ok 2 - test/b.test.ts',
  '# Subtest: test/d.test.ts',
  '    not ok 1 - a member is allowed',
  '      ---',
  '      compare: ===',
  '      at:',
  '        fileName: test/d.test.ts',
  '        lineNumber: 7',
  '      diff: |',
  '        --- expected',
  '        +++ actual',
  '        @@ -1,1 +1,1 @@',
  '        -200',
  '        +503',
  '      ...',
  '    1..1',
  'not ok 3 - test/d.test.ts',
  '# Subtest: test/c.test.ts',
  '    not ok 1 - timeout!',
  '      ---',
  '      signal: SIGALRM',
  '      ...',
  '    1..1',
  'not ok 4 - test/c.test.ts',
  '1..4',
  '# { total: 6, pass: 2, fail: 4 }',
  '',
].join('\n');

t.test('failures: innermost failed test points by full name, with what was found and where', async (t) => {
  t.same(failures(LOG), [
    { name: 'test/a.test.ts > group one > should be equal', detail: 'found: 3; wanted: 4; at: test/a.test.ts:12' },
    { name: 'test/d.test.ts > a member is allowed', detail: 'diff: -200 +503; at: test/d.test.ts:7' },
    { name: 'test/c.test.ts > timeout!', detail: '' },
  ]);
  t.same(failures(LOG.replace(/not ok 2 - should be equal/, 'ok 2 - should be equal').replace(/not ok (\d) - (group one|test\/a)/g, 'ok $1 - $2')).map((f) => f.name), ['test/d.test.ts > a member is allowed', 'test/c.test.ts > timeout!']);
});

t.test('counts: from the last summary line; none without one', async (t) => {
  t.same(counts(LOG), { pass: 2, fail: 4, skipped: 0 });
  t.same(counts('# { total: 9, pass: 7, fail: 0, skip: 1, todo: 1 }\n'), { pass: 7, fail: 0, skipped: 2 });
  t.equal(counts('ok 1 - x\n'), null);
});

t.test('the script: failures listed before the counts line, which stays last; exit 1 without a summary', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tap-summary-'));
  const file = join(dir, 'tap.log');
  writeFileSync(file, LOG);
  const r = spawnSync(process.execPath, [SCRIPT, file], { encoding: 'utf8' });
  t.equal(r.status, 0, r.stderr);
  t.same(r.stdout.trimEnd().split('\n'), [
    'failed: test/a.test.ts > group one > should be equal',
    '    found: 3; wanted: 4; at: test/a.test.ts:12',
    'failed: test/d.test.ts > a member is allowed',
    '    diff: -200 +503; at: test/d.test.ts:7',
    'failed: test/c.test.ts > timeout!',
    'tests: 2 passed, 4 failed',
  ]);
  writeFileSync(file, 'ok 1 - x\n');
  const none = spawnSync(process.execPath, [SCRIPT, file], { encoding: 'utf8' });
  t.equal(none.status, 1);
  t.match(none.stderr, /no tap summary line/);
});

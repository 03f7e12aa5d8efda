/**
 * The coverage gate of `npm test` (scripts/coverage.ts, issue 9 §6) on a throw-away checkout: real
 * V8 coverage of .ts files that Node ran with type stripping, turned into lines by c8 — the lines
 * of a function that never ran are the uncovered ones (type stripping keeps positions, so no source
 * map is needed), a file no test loaded counts with all its lines, declaration files and
 * policies/tests/ do not count, and `--check` fails a folder under the minimum, naming its files.
 */
import t, { type Test } from 'tap';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { Report } from 'c8';
import { failures, folderCoverage, formatPct, formatReport, measure, type FolderCoverage } from '../../scripts/coverage.ts';

const ROOT = resolve(import.meta.dirname, '../..');

// sidecar/src/typed.ts: types on most lines; `unused` (lines 8–12) never runs.
const TYPED = [
  "import type { IncomingMessage } from 'node:http';", // 1
  'type Shape = { n: number; label?: string };', // 2
  'interface Named { name: string }', // 3
  'export function used(x: Shape, _m?: IncomingMessage): number {', // 4
  '  const y: number = x.n as number;', // 5
  '  return y + 1;', // 6
  '}', // 7
  'export function unused(x: Shape & Named): string {', // 8
  '  const parts: string[] = [x.name];', // 9
  '  if (x.label !== undefined) parts.push(x.label satisfies string);', // 10
  "  return parts.join(',');", // 11
  '}', // 12
  'used({ n: 1 });', // 13
  '',
].join('\n');

function writeFile(root: string, rel: string, text: string): void {
  mkdirSync(dirname(join(root, rel)), { recursive: true });
  writeFileSync(join(root, rel), text);
}

/**
 * A checkout with the three folders, some of its files run by Node with V8 coverage written to its
 * `.tap/coverage` (tap's own recorder is switched off in those children: one recorder per process).
 */
function checkout(t: Test): string {
  const root = mkdtempSync(join(tmpdir(), 'coverage-gate-'));
  writeFile(root, 'sidecar/src/typed.ts', TYPED);
  writeFile(root, 'sidecar/src/never.ts', 'export const a = 1;\n// a comment counts too\nexport function f(): number {\n  return a;\n}\n'); // 5 lines, never loaded
  writeFile(root, 'sidecar/src/shapes.d.ts', 'export type X = { a: number };\nexport declare const y: number;\n');
  writeFile(root, 'catalog-api/src/ok.ts', 'export const ok: boolean = true;\nconsole.log(ok);\n');
  writeFile(root, 'policies/src/ok.ts', 'export const ok: number = 1;\n');
  writeFile(root, 'policies/tests/generate.ts', 'export function gen(): void {\n  throw new Error("never");\n}\n'); // test code: never counted
  writeFile(root, 'scripts/tool.ts', 'export function tool(): void {\n  return;\n}\n'); // outside the folders
  const env = { ...process.env, NODE_V8_COVERAGE: join(root, '.tap/coverage'), _TAPJS_PROCESSINFO_COVERAGE_: '0' };
  for (const file of ['sidecar/src/typed.ts', 'catalog-api/src/ok.ts', 'policies/src/ok.ts', 'scripts/tool.ts', 'policies/tests/generate.ts']) {
    const r = spawnSync(process.execPath, [join(root, file)], { cwd: root, env, encoding: 'utf8' });
    t.equal(r.status, 0, `${file}: ${r.stderr}`);
  }
  return root;
}

t.test('type-stripped .ts lines map to their own lines: exactly the body of the function that never ran is uncovered', async (t) => {
  const root = checkout(t);
  const cwd = process.cwd();
  process.chdir(root);
  try {
    await new Report({ tempDirectory: join(root, '.tap/coverage'), reportsDirectory: join(root, 'report'), reporter: ['json'], include: ['sidecar/src/**'], extension: ['.ts'] }).run();
  } finally {
    process.chdir(cwd);
  }
  const final = JSON.parse(readFileSync(join(root, 'report/coverage-final.json'), 'utf8'));
  const cov = final[join(root, 'sidecar/src/typed.ts')];
  t.ok(cov, 'typed.ts has coverage');
  const uncovered = Object.entries(cov.s as Record<string, number>)
    .filter(([, n]) => n === 0)
    .map(([id]) => cov.statementMap[id].start.line as number)
    .sort((a, b) => a - b);
  t.same(uncovered, [9, 10, 11, 12], "unused()'s body and closing brace, nothing of used() or the type lines");
});

t.test('the gate sums each folder: unloaded files count, .d.ts and policies/tests/ do not', async (t) => {
  const root = checkout(t);
  const summary = await measure(root);
  const files = Object.keys(summary).filter((k) => k !== 'total').map((k) => k.slice(root.length + 1)).sort();
  t.same(files, ['catalog-api/src/ok.ts', 'policies/src/ok.ts', 'sidecar/src/never.ts', 'sidecar/src/typed.ts'], 'only .ts under <folder>/src, the unloaded one included');
  t.match(summary[join(root, 'sidecar/src/never.ts')]!.lines, { total: 5, covered: 0 }, 'never loaded: all 5 lines uncovered');
  const [sidecar, catalog, policies] = folderCoverage(summary, root);
  // typed.ts: 13 lines, 4 uncovered; never.ts: 5 lines, none covered → 9 of 18
  t.same([sidecar!.folder, sidecar!.covered, sidecar!.total], ['sidecar', 9, 18]);
  t.same(sidecar!.worst, [{ file: 'sidecar/src/never.ts', missed: 5 }, { file: 'sidecar/src/typed.ts', missed: 4 }]);
  t.same([catalog!.covered, catalog!.total, policies!.covered, policies!.total], [2, 2, 1, 1]);
});

t.test('--check: a folder under the minimum fails and names its files; --min moves the bar', async (t) => {
  const root = checkout(t);
  const run = (...args: string[]) => spawnSync(process.execPath, [join(ROOT, 'scripts/coverage.ts'), '--root', root, ...args], { encoding: 'utf8' });
  const failing = run('--check');
  t.equal(failing.status, 1, failing.stderr);
  t.match(failing.stdout, 'coverage (lines): sidecar/ 50.0 % (9/18), catalog-api/ 100.0 % (2/2), policies/ 100.0 % (1/1); minimum 90 %');
  t.match(failing.stderr, 'coverage: sidecar/ covers 50.0 % of its lines, under 90 %; most lines missed: sidecar/src/never.ts (5), sidecar/src/typed.ts (4)');
  t.notMatch(failing.stderr, /catalog-api|policies/, 'only the failing folder is named');
  const lowered = run('--check', '--min', '50');
  t.equal(lowered.status, 0, lowered.stderr);
  t.match(lowered.stdout, 'minimum 50 %');
  const unchecked = run();
  t.equal(unchecked.status, 0, 'without --check the figures are only printed');
  t.match(unchecked.stdout, '(not checked: only some suites ran)');
  const empty = spawnSync(process.execPath, [join(ROOT, 'scripts/coverage.ts'), '--check', '--root', mkdtempSync(join(tmpdir(), 'coverage-none-'))], { encoding: 'utf8' });
  t.equal(empty.status, 1, 'no coverage recorded fails');
  t.match(empty.stderr, /no coverage in .*\.tap\/coverage/);
});

t.test('figures round down, so 89.96 % is not a pass', async (t) => {
  t.equal(formatPct(89.96), '89.9 %');
  t.equal(formatPct(90), '90.0 %');
  const folder = (pct: number): FolderCoverage => ({ folder: 'policies', total: 10_000, covered: pct * 100, pct, worst: [{ file: 'policies/src/x.ts', missed: 10_000 - pct * 100 }] });
  t.equal(failures([folder(89.96)]).length, 1, '89.96 fails');
  t.equal(failures([folder(90)]).length, 0, '90 passes');
  t.equal(formatReport([folder(89.96)], 90), 'coverage (lines): policies/ 89.9 % (8996/10000); minimum 90 %');
});

/**
 * The coverage gate of `npm test`: line coverage of sidecar/, catalog-api/ and policies/, each on its
 * own. tap 21 records V8 coverage with @tapjs/processinfo in every test process and in the processes
 * they spawn (sidecars, catalog APIs, CLIs) into `.tap/coverage/`; Node runs the .ts files with type
 * stripping, which blanks the types in place, so V8's offsets are offsets into the .ts files and c8
 * maps them to their lines without source maps. This script has c8 (its `Report`, as `tap report`
 * uses it) add the files no test loaded (`all`), writes the json-summary of the measured files to
 * `.tap/report/folders/`, and sums it per folder.
 *
 * Usage: `node scripts/coverage.ts [--check] [--min N] [--root DIR]`. Prints one line with the three
 * figures; with `--check` it exits 1 when any folder is under N % of its lines (default
 * {@link MIN_LINES_PCT}) and names the files that miss the most lines. Exit 1 also when tap wrote
 * no coverage. `--root` measures another checkout (its `.tap/coverage`; the tests use it).
 *
 * What counts: every `.ts` file under `<folder>/src` except declaration files; lines are c8's (every
 * line of a file, blank and comment lines included, minus `c8 ignore` regions). Not counted:
 * `policies/tests/` (test code: the generator of the OpenFGA model tests) and everything outside
 * the three folders (test/, bench/, scripts/, migrations/ are not part of the measured products).
 */
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Report } from 'c8';

/** The folders whose line coverage is measured and gated, each on its own. */
export const MEASURED_FOLDERS = ['sidecar', 'catalog-api', 'policies'] as const;
export type MeasuredFolder = (typeof MEASURED_FOLDERS)[number];

/** The gate: percentage of lines each folder must cover (issue 9 §6). */
export const MIN_LINES_PCT = 90;

export const ROOT = resolve(import.meta.dirname, '..');

/** One entry of istanbul's json-summary (`coverage-summary.json`), as far as we read it. */
export type SummaryEntry = { lines: { total: number; covered: number } };
/** istanbul's json-summary: absolute file path (and `total`) → its figures. */
export type CoverageSummary = Record<string, SummaryEntry>;

/** A measured folder's figures. `pct` is covered/total × 100 (100 for a folder without lines). */
export type FolderCoverage = {
  folder: MeasuredFolder;
  /** lines */
  total: number;
  covered: number;
  pct: number;
  /** the folder's files that miss lines, most missed first (paths relative to the root) */
  worst: { file: string; missed: number }[];
};

/**
 * Run c8 over tap's raw coverage: the measured files of `root` (loaded or not) → json-summary.
 * Changes the working directory to `root` while it runs (c8 matches its globs relative to it).
 * @param opts.tempDirectory tap's raw V8 coverage (default `<root>/.tap/coverage`)
 * @param opts.reportsDirectory where the json-summary goes (default `<root>/.tap/report/folders`)
 * @returns the summary, keyed by absolute path
 * @throws Error when tempDirectory has no coverage file
 */
export async function measure(
  root: string = ROOT,
  opts: { tempDirectory?: string; reportsDirectory?: string } = {},
): Promise<CoverageSummary> {
  const tempDirectory = opts.tempDirectory ?? join(root, '.tap/coverage');
  const reportsDirectory = opts.reportsDirectory ?? join(root, '.tap/report/folders');
  if (!existsSync(tempDirectory) || readdirSync(tempDirectory).length === 0) {
    throw new Error(`no coverage in ${tempDirectory}: tap ran without coverage, or no test ran`);
  }
  const cwd = process.cwd();
  process.chdir(root);
  try {
    await new Report({
      tempDirectory,
      reportsDirectory,
      reporter: ['json-summary'],
      all: true,
      src: [root], // c8 matches `include` relative to each src folder
      include: MEASURED_FOLDERS.map((f) => `${f}/src/**`),
      exclude: ['**/*.d.ts'],
      extension: ['.ts'],
      excludeNodeModules: true,
    }).run();
  } finally {
    process.chdir(cwd);
  }
  return JSON.parse(readFileSync(join(reportsDirectory, 'coverage-summary.json'), 'utf8')) as CoverageSummary;
}

/**
 * Sum a summary per measured folder: a file counts for `<folder>/` when its path is under
 * `<root>/<folder>/src/` and it is not a declaration file.
 */
export function folderCoverage(summary: CoverageSummary, root: string = ROOT): FolderCoverage[] {
  return MEASURED_FOLDERS.map((folder) => {
    const prefix = join(root, folder, 'src') + '/';
    let total = 0;
    let covered = 0;
    const worst: FolderCoverage['worst'] = [];
    for (const [file, entry] of Object.entries(summary)) {
      if (!file.startsWith(prefix) || !file.endsWith('.ts') || file.endsWith('.d.ts')) continue;
      total += entry.lines.total;
      covered += entry.lines.covered;
      const missed = entry.lines.total - entry.lines.covered;
      if (missed > 0) worst.push({ file: file.slice(root.length + 1), missed });
    }
    worst.sort((a, b) => b.missed - a.missed || a.file.localeCompare(b.file));
    return { folder, total, covered, pct: total === 0 ? 100 : (covered / total) * 100, worst };
  });
}

/** `93.4 %`: rounded down to one decimal, so 89.96 prints as 89.9 and not as a passing 90.0. */
export function formatPct(pct: number): string {
  return `${(Math.floor(pct * 10) / 10).toFixed(1)} %`;
}

/** The one-line report: `coverage (lines): sidecar/ 93.4 % (2851/3052), …; minimum 90 %`. */
export function formatReport(folders: FolderCoverage[], minPct: number = MIN_LINES_PCT): string {
  const parts = folders.map((f) => `${f.folder}/ ${formatPct(f.pct)} (${f.covered}/${f.total})`);
  return `coverage (lines): ${parts.join(', ')}; minimum ${minPct} %`;
}

/** One message per folder under `minPct`, naming its five files that miss the most lines. */
export function failures(folders: FolderCoverage[], minPct: number = MIN_LINES_PCT): string[] {
  return folders
    .filter((f) => f.pct < minPct)
    .map((f) => {
      const worst = f.worst.slice(0, 5).map((w) => `${w.file} (${w.missed})`).join(', ');
      return `coverage: ${f.folder}/ covers ${formatPct(f.pct)} of its lines, under ${minPct} %; most lines missed: ${worst}`;
    });
}

async function main(argv: string[]): Promise<number> {
  let check = false;
  let minPct = MIN_LINES_PCT;
  let root = ROOT;
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--check') check = true;
    else if (argv[i] === '--min') minPct = Number(argv[++i]);
    else if (argv[i] === '--root' && argv[i + 1]) root = resolve(argv[++i]!);
    else {
      console.error(`usage: node scripts/coverage.ts [--check] [--min N] [--root DIR] (unknown argument ${argv[i]})`);
      return 2;
    }
  }
  if (!Number.isFinite(minPct)) {
    console.error('coverage: --min takes a number');
    return 2;
  }
  let summary: CoverageSummary;
  try {
    summary = await measure(root);
  } catch (err) {
    console.error(`coverage: ${(err as Error).message}`);
    return 1;
  }
  const folders = folderCoverage(summary, root);
  console.log(formatReport(folders, minPct) + (check ? '' : ' (not checked: only some suites ran)'));
  if (!check) return 0;
  const failed = failures(folders, minPct);
  for (const line of failed) console.error(line);
  return failed.length ? 1 : 0;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) process.exitCode = await main(process.argv.slice(2));

/**
 * Print tap's closing counts as the plain line `N passed, N failed` (with `, N skipped` when
 * any), which CI reads, and before it each failed test by its full name with where it failed: CI
 * shows the end of the output, and a failure deep in a long log must still be named there.
 * Input: the tap log file; tap's last summary line looks like `# { total: 12, pass: 11, fail: 1 }`.
 * Exit 1 when no summary is found.
 */
import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { Parser, type Result } from 'tap-parser';

/** One failed test point: `file > subtest > assertion`, and where or why it failed (may be empty). */
export interface Failure {
  name: string;
  detail: string;
}

/** The diagnostic fields worth a line each in a summary, in this order. */
const DETAIL_KEYS = ['message', 'found', 'wanted', 'pattern', 'diff', 'at'] as const;

/** A parser's own error (a malformed stream, an unfinished test) as opposed to a failed test point. */
function isTapError(f: Result | { tapError: string }): f is { tapError: string } {
  return typeof (f as { tapError?: unknown }).tapError === 'string';
}

function detailOf(result: Result | { tapError: string }): string {
  if (isTapError(result)) return result.tapError;
  const diag = (result.diag ?? {}) as Record<string, unknown>;
  const parts: string[] = [];
  for (const key of DETAIL_KEYS) {
    let value = diag[key];
    if (value === undefined) continue;
    if (key === 'diff' && typeof value === 'string') {
      // tap's unified diff of expected vs actual: its -/+ lines are what matters
      value = value.split('\n').filter((l) => /^[-+](?![-+]{2} )/.test(l)).join(' ');
    } else if (key === 'at' && typeof value === 'object' && value !== null) {
      const at = value as { fileName?: string; lineNumber?: number };
      value = `${at.fileName ?? '?'}:${at.lineNumber ?? '?'}`;
    }
    const text = typeof value === 'string' ? value : JSON.stringify(value);
    parts.push(`${key}: ${text.length > 200 ? `${text.slice(0, 200)}…` : text}`);
  }
  return parts.join('; ');
}

/**
 * The failed test points of a TAP log (parsed with tap-parser), innermost only: a subtest that
 * failed because an assertion in it failed is named by that assertion, not again on its own.
 * A failure that is not an assertion (a timeout, a crash, an unfinished test) keeps tap's reason.
 */
export function failures(log: string): Failure[] {
  const found: Failure[] = [];
  const watch = (parser: Parser): void => {
    parser.on('child', watch);
    parser.on('assert', (result: Result) => {
      if (!result.ok && !result.todo && !result.skip) found.push({ name: result.fullname || result.name, detail: detailOf(result) });
    });
    parser.on('complete', () => {
      for (const f of parser.failures) if (isTapError(f)) found.push({ name: parser.fullname || '(tap)', detail: detailOf(f) });
    });
  };
  const root = new Parser();
  watch(root);
  root.end(log);
  return found.filter((f) => !found.some((g) => g !== f && g.name.startsWith(`${f.name} > `)));
}

/** tap's closing counts from its last `# { total: … }` line, or null when the log has none. */
export function counts(log: string): { pass: number; fail: number; skipped: number } | null {
  const line = log.split('\n').reverse().find((l) => /^# \{ total: \d+/.test(l));
  if (!line) return null;
  const count = (name: string): number => Number(new RegExp(`${name}: (\\d+)`).exec(line)?.[1] ?? 0);
  return { pass: count('pass'), fail: count('fail'), skipped: count('skip') + count('todo') };
}

/** At most this many failures are listed; the rest are counted. */
const MAX_LISTED = 30;

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const log = readFileSync(process.argv[2] ?? '/dev/stdin', 'utf8');
  const c = counts(log);
  if (!c) {
    console.error('tap-summary: no tap summary line found');
    process.exit(1);
  }
  const failed = c.fail ? failures(log) : [];
  for (const f of failed.slice(0, MAX_LISTED)) console.log(`failed: ${f.name}${f.detail ? `\n    ${f.detail}` : ''}`);
  if (failed.length > MAX_LISTED) console.log(`failed: … and ${failed.length - MAX_LISTED} more (see the log above)`);
  console.log(`tests: ${c.pass} passed, ${c.fail} failed${c.skipped ? `, ${c.skipped} skipped` : ''}`);
}

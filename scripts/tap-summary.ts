/**
 * Print tap's closing counts as the plain line `N passed, N failed` (with `, N skipped` when
 * any), which CI reads. Input: the tap log file; tap's last summary line looks like
 * `# { total: 12, pass: 11, fail: 1, skip: 0 }`. Exit 1 when no summary is found.
 */
import { readFileSync } from 'node:fs';

const log = readFileSync(process.argv[2] ?? '/dev/stdin', 'utf8');
const line = log.split('\n').reverse().find((l) => /^# \{ total: \d+/.test(l));
if (!line) {
  console.error('tap-summary: no tap summary line found');
  process.exit(1);
}
const count = (name: string): number => Number(new RegExp(`${name}: (\\d+)`).exec(line)?.[1] ?? 0);
const skipped = count('skip') + count('todo');
console.log(`tests: ${count('pass')} passed, ${count('fail')} failed${skipped ? `, ${skipped} skipped` : ''}`);

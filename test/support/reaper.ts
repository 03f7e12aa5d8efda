/**
 * A reaper for suites that start long-lived processes: a small detached Node process that records
 * this process's children (Linux /proc, every 250 ms and on `scan()`) and, when this process dies
 * — noticed by the end of its stdin pipe, which the kernel closes on any death, SIGKILL included —
 * SIGKILLs every recorded child still running (same pid and start time, so a reused pid is spared).
 * A clean teardown stops the children itself and then calls `close()`, which ends the reaper without
 * killing: its last scan may have recorded a process started since, by the next stack.
 */
import { spawn, type ChildProcess } from 'node:child_process';

const REAPER = `
const { readdirSync, readFileSync } = require('node:fs');
const parent = Number(process.argv[1]);
const seen = new Map();
const startOf = (pid) => { try { const s = readFileSync('/proc/' + pid + '/stat', 'utf8'); return s.slice(s.lastIndexOf(')') + 2).split(' '); } catch { return null; } };
const scan = () => {
  for (const d of readdirSync('/proc')) {
    if (!/^[0-9]+$/.test(d) || Number(d) === process.pid) continue;
    const f = startOf(d);
    if (f && Number(f[1]) === parent) seen.set(Number(d), f[19]);
  }
};
const timer = setInterval(scan, 250);
scan();
// 'exit': a clean teardown stopped the children itself; a child started since (another stack) is not ours to kill
process.stdin.on('data', (d) => (String(d).includes('exit') ? process.exit(0) : scan()));
process.stdin.on('close', () => {
  clearInterval(timer);
  for (const [pid, start] of seen) { const f = startOf(pid); if (f && f[19] === start) { try { process.kill(pid, 'SIGKILL'); } catch {} } }
  process.exit(0);
});
process.stdin.resume();
`;

/**
 * Start the reaper of this process's children.
 * @returns `scan()` (record the children now: call it after starting some) and `close()` (the
 *   reaper exits without killing — call it after every child has been stopped)
 */
export function startReaper(): { scan: () => void; close: () => void } {
  const { NODE_V8_COVERAGE: _, ...rest } = process.env;
  const child: ChildProcess = spawn(process.execPath, ['-e', REAPER, String(process.pid)], { stdio: ['pipe', 'ignore', 'ignore'], detached: true, env: rest });
  child.unref();
  const stdin = child.stdin!;
  (stdin as unknown as { unref?: () => void }).unref?.();
  stdin.on('error', () => undefined);
  return { scan: () => stdin.write('\n'), close: () => stdin.end('exit\n') };
}


/**
 * Summarise V8 CPU profiles (`.cpuprofile`, written by `node --cpu-prof`; format: Chrome DevTools
 * Protocol `Profiler.Profile` — nodes with `callFrame`, `samples` + `timeDeltas` in µs): self time
 * by module (a package under node_modules, one of our files, a `node:` internal, or V8's own
 * `(garbage collector)`, `(program)`, `(idle)`) and by function, largest first, as Markdown tables.
 * Idle time is left out of the percentages, so they are shares of the CPU the process actually used.
 *
 *   node bench/profile-summary.ts <file.cpuprofile | directory> [--top N]
 *
 * With a directory every `.cpuprofile` in it is summarised on its own (one per process).
 * Usage with the sidecar bench: `BENCH_SIDECAR_NODE_ARGS='--cpu-prof --cpu-prof-dir=/tmp/prof'
 * npm run bench -- sidecar`, then `node bench/profile-summary.ts /tmp/prof`.
 */
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

type CallFrame = { functionName: string; url: string; lineNumber: number };
type ProfileNode = { id: number; callFrame: CallFrame; children?: number[] };
/** The profile as `--cpu-prof` writes it (times in µs). */
type CpuProfile = { nodes: ProfileNode[]; samples: number[]; timeDeltas: number[]; startTime: number; endTime: number };

const ROOT = resolve(import.meta.dirname, '..');

/**
 * The module a call frame belongs to: `<package>` for node_modules (scoped: `@scope/name`),
 * the path relative to the repository for our files, `node:<area>` for Node internals, or the
 * V8 pseudo-frame name (`(garbage collector)` …) when there is no URL.
 */
export function moduleOf(frame: CallFrame): string {
  const url = frame.url;
  if (!url) return frame.functionName.startsWith('(') ? frame.functionName : '(native)';
  if (url.startsWith('node:')) return `node:${url.slice(5).split('/').slice(0, 2).join('/')}`;
  const path = url.startsWith('file://') ? fileURLToPath(url) : url;
  const nm = path.lastIndexOf('/node_modules/');
  if (nm >= 0) {
    const parts = path.slice(nm + 14).split('/');
    return parts[0]!.startsWith('@') ? `${parts[0]}/${parts[1]}` : parts[0]!;
  }
  return path.startsWith(ROOT) ? relative(ROOT, path) : path;
}

/**
 * Self time (µs) per module and per function of one profile.
 * @returns totals without idle, and two maps key → µs
 */
export function selfTimes(p: CpuProfile): { busyUs: number; wallUs: number; byModule: Map<string, number>; byFunction: Map<string, number> } {
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const self = new Map<number, number>();
  for (let i = 0; i < p.samples.length; i++) self.set(p.samples[i]!, (self.get(p.samples[i]!) ?? 0) + (p.timeDeltas[i] ?? 0));
  const byModule = new Map<string, number>();
  const byFunction = new Map<string, number>();
  let busyUs = 0;
  for (const [id, us] of self) {
    const f = byId.get(id)!.callFrame;
    if (f.functionName === '(idle)') continue;
    busyUs += us;
    const mod = moduleOf(f);
    byModule.set(mod, (byModule.get(mod) ?? 0) + us);
    const fn = `${f.functionName || '(anonymous)'} ${mod}${f.url ? `:${f.lineNumber + 1}` : ''}`;
    byFunction.set(fn, (byFunction.get(fn) ?? 0) + us);
  }
  return { busyUs, wallUs: p.endTime - p.startTime, byModule, byFunction };
}

function table(title: string, m: Map<string, number>, busyUs: number, top: number): string {
  const rows = [...m].sort((a, b) => b[1] - a[1]).slice(0, top);
  return [`| ${title} | self ms | share of busy |`, '| --- | ---: | ---: |', ...rows.map(([k, us]) => `| ${k.replaceAll('|', '\\|')} | ${(us / 1000).toFixed(0)} | ${((100 * us) / busyUs).toFixed(1)} % |`)].join('\n');
}

/** Markdown summary of one profile file. */
export function summarise(file: string, top = 25): string {
  const s = selfTimes(JSON.parse(readFileSync(file, 'utf8')) as CpuProfile);
  return [
    `### ${file}`,
    `busy ${(s.busyUs / 1000).toFixed(0)} ms of ${(s.wallUs / 1000).toFixed(0)} ms wall`,
    '',
    table('module', s.byModule, s.busyUs, top),
    '',
    table('function', s.byFunction, s.busyUs, top),
    '',
  ].join('\n');
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2);
  const topAt = args.indexOf('--top');
  const top = topAt >= 0 ? Number(args.splice(topAt, 2)[1]) : 25;
  if (args.length === 0) {
    process.stderr.write('usage: node bench/profile-summary.ts <file.cpuprofile | directory> [--top N]\n');
    process.exit(2);
  }
  for (const a of args) {
    const files = statSync(a).isDirectory() ? readdirSync(a).filter((f) => f.endsWith('.cpuprofile')).sort().map((f) => join(a, f)) : [a];
    for (const f of files) process.stdout.write(`${summarise(f, top)}\n`);
  }
}

/**
 * Summarise V8 CPU profiles (`.cpuprofile`, written by `node --cpu-prof`; format: Chrome DevTools
 * Protocol `Profiler.Profile` — nodes with `callFrame`, `samples` + `timeDeltas` in µs): self time
 * by module (a package under node_modules, one of our files, a `node:` internal, or V8's own
 * `(garbage collector)`, `(program)`, `(idle)`) and by function, largest first, as Markdown tables.
 * Idle time is left out of the percentages, so they are shares of the CPU the process actually used.
 *
 *   node bench/profile-summary.ts <file.cpuprofile | directory> [--top N] [--stalls MS]
 *
 * `--stalls MS` lists instead every stretch of at least MS ms in which the main thread never went
 * idle (what an event-loop delay of that size was made of): its start, length, the functions with
 * the most self time in it and the stack of its first sample. A gap between two samples of at
 * least MS ms is listed too: the thread was not running (descheduled), whatever it was doing.
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

/** A call frame's row name: function, module and (for frames with a file) line. */
function functionKey(f: CallFrame): string {
  return `${f.functionName || '(anonymous)'} ${moduleOf(f)}${f.url ? `:${f.lineNumber + 1}` : ''}`;
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
    const fn = functionKey(f);
    byFunction.set(fn, (byFunction.get(fn) ?? 0) + us);
  }
  return { busyUs, wallUs: p.endTime - p.startTime, byModule, byFunction };
}

/** A busy stretch or a scheduling gap of one profile: offset from the profile's start and length (ms), what filled it. */
export type Stall = { atMs: number; ms: number; kind: 'busy' | 'gap'; top: [string, number][]; firstStack: string[] };

/**
 * The stretches of at least `minMs` ms without an idle sample, and the gaps between samples of at
 * least `minMs` ms, in time order (see the module comment).
 */
export function stalls(p: CpuProfile, minMs: number): Stall[] {
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const name = (id: number) => functionKey(byId.get(id)!.callFrame);
  const stack = (id: number) => {
    const out: string[] = [];
    for (let at: number | undefined = id; at !== undefined && out.length < 12; at = parent.get(at)) out.push(name(at));
    return out;
  };
  const found: Stall[] = [];
  let t = 0;
  let start = -1;
  let first = 0;
  let self = new Map<string, number>();
  const close = (end: number) => {
    if (start >= 0 && end - start >= minMs * 1000) {
      found.push({ atMs: start / 1000, ms: (end - start) / 1000, kind: 'busy', top: [...self].sort((a, b) => b[1] - a[1]).slice(0, 6).map(([k, us]) => [k, us / 1000]), firstStack: stack(first) });
    }
    start = -1;
    self = new Map();
  };
  for (let i = 0; i < p.samples.length; i++) {
    const delta = p.timeDeltas[i] ?? 0;
    const id = p.samples[i]!;
    if (delta >= minMs * 1000) found.push({ atMs: t / 1000, ms: delta / 1000, kind: 'gap', top: [[name(id), delta / 1000]], firstStack: stack(id) });
    t += delta;
    if (byId.get(id)!.callFrame.functionName === '(idle)') {
      close(t - delta); // a sample owns the delta before it (as in selfTimes): the stretch ended at the last busy one
      continue;
    }
    if (start < 0) {
      start = t - delta;
      first = id;
    }
    const k = name(id);
    self.set(k, (self.get(k) ?? 0) + delta);
  }
  close(t);
  return found;
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
  const stallsAt = args.indexOf('--stalls');
  const stallMs = stallsAt >= 0 ? Number(args.splice(stallsAt, 2)[1]) : undefined;
  if (args.length === 0) {
    process.stderr.write('usage: node bench/profile-summary.ts <file.cpuprofile | directory> [--top N] [--stalls MS]\n');
    process.exit(2);
  }
  for (const a of args) {
    const files = statSync(a).isDirectory() ? readdirSync(a).filter((f) => f.endsWith('.cpuprofile')).sort().map((f) => join(a, f)) : [a];
    for (const f of files) {
      if (stallMs === undefined) {
        process.stdout.write(`${summarise(f, top)}\n`);
        continue;
      }
      process.stdout.write(`### ${f}: stretches of ≥ ${stallMs} ms\n\n`);
      for (const st of stalls(JSON.parse(readFileSync(f, 'utf8')) as CpuProfile, stallMs)) {
        process.stdout.write(`- ${st.kind} at ${st.atMs.toFixed(0)} ms for ${st.ms.toFixed(1)} ms: ${st.top.map(([k, v]) => `${k} ${v.toFixed(1)}`).join('; ')}\n    first: ${st.firstStack.join(' < ')}\n`);
      }
    }
  }
}

/**
 * bench/profile-summary.ts `stalls`: on a hand-built V8 CPU profile (the `Profiler.Profile` shape
 * `--cpu-prof` writes: samples + timeDeltas in µs), busy stretches without an idle sample are found
 * from their first busy sample to the next idle one, with their self times and first stack, shorter
 * ones are left out, and a gap between two samples (the thread not scheduled) is listed as one.
 */
import t from 'tap';
import { stalls } from '../../bench/profile-summary.ts';

const frame = (functionName: string, url = '') => ({ functionName, url, lineNumber: 0 });
const profile = {
  nodes: [
    { id: 1, callFrame: frame('(root)'), children: [2, 3, 4] },
    { id: 2, callFrame: frame('(idle)') },
    { id: 3, callFrame: frame('flush', 'file:///x/sidecar/src/decision-log.ts'), children: [5] },
    { id: 4, callFrame: frame('(garbage collector)') },
    { id: 5, callFrame: frame('xadd', 'file:///x/node_modules/ioredis/built/index.js') },
  ],
  // idle 1 ms | busy: flush 1 ms, xadd 6 ms, GC 2 ms | idle | busy 2 ms (too short) | idle, then a 15 ms gap
  samples: [2, 3, 5, 5, 5, 4, 2, 3, 2, 2],
  timeDeltas: [1000, 1000, 2000, 2000, 2000, 2000, 1000, 2000, 1000, 15000],
  startTime: 0,
  endTime: 29000,
};

t.test('busy stretches of at least the minimum and scheduling gaps, in time order', async (t) => {
  const found = stalls(profile, 5);
  t.equal(found.length, 2);
  const [busy, gap] = found;
  t.equal(busy!.kind, 'busy');
  t.equal(busy!.atMs, 1, 'starts where its first busy sample began');
  t.equal(busy!.ms, 9, 'ends at the next idle sample');
  t.same(busy!.top.map(([, ms]) => ms), [6, 2, 1], 'self ms per function, the most first');
  t.equal(busy!.top[0]![0], 'xadd ioredis:1', 'named by function and package');
  t.match(busy!.firstStack[0], /^flush /, 'the stack of its first sample, leaf first');
  t.equal(busy!.firstStack.at(-1), '(root) (root)');
  t.equal(gap!.kind, 'gap');
  t.equal(gap!.ms, 15, 'a 15 ms gap between two samples');
  t.equal(stalls(profile, 20).length, 0, 'nothing reaches 20 ms');
  t.equal(stalls(profile, 1.5).filter((s) => s.kind === 'busy').length, 2, 'the 2 ms stretch counts at a 1.5 ms minimum');
});

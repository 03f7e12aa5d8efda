/**
 * Preloaded into the soak's processes (`NODE_OPTIONS=--import=<this file>`, bench/soak.bench.ts):
 * after every major GC (mark-sweep-compact, perf_hooks `NODE_PERFORMANCE_GC_MAJOR`) it appends
 * `{"t": <ms since the epoch>, "heapUsed": <bytes>}` to `$SOAK_GC_LOG_DIR/<pid>.jsonl` — the heap
 * V8 kept alive, read right after the collection, without the inspector. A sampled
 * `nodejs_heap_size_used_bytes` also counts garbage not yet collected (a sawtooth); this is the
 * floor of that sawtooth, where a leak shows. Does nothing when SOAK_GC_LOG_DIR is unset.
 */
import { appendFileSync } from 'node:fs';
import { join } from 'node:path';
import { PerformanceObserver, constants } from 'node:perf_hooks';
import { getHeapStatistics } from 'node:v8';

const dir = process.env.SOAK_GC_LOG_DIR;
if (dir) {
  const file = join(dir, `${process.pid}.jsonl`);
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      if ((entry as { detail?: { kind?: number } }).detail?.kind !== constants.NODE_PERFORMANCE_GC_MAJOR) continue;
      appendFileSync(file, `${JSON.stringify({ t: Date.now(), heapUsed: getHeapStatistics().used_heap_size })}\n`);
    }
  }).observe({ entryTypes: ['gc'] });
}

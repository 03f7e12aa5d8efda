/**
 * Preloaded into the sidecar by bench/memory.bench.ts (`node --expose-gc --import=<this file>`):
 * on SIGUSR2 it runs a full garbage collection (`global.gc()`, V8's `--expose-gc`) and appends
 * `{"t": <ms since the epoch>, "heapUsed", "heapTotal", "external", "arrayBuffers", "rss": <bytes>, "spaces":
 * {<V8 heap space>: <committed bytes>}}` (process.memoryUsage() and v8.getHeapSpaceStatistics() right
 * after the collection) to $HEAP_PROBE_FILE — the heap that is really kept alive, at a moment the
 * bench chooses. Does nothing when HEAP_PROBE_FILE is unset or the process lacks `--expose-gc`.
 */
import { appendFileSync } from 'node:fs';
import { getHeapSpaceStatistics } from 'node:v8';

const file = process.env.HEAP_PROBE_FILE;
const gc = (globalThis as { gc?: () => void }).gc;
if (file && gc) {
  process.on('SIGUSR2', () => {
    gc();
    const m = process.memoryUsage();
    const spaces = Object.fromEntries(getHeapSpaceStatistics().map((s) => [s.space_name, s.physical_space_size]));
    appendFileSync(file, `${JSON.stringify({ t: Date.now(), heapUsed: m.heapUsed, heapTotal: m.heapTotal, external: m.external, arrayBuffers: m.arrayBuffers, rss: m.rss, spaces })}\n`);
  });
}

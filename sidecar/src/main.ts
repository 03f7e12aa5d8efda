/**
 * Sidecar entry point: read and validate the environment (config.ts), then
 * - SIDECAR_WORKERS = 1: build, listen on SIDECAR_HOST:SIDECAR_PORT and — /metrics, /healthz,
 *   /decisions only — ADMIN_HOST:ADMIN_PORT (admin.ts), print both URLs;
 * - SIDECAR_WORKERS > 1 (default: the number of cores): this process becomes the node:cluster
 *   primary (workers.ts): it forks that many workers of this file, which share SIDECAR_PORT, and
 *   serves the admin listener itself with the workers' metrics aggregated; each worker builds and
 *   listens like the single process, without an admin listener of its own.
 * Every serving process shuts down gracefully on SIGTERM/SIGINT (stop accepting, finish in-flight
 * requests, close the upstream pool and Redis); the primary stops its workers first.
 * Exit codes: 0 after a clean shutdown, 1 when start-up fails (or a worker did not stop cleanly).
 */
import cluster from 'node:cluster';
import { loadConfig, type SidecarConfig } from './config.ts';

let config: SidecarConfig;
try {
  config = loadConfig();
} catch (err) {
  process.stderr.write(`sidecar failed to start: ${(err as Error).message}\n`);
  process.exit(1);
}

if (cluster.isPrimary && config.workers > 1) {
  const { runPrimary } = await import('./workers.ts');
  await runPrimary(config);
} else {
  await serve(config, cluster.isWorker);
}

/**
 * Build and serve one sidecar process; as a cluster worker (`worker`) without the admin listener,
 * answering the primary instead (workers.ts `serveWorker`).
 */
async function serve(config: SidecarConfig, worker: boolean): Promise<void> {
  const { buildSidecar } = await import('./app.ts');
  let app: Awaited<ReturnType<typeof buildSidecar>>;
  try {
    app = await buildSidecar(config);
    if (worker) (await import('./workers.ts')).serveWorker(app);
    const url = await app.listen({ host: config.host, port: config.port, backlog: config.server.listenBacklog });
    if (!worker) {
      const adminUrl = await app.admin.listen();
      process.stdout.write(`sidecar listening on ${url} (admin: ${adminUrl}/metrics)\n`);
    }
  } catch (err) {
    process.stderr.write(`sidecar failed to start: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  }

  let closing = false;
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    process.on(signal, () => {
      if (closing) return;
      closing = true;
      app.log.info({ signal }, 'shutting down');
      const force = setTimeout(() => process.exit(1), 10_000);
      force.unref();
      app.close().then(
        () => process.exit(0),
        () => process.exit(1),
      );
    });
  }
}

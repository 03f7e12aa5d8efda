/**
 * Sidecar entry point: read and validate the environment (config.ts), build, listen on
 * SIDECAR_HOST:SIDECAR_PORT and — /metrics, /healthz only — ADMIN_HOST:ADMIN_PORT (admin.ts), print
 * both URLs, and shut down gracefully on SIGTERM/SIGINT
 * (stop accepting, finish in-flight requests, close the upstream pool and Redis).
 * Exit codes: 0 after a clean shutdown, 1 when start-up fails.
 */
import { loadConfig } from './config.ts';
import { buildSidecar } from './app.ts';

let app: Awaited<ReturnType<typeof buildSidecar>>;
try {
  const config = loadConfig();
  app = await buildSidecar(config);
  const url = await app.listen({ host: config.host, port: config.port });
  const adminUrl = await app.admin.listen();
  process.stdout.write(`sidecar listening on ${url} (admin: ${adminUrl}/metrics)\n`);
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

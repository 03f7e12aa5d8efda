/**
 * The benchmarks' upstream: a minimal Node HTTP server answering every request with the same
 * 300-byte JSON body (a page of five works), so what is measured in front of it is the enforcement
 * point's own overhead.
 *
 * Run as its own process (`node bench/lib/upstream.ts`, so it can be pinned to the servers' CPU):
 * it listens on 127.0.0.1 (a free port), prints `{"port":<n>}` on one stdout line once listening,
 * and exits on SIGTERM.
 */
import { randomUUID } from 'node:crypto';
import { createServer, type Server } from 'node:http';

/** The upstream's answer body (JSON, about 300 bytes). */
export const UPSTREAM_BODY = JSON.stringify({ items: Array.from({ length: 5 }, (_, i) => ({ id: randomUUID(), title: `Work ${i}` })), next_cursor: null });

/** The upstream server (not yet listening): 200 application/json {@link UPSTREAM_BODY} to everything. */
export function createUpstreamServer(): Server {
  const length = Buffer.byteLength(UPSTREAM_BODY);
  const server = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': length });
      res.end(UPSTREAM_BODY);
    });
  });
  server.keepAliveTimeout = 60_000;
  return server;
}

if (import.meta.main) {
  const server = createUpstreamServer();
  server.listen(0, '127.0.0.1', () => {
    process.stdout.write(`${JSON.stringify({ port: (server.address() as { port: number }).port })}\n`);
  });
  // no graceful close: a bench's load generator may still hold thousands of connections
  process.on('SIGTERM', () => process.exit(0));
}

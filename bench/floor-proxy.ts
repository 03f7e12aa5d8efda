/**
 * The floor of a Node proxy hop (bench/sidecar.bench.ts's "Fastify + undici, no pipeline" row):
 * the sidecar's own server and client — Fastify with a wildcard route, an undici Pool to the
 * upstream, the answer buffered and sent — and nothing else: no token, no rule, no decision, no
 * assertion, no rate limit, no logging. What the sidecar costs above this row is its pipeline;
 * what this row costs is Node's HTTP parsing and writing on both sides of the hop.
 *
 * Usage: node bench/floor-proxy.ts <port> <upstream URL>; prints `listening` when ready.
 */
import Fastify from 'fastify';
import { Pool } from 'undici';

const [port, upstream] = [Number(process.argv[2]), process.argv[3]!];
const pool = new Pool(upstream, { keepAliveTimeout: 4_000 });
const host = new URL(upstream).host;
const app = Fastify({ logger: false });
app.removeAllContentTypeParsers();
app.addContentTypeParser('*', (_req, payload, done) => done(null, payload));
app.all('/*', async (request, reply) => {
  const res = await pool.request({ method: request.method as 'GET', path: request.raw.url!, headers: { host } });
  const body = Buffer.from(await res.body.arrayBuffer());
  reply.code(res.statusCode);
  const type = res.headers['content-type'];
  if (typeof type === 'string') reply.header('content-type', type);
  return reply.send(body);
});
await app.listen({ port, host: '127.0.0.1' });
console.log('listening');

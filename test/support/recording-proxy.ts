/**
 * A recording pass-through HTTP proxy: put it in front of a real service (the catalog API) to see
 * exactly which requests reached it — method, raw target and headers as received — while the
 * service answers them. Nothing is answered by the proxy itself (the target unreachable → 502), and
 * bodies stream through unchanged in both directions.
 *
 * Why our own: a recorder needs the raw target and header list as they arrived, which general proxy
 * libraries (http-proxy and kin) rewrite; this is ~60 lines of node:http in the test process.
 */
import { createServer, request as httpRequest, Agent, type IncomingHttpHeaders } from 'node:http';

/** One request as the proxy received it. */
export type Recorded = { method: string; url: string; headers: IncomingHttpHeaders };

/** A running recording proxy. */
export type RecordingProxy = {
  /** `http://127.0.0.1:<port>` */
  url: string;
  port: number;
  /** Every request received so far, in arrival order. */
  received: Recorded[];
  /** Where requests go (`http://host:port`); may be set after start, before the first request. */
  target: string;
  close(): Promise<void>;
};

/** Connection-level fields (RFC 9110 §7.6.1) that are the proxy's own on each hop. */
const HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'upgrade', 'trailer']);

function withoutHop(rawHeaders: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < rawHeaders.length; i += 2) if (!HOP.has(rawHeaders[i]!.toLowerCase())) out.push(rawHeaders[i]!, rawHeaders[i + 1]!);
  return out;
}

/**
 * Start a recording proxy on an ephemeral loopback port.
 * @param target where requests go (`http://host:port`), or '' to set `proxy.target` later.
 */
export async function startRecordingProxy(target = ''): Promise<RecordingProxy> {
  const agent = new Agent({ keepAlive: true });
  const state = { target };
  const received: Recorded[] = [];
  const server = createServer((req, res) => {
    received.push({ method: req.method!, url: req.url!, headers: req.headers });
    const to = new URL(state.target);
    const up = httpRequest(
      { host: to.hostname, port: to.port, method: req.method, path: req.url, headers: withoutHop(req.rawHeaders), agent },
      (upRes) => {
        res.writeHead(upRes.statusCode!, withoutHop(upRes.rawHeaders));
        upRes.pipe(res);
      },
    );
    up.on('error', () => {
      if (!res.headersSent) res.writeHead(502).end();
      else res.destroy();
    });
    req.pipe(up);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    received,
    get target() {
      return state.target;
    },
    set target(v: string) {
      state.target = v;
    },
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
      agent.destroy();
    },
  };
}

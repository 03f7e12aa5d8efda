/**
 * A TCP fault proxy for the fault-matrix suites (test/faults/): put it between a client and a real
 * service (Redis, OpenFGA, PostgreSQL, LDAPS, SMTP, an HTTP server) and switch what the network
 * does, at any time:
 *
 * - `pass`      — bytes flow both ways (held bytes, if any, are released in order);
 * - `refuse`    — the service is down: the listening socket is closed (new connections get
 *                 ECONNREFUSED) and every open connection is reset;
 * - `blackhole` — a partition: new connections are accepted (the kernel does that) but nothing is
 *                 forwarded or answered; open connections go silent. Bytes are held, not lost,
 *                 as TCP would retransmit them once the partition heals (`pass` again);
 * - `delay`     — every chunk, both ways, is forwarded `delayMs` after it arrived (order kept).
 *
 * Why our own: the npm TCP proxies (`tcp-proxy.js`, `node-tcp-proxy`) only pass bytes; Toxiproxy
 * (`toxiproxy-node-client`) needs its Go server running as one more service. This one is ~150 lines
 * of node:net in the test process.
 */
import { createServer, connect, type Server, type Socket } from 'node:net';

/** What the proxy does with traffic. */
export type FaultMode = 'pass' | 'refuse' | 'blackhole' | { delayMs: number };

/** A running proxy. */
export type FaultProxy = {
  /** The loopback port clients connect to (kept across `refuse` → `pass`). */
  port: number;
  /** `host:port` of the proxy, e.g. to put into a URL. */
  address: string;
  /** The current mode. */
  readonly mode: FaultMode;
  /** Connections accepted so far (all modes but `refuse`). */
  readonly accepted: number;
  /** Switch the mode; resolves once it is in force (e.g. the port refuses). */
  set(mode: FaultMode): Promise<void>;
  /** Reset every open connection (the service restarted), keeping the mode. */
  dropConnections(): void;
  /** Stop listening and reset every connection. */
  close(): Promise<void>;
};

type Pending = { chunk: Buffer; arrived: number; at: number };

/** One direction of a proxied connection: a FIFO of chunks with release times. */
class Lane {
  readonly #queue: Pending[] = [];
  #timer: NodeJS.Timeout | undefined;
  #ended = false;
  readonly #to: Socket;
  constructor(to: Socket) {
    this.#to = to;
  }
  push(chunk: Buffer, arrived: number, at: number): void {
    const last = this.#queue.at(-1)?.at ?? 0;
    this.#queue.push({ chunk, arrived, at: Math.max(at, last) });
    this.pump();
  }
  end(): void {
    this.#ended = true;
    this.pump();
  }
  /** Give every held chunk a new release time (a mode change). */
  retime(at: (arrived: number) => number): void {
    let last = 0;
    for (const p of this.#queue) last = p.at = Math.max(at(p.arrived), last);
    this.pump();
  }
  pump(): void {
    clearTimeout(this.#timer);
    const now = Date.now();
    while (this.#queue.length && this.#queue[0]!.at <= now) {
      if (this.#to.destroyed) return;
      this.#to.write(this.#queue.shift()!.chunk);
    }
    const next = this.#queue[0];
    if (next && Number.isFinite(next.at)) this.#timer = setTimeout(() => this.pump(), next.at - now);
    else if (!next && this.#ended && !this.#to.destroyed) this.#to.end();
  }
  stop(): void {
    clearTimeout(this.#timer);
    this.#queue.length = 0;
  }
}

/**
 * Start a proxy on an ephemeral loopback port in front of `target` (mode `pass`).
 * @param target the real service, e.g. `{ host: '127.0.0.1', port: 6379 }`
 */
export async function startFaultProxy(target: { host: string; port: number }): Promise<FaultProxy> {
  let mode: FaultMode = 'pass';
  let accepted = 0;
  const conns = new Set<{ client: Socket; upstream: Socket; up: Lane; down: Lane }>();
  /** Release time of a chunk that arrives now (held: Infinity). */
  const releaseAt = (arrived: number): number =>
    mode === 'blackhole' ? Infinity : typeof mode === 'object' ? arrived + mode.delayMs : arrived;

  const onConnection = (client: Socket) => {
    accepted++;
    const upstream = connect(target.port, target.host);
    const up = new Lane(upstream);
    const down = new Lane(client);
    const c = { client, upstream, up, down };
    conns.add(c);
    const kill = () => {
      up.stop();
      down.stop();
      client.destroy();
      upstream.destroy();
      conns.delete(c);
    };
    const now = Date.now;
    client.on('data', (d: Buffer) => up.push(d, now(), releaseAt(now())));
    upstream.on('data', (d: Buffer) => down.push(d, now(), releaseAt(now())));
    client.on('end', () => up.end());
    upstream.on('end', () => down.end());
    client.on('error', kill);
    upstream.on('error', kill);
    client.on('close', kill);
    // the service closed: pass that on once the bytes before it are delivered
    upstream.on('close', () => down.end());
  };

  let server: Server = createServer(onConnection);
  const listen = (port: number) =>
    new Promise<number>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => {
        server.off('error', reject);
        resolve((server.address() as { port: number }).port);
      });
    });
  const port = await listen(0);
  let listening = true;

  const dropConnections = () => {
    for (const c of [...conns]) {
      c.up.stop();
      c.down.stop();
      c.client.resetAndDestroy();
      c.upstream.destroy();
    }
    conns.clear();
  };
  const stopListening = () =>
    new Promise<void>((r) => {
      if (!listening) return r();
      listening = false;
      server.close(() => r());
    });

  return {
    port,
    address: `127.0.0.1:${port}`,
    get mode() {
      return mode;
    },
    get accepted() {
      return accepted;
    },
    async set(next) {
      mode = next;
      if (next === 'refuse') {
        await Promise.all([stopListening(), Promise.resolve(dropConnections())]);
        return;
      }
      if (!listening) {
        server = createServer(onConnection);
        await listen(port);
        listening = true;
      }
      for (const c of conns) {
        c.up.retime(releaseAt);
        c.down.retime(releaseAt);
      }
    },
    dropConnections,
    async close() {
      dropConnections();
      await stopListening();
    },
  };
}

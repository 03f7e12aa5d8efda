/**
 * A private Redis Cluster for the suites (the same shape as `start_redis_cluster` in scripts/lib.sh):
 * six Debian redis-server processes on loopback — 3 masters, each with one replica — in cluster
 * mode on random free ports (each port and its cluster-bus port, port + 10000, checked free), in a
 * temporary directory, without persistence; created with `redis-cli --cluster create
 * --cluster-replicas 1` and ready once every node says `cluster_state:ok` and every replica is in
 * sync. `killMaster` SIGKILLs the
 * master serving a key and waits until its replica has taken the slots over.
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import type { RedisConnectionConfig, RedisEndpoint } from '../../policies/src/redis.ts';

const run = promisify(execFile);

/** A running private cluster. */
export type RedisCluster = {
  /** every node (masters and replicas) */
  nodes: RedisEndpoint[];
  /** the private directory: `<dir>/<port>/redis.log` is each node's log */
  dir: string;
  /** the seed list as `REDIS_CLUSTER_NODES` takes it (`127.0.0.1:p1,…`) */
  seeds: string;
  /** for policies/src/redis.ts `createRedisClient` (url only lends credentials: none) */
  connection: RedisConnectionConfig;
  /** `redis-cli -p <port> <args…>` on a live node; stdout */
  cli(args: string[], port?: number): Promise<string>;
  /** the port of the master serving `key`'s slot now */
  masterOf(key: string): Promise<number>;
  /**
   * SIGKILL the master serving `key` and wait (≤ `timeoutMs`, default 15 000 ms) until another node
   * serves its slot and the cluster is ok again.
   * @returns the killed port and the port of the node that took over
   * @throws when the failover does not complete in time
   */
  killMaster(key: string, timeoutMs?: number): Promise<{ killed: number; promoted: number }>;
  /** kill every node and remove the directory */
  stop(): Promise<void>;
};

async function canBind(port: number): Promise<boolean> {
  return new Promise((res) => {
    const srv = createServer();
    srv.once('error', () => res(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => res(true)));
  });
}

/**
 * A random port in 16000…22767 whose cluster-bus port (+10000, so 26000…32767) is free too: both
 * below Linux's ephemeral range (32768–60999), where an outgoing connection can take a port checked
 * free before the node binds it, and clear of the harnesses' 10000–15999 (test/e2e/cluster-stack.ts).
 */
async function clusterPort(taken: Set<number>): Promise<number> {
  for (let i = 0; i < 200; i++) {
    const port = 16000 + Math.floor(Math.random() * 6768);
    if (taken.has(port) || taken.has(port + 10000) || taken.has(port - 10000)) continue;
    if ((await canBind(port)) && (await canBind(port + 10000))) return port;
  }
  throw new Error('no free port pair for a Redis Cluster node');
}

/**
 * Start the cluster.
 * @param opts.nodeTimeoutMs `cluster-node-timeout` (default 1000 ms: a killed master is replaced within ~2–3 s)
 * @param opts.redisServer the binary (default `redis-server` on PATH; scripts/lib.sh installs Debian's)
 * @throws when a node does not start or the cluster is not ok within 20 s (the processes are killed)
 */
export async function startRedisCluster(opts: { nodeTimeoutMs?: number; redisServer?: string } = {}): Promise<RedisCluster> {
  const dir = mkdtempSync(join(tmpdir(), 'redis-cluster-'));
  const taken = new Set<number>();
  const ports: number[] = [];
  for (let i = 0; i < 6; i++) {
    const p = await clusterPort(taken);
    taken.add(p);
    ports.push(p);
  }
  const procs = new Map<number, ChildProcess>();
  const alive = new Set<number>(ports);
  const stop = async () => {
    for (const [port, child] of procs) {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGKILL');
        await exited;
      }
      alive.delete(port);
    }
    rmSync(dir, { recursive: true, force: true });
  };
  const cli = async (args: string[], port = [...alive][0]!) => (await run('redis-cli', ['-p', String(port), ...args], { timeout: 5000 })).stdout;
  try {
    for (const port of ports) {
      const d = join(dir, String(port));
      mkdirSync(d);
      // prettier-ignore
      const child = spawn(opts.redisServer ?? 'redis-server', [
        '--port', String(port), '--bind', '127.0.0.1', '--dir', d,
        '--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf',
        '--cluster-node-timeout', String(opts.nodeTimeoutMs ?? 1000),
        '--save', '', '--appendonly', 'no', '--logfile', join(d, 'redis.log'),
        // replicas sync at once, and a replica may always take over (a test kills masters early)
        '--repl-diskless-sync-delay', '0', '--cluster-replica-validity-factor', '0',
      ], { stdio: 'ignore' });
      child.once('exit', () => alive.delete(port));
      procs.set(port, child);
    }
    const deadline = Date.now() + 20_000;
    for (const port of ports) {
      while ((await cli(['ping'], port).catch(() => '')).trim() !== 'PONG') {
        if (Date.now() > deadline || !alive.has(port)) throw new Error(`redis-server on ${port} did not start (see ${dir}/${port}/redis.log)`);
        await sleep(50);
      }
    }
    await run('redis-cli', ['--cluster', 'create', ...ports.map((p) => `127.0.0.1:${p}`), '--cluster-replicas', '1', '--cluster-yes'], { timeout: 20_000 });
    for (const port of ports) {
      while (!(await cli(['cluster', 'info'], port).catch(() => '')).includes('cluster_state:ok')) {
        if (Date.now() > deadline) throw new Error(`the Redis Cluster did not become ok (node ${port})`);
        await sleep(100);
      }
    }
    // every replica in sync with its master (else it could not take over)
    for (const port of ports) {
      for (;;) {
        const info = await cli(['info', 'replication'], port).catch(() => '');
        if (info.includes('role:master') || info.includes('master_link_status:up')) break;
        if (Date.now() > deadline) throw new Error(`the replica on ${port} did not sync`);
        await sleep(100);
      }
    }
  } catch (err) {
    await stop();
    throw err;
  }
  const nodes = ports.map((port) => ({ host: '127.0.0.1', port }));

  const masterOf = async (key: string): Promise<number> => {
    const slot = Number((await cli(['cluster', 'keyslot', key])).trim());
    for (const line of (await cli(['cluster', 'nodes'])).split('\n')) {
      const f = line.split(' ');
      if (f.length < 9 || !f[2]!.includes('master') || f[2]!.includes('fail') || f[7] !== 'connected') continue;
      for (const range of f.slice(8)) {
        const [lo, hi = lo] = range.split('-').map(Number);
        if (slot >= lo! && slot <= hi!) return Number(f[1]!.split(':')[1]!.split('@')[0]);
      }
    }
    throw new Error(`no live master serves slot ${slot}`);
  };

  return {
    nodes,
    dir,
    seeds: nodes.map((n) => `${n.host}:${n.port}`).join(','),
    connection: { url: 'redis://127.0.0.1:6379', clusterNodes: nodes },
    cli,
    masterOf,
    async killMaster(key, timeoutMs = 15_000) {
      const killed = await masterOf(key);
      const child = procs.get(killed)!;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGKILL');
      await exited;
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const promoted = await masterOf(key).catch(() => killed);
        const ok = promoted !== killed && (await cli(['cluster', 'info'], promoted).catch(() => '')).includes('cluster_state:ok');
        if (ok) return { killed, promoted };
        if (Date.now() > deadline) throw new Error(`no failover of ${killed} within ${timeoutMs} ms`);
        await sleep(100);
      }
    },
    stop,
  };
}

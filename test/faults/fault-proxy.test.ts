/**
 * The fault proxy itself (test/support/fault-proxy.ts) against a real echo server: pass forwards
 * both ways, refuse makes the port refuse and resets open connections, blackhole accepts and stays
 * silent — and releases what it held, in order, on pass — and delay forwards no sooner than asked.
 */
import t from 'tap';
import { connect, createServer, type Socket } from 'node:net';
import { startFaultProxy } from '../support/fault-proxy.ts';

const echo = createServer((s) => s.on('error', () => undefined).pipe(s));
t.before(() => new Promise<void>((r) => echo.listen(0, '127.0.0.1', r)));
t.teardown(() => new Promise<void>((r) => echo.close(() => r())));

/** Connect to `port`; resolves with the socket or the connect error's code. */
const dial = (port: number) =>
  new Promise<Socket | string>((resolve) => {
    const s = connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.on('error', () => undefined); // resets are what `refuse` does
      resolve(s);
    });
    s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
  });
/** Collect what arrives on `s` for `ms`. */
const collect = async (s: Socket, ms: number) => {
  let got = '';
  const on = (d: Buffer) => (got += d);
  s.on('data', on);
  await new Promise((r) => setTimeout(r, ms));
  s.off('data', on);
  return got;
};

t.test('pass, refuse, blackhole, delay', async (t) => {
  const proxy = await startFaultProxy({ host: '127.0.0.1', port: (echo.address() as { port: number }).port });
  t.teardown(() => proxy.close());

  const a = (await dial(proxy.port)) as Socket;
  a.write('hello');
  t.equal(await collect(a, 100), 'hello', 'pass: echoed');

  await proxy.set('blackhole');
  const b = await dial(proxy.port);
  t.type(b, 'object', 'blackhole: a new connection is accepted');
  a.write('held-1 ');
  a.write('held-2');
  t.equal(await collect(a, 200), '', 'blackhole: nothing comes back');
  const released = collect(a, 200);
  await proxy.set('pass');
  t.equal(await released, 'held-1 held-2', 'pass again: the held bytes arrive, in order');

  await proxy.set({ delayMs: 300 });
  const sent = Date.now();
  a.write('late');
  let got = '';
  a.on('data', (d) => (got += d));
  while (!got.includes('late') && Date.now() - sent < 2000) await new Promise((r) => setTimeout(r, 10));
  const took = Date.now() - sent;
  t.ok(took >= 590, `delay: ${took} ms for a round trip (300 ms each way)`);
  a.removeAllListeners('data');

  const closed = new Promise((r) => a.once('close', r)); // (events.once would reject on the reset's 'error')
  await proxy.set('refuse');
  await closed;
  t.pass('refuse: open connections are reset');
  t.equal(await dial(proxy.port), 'ECONNREFUSED', 'refuse: new connections are refused');
  await proxy.set('pass');
  const c = (await dial(proxy.port)) as Socket;
  c.write('again');
  t.equal(await collect(c, 100), 'again', 'pass: the same port works again');
  c.destroy();
  (b as Socket).destroy();
  t.ok(proxy.accepted >= 3, `${proxy.accepted} connections accepted`);
});

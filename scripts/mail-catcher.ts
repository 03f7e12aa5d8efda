/**
 * A local mail catcher for development and tests: an SMTP server (the `smtp-server` package) on
 * loopback that accepts every message and stores it as one `.eml` file (RFC 5322 text, as received)
 * under a folder — nothing leaves the machine.
 *
 * CLI: `node scripts/mail-catcher.ts [--host 127.0.0.1] [--port 2525] [--dir .data/mail]`; prints
 * `mail catcher listening on <host>:<port>, storing mail in <dir>` once ready (`--host 0.0.0.0` only
 * inside a container network, e.g. docker-compose.yml). Files are named
 * `<ms since the epoch>-<sequence>.eml` and written atomically (temp file + rename).
 */
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { SMTPServer } from 'smtp-server';

const { values } = parseArgs({ options: { host: { type: 'string', default: '127.0.0.1' }, port: { type: 'string', default: '2525' }, dir: { type: 'string', default: '.data/mail' } } });
const dir = resolve(values.dir!);
mkdirSync(dir, { recursive: true });
let seq = 0;

const server = new SMTPServer({
  authOptional: true,
  disabledCommands: ['AUTH', 'STARTTLS'],
  banner: 'music-publishing mail catcher',
  size: 10 * 1024 * 1024,
  onData(stream, _session, callback) {
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => {
      const name = `${Date.now()}-${String(++seq).padStart(6, '0')}.eml`;
      const tmp = join(dir, `.${name}.tmp`);
      writeFileSync(tmp, Buffer.concat(chunks));
      renameSync(tmp, join(dir, name));
      callback();
    });
    stream.on('error', callback);
  },
});
server.on('error', (err) => console.error(`mail catcher: ${err.message}`));
server.listen(Number(values.port), values.host, () => {
  const port = (server.server.address() as { port: number }).port;
  console.log(`mail catcher listening on ${values.host}:${port}, storing mail in ${dir}`);
});
const stop = () => server.close(() => process.exit(0));
process.once('SIGTERM', stop);
process.once('SIGINT', stop);

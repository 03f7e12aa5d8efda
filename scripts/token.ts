/**
 * CLI: print an access token for a seeded user, signed by the development issuer.
 * Usage: npm run -s token -- <email> [ttlSeconds]
 * Exit 2 with a message on stderr when the email is not a seeded user.
 */
import { devIssuerFiles, ensureKeyPair, signAccessToken } from './dev-issuer.ts';
import { USERS } from '../migrations/seed/demo.ts';

const [email, ttl] = process.argv.slice(2);
const user = USERS.find((u) => u.email.toLowerCase() === (email ?? '').toLowerCase());
if (!user) {
  process.stderr.write(`usage: npm run -s token -- <email>\nseeded users: ${USERS.map((u) => u.email).join(', ')}\n`);
  process.exit(2);
}
const files = devIssuerFiles(process.env.DATA_DIR ?? '.data');
await ensureKeyPair(files.pem, files.jwks);
process.stdout.write(`${await signAccessToken(files.pem, { sub: user.id, email: user.email }, ttl ? Number(ttl) : 3600)}\n`);

/**
 * CLI: create (once) the development issuer's key pair and the sidecar's assertion-signing key
 * under the data directory. Usage: node scripts/keys.ts [dataDir]   (default .data)
 */
import { join } from 'node:path';
import { devIssuerFiles, ensureKeyPair } from './dev-issuer.ts';

const dataDir = process.argv[2] ?? process.env.DATA_DIR ?? '.data';
const issuer = devIssuerFiles(dataDir);
await ensureKeyPair(issuer.pem, issuer.jwks);
await ensureKeyPair(join(dataDir, 'sidecar-signing-key.pem'));

/**
 * Key management: `npm run keys -- <command>`.
 *
 *   init [dataDir]      create what the stack needs on disk, once (idempotent): the issuer's
 *                       key-encryption key (ISSUER_KEK_FILE, default <dataDir>/issuer-kek.key) and the
 *                       sidecar's assertion signing key (<dataDir>/sidecar-signing-key.pem, Ed25519 → EdDSA;
 *                       an ES256 P-256 key made before keeps working)
 *   list                the issuer's signing keys: kid, status, dates
 *   rotate [--force]    next → active, active → retired (kept in the JWKS until every token it
 *                       signed has expired), a new next key; refuses a next key published for less
 *                       than ISSUER_KEY_PUBLISH_AHEAD_S unless --force
 *   ensure              create the active and next keys when missing (the catalog API also does on
 *                       its first start; `npm start` does it before the seed seals anything, so
 *                       the keys tell which KEK a database was set up under)
 *   check               whether ISSUER_KEK_FILE opens the active and next keys; exit status 3 when
 *                       one was sealed under another key-encryption key (lost or replaced KEK)
 *   reset               recovery from that: retire/delete the keys this KEK cannot open and create
 *                       new ones (tokens already issued stay valid until they expire)
 *
 * `list`, `rotate`, `ensure`, `check` and `reset` use AUTH_DATABASE_URL and ISSUER_KEK_FILE (catalog-api/src/config.ts). Running
 * catalog API processes pick a rotation up within ISSUER_KEY_RELOAD_MS.
 */
import { mkdirSync, existsSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { Command } from 'commander';
import { exportPKCS8, generateKeyPair } from 'jose';
import { loadConfig } from '../catalog-api/src/config.ts';
import { createOrm } from '../catalog-api/src/db/orm.ts';
import { ensureKekFile, loadKek } from '../catalog-api/src/modules/auth/secrets.ts';
import { checkKeys, ensureKeys, listKeys, replaceUnreadableKeys, rotateKeys } from '../catalog-api/src/modules/auth/keys/key-store.ts';

/**
 * Create an Ed25519 private key (PKCS#8 PEM, mode 0600; the sidecar signs EdDSA assertions with it,
 * RFC 8037) at `file` unless one exists. @returns true when written
 */
async function ensureSigningKeyFile(file: string): Promise<boolean> {
  if (existsSync(file)) return false;
  mkdirSync(dirname(file), { recursive: true });
  const { privateKey } = await generateKeyPair('EdDSA', { extractable: true });
  writeFileSync(file, await exportPKCS8(privateKey), { mode: 0o600 });
  return true;
}

async function withAuthOrm<T>(fn: (orm: Awaited<ReturnType<typeof createOrm>>) => Promise<T>): Promise<T> {
  const orm = await createOrm(loadConfig(), 'auth');
  try {
    return await fn(orm);
  } finally {
    await orm.close(true);
  }
}

const program = new Command('keys').description('Manage the issuer and sidecar keys').exitOverride();

program
  .command('init')
  .argument('[dataDir]', 'data directory', process.env.DATA_DIR ?? '.data')
  .description('create the key-encryption key and the sidecar signing key when missing')
  .action(async (dataDir: string) => {
    const kekFile = process.env.ISSUER_KEK_FILE || join(dataDir, 'issuer-kek.key');
    if (ensureKekFile(kekFile)) console.log(`created the key-encryption key ${resolve(kekFile)}`);
    const sidecarKey = join(dataDir, 'sidecar-signing-key.pem');
    if (await ensureSigningKeyFile(sidecarKey)) console.log(`created the sidecar signing key ${resolve(sidecarKey)}`);
  });

program
  .command('list')
  .description("list the issuer's signing keys")
  .action(async () => {
    const keys = await withAuthOrm(listKeys);
    for (const k of keys) {
      const when = [`created ${k.createdAt.toISOString()}`];
      if (k.activatedAt) when.push(`active since ${k.activatedAt.toISOString()}`);
      if (k.expiresAt) when.push(`leaves the JWKS ${k.expiresAt.toISOString()}`);
      console.log(`${k.status.padEnd(7)} ${k.kid}  ${k.alg}  ${when.join(', ')}`);
    }
    if (keys.length === 0) console.log('no keys yet: the catalog API creates them on its first start');
  });

program
  .command('rotate')
  .option('--force', 'promote a next key that has not been published for ISSUER_KEY_PUBLISH_AHEAD_S yet')
  .description('rotate the issuer signing key')
  .action(async (opts: { force?: boolean }) => {
    const config = loadConfig();
    const kek = loadKek(config.ISSUER_KEK_FILE);
    const r = await withAuthOrm((orm) =>
      rotateKeys(orm, kek, { publishAheadMs: config.ISSUER_KEY_PUBLISH_AHEAD_S * 1000, accessTokenTtlMs: config.ACCESS_TOKEN_TTL_S * 1000, force: opts.force }),
    );
    console.log(`active: ${r.activated}\nretired: ${r.retired ?? '(none)'}\nnext: ${r.next}${r.deleted.length ? `\ndeleted: ${r.deleted.join(', ')}` : ''}`);
  });

program
  .command('ensure')
  .description('create the active and next keys when missing')
  .action(async () => {
    const created = await withAuthOrm((orm) => ensureKeys(orm, loadKek(loadConfig().ISSUER_KEK_FILE)));
    if (created.length) console.log(`created: ${created.join(', ')}`);
  });

program
  .command('check')
  .description('check that the key-encryption key opens the active and next keys (exit 3 when not)')
  .action(async () => {
    const keys = await withAuthOrm((orm) => checkKeys(orm, loadKek(loadConfig().ISSUER_KEK_FILE)));
    for (const k of keys) console.log(`${k.status.padEnd(7)} ${k.kid}  ${k.readable ? 'opens' : 'sealed under another key-encryption key'}`);
    if (keys.length === 0) console.log('no keys yet: the catalog API creates them on its first start');
    if (keys.some((k) => !k.readable)) {
      console.error('keys: ISSUER_KEK_FILE cannot open these keys, so sign-in answers 503; `npm run keys -- reset` replaces them');
      process.exitCode = 3;
    }
  });

program
  .command('reset')
  .description('replace the keys the key-encryption key cannot open (after losing or replacing it)')
  .action(async () => {
    const config = loadConfig();
    const r = await withAuthOrm((orm) => replaceUnreadableKeys(orm, loadKek(config.ISSUER_KEK_FILE), { accessTokenTtlMs: config.ACCESS_TOKEN_TTL_S * 1000 }));
    const list = (kids: string[]) => (kids.length ? kids.join(', ') : '(none)');
    console.log(`retired: ${list(r.retired)}\ndeleted: ${list(r.deleted)}\ncreated: ${list(r.created)}`);
  });

try {
  await program.parseAsync(process.argv);
} catch (err) {
  const e = err as { code?: string; exitCode?: number; message?: string };
  if (e.code?.startsWith('commander.')) process.exit(e.exitCode ?? 2);
  console.error(`keys: ${e.message ?? String(err)}`);
  process.exit(1);
}

/**
 * Assembles the sign-in service for one catalog API process: the key-encryption key, the issuer's
 * keys (loaded at start, created on a fresh database), the revocation publisher, the mail queue,
 * the directory gateway and sync job, and the services the routes call.
 */
import type { RedisClient } from '../../../../policies/src/redis.ts';
import type { CatalogConfig } from '../../config.ts';
import type { Orm } from '../../db/orm.ts';
import { createMailer, type Mailer } from '../../mail/mailer.ts';
import { createDirectoryGateway, type DirectoryGateway } from '../directory/gateway.ts';
import { startDirectorySync } from '../directory/sync.ts';
import { createAccountService, type AccountService } from './account.service.ts';
import type { AuthDeps, Log } from './deps.ts';
import { createIssuerKeys } from './keys/key-store.ts';
import { RevocationPublisher } from './revocations.ts';
import { loadKek } from './secrets.ts';
import { createSignInService, type SignInService } from './sign-in.service.ts';

/** The assembled sign-in service. */
export type AuthModule = {
  deps: AuthDeps;
  signIn: SignInService;
  account: AccountService;
  /** Load (on a fresh database: create) the signing keys and start the timers (revocation publisher, directory sync). */
  start(): void;
  /** Stop the timers, wait for work in flight, flush the mail queue. */
  close(): Promise<void>;
};

/** Collaborators the module does not build itself (tests may inject their own). */
export type AuthModuleParts = {
  /** the `catalog_auth` pool */
  orm: Orm;
  redis: RedisClient;
  flushOutbox: () => Promise<void>;
  log: Log;
  mailer?: Mailer;
  directory?: DirectoryGateway;
};

/**
 * Build the sign-in service (no database access yet: the API may start before PostgreSQL).
 * @throws Error when the KEK file cannot be read
 */
export async function createAuthModule(config: CatalogConfig, parts: AuthModuleParts): Promise<AuthModule> {
  const kek = loadKek(config.ISSUER_KEK_FILE);
  const keys = createIssuerKeys({
    orm: parts.orm,
    kek,
    reloadMs: config.ISSUER_KEY_RELOAD_MS,
    onError: (err) => parts.log.warn({ err: { message: (err as Error).message } }, 'issuer keys: a load failed (a failed reload keeps the previous set) or the active key cannot sign'),
  });
  const accessTokenTtlMs = config.ACCESS_TOKEN_TTL_S * 1000;
  const revocations = new RevocationPublisher({
    orm: parts.orm,
    redis: parts.redis,
    accessTokenTtlMs,
    intervalMs: config.REVOCATION_PUBLISH_INTERVAL_MS,
    log: parts.log,
  });
  const mailer = parts.mailer ?? createMailer({ smtpUrl: config.SMTP_URL, from: config.MAIL_FROM, log: parts.log, timeoutMs: config.SMTP_TIMEOUT_MS });
  const deps: AuthDeps = {
    orm: parts.orm,
    keys,
    kek,
    tokens: { issuer: config.JWT_ISSUER.replace(/\/+$/, ''), audience: config.JWT_AUDIENCE, ttlSeconds: config.ACCESS_TOKEN_TTL_S },
    redis: parts.redis,
    revocations,
    mailer,
    directory: parts.directory ?? createDirectoryGateway(),
    flushOutbox: parts.flushOutbox,
    ttl: {
      sessionMs: config.SESSION_MAX_AGE_S * 1000,
      mfaChallengeMs: 5 * 60_000,
      passwordResetMs: 3_600_000,
      emailVerificationMs: 24 * 3_600_000,
    },
    appBaseUrl: config.APP_BASE_URL.replace(/\/+$/, ''),
    log: parts.log,
  };
  let sync: { stop(): Promise<void> } | null = null;
  const account = createAccountService(deps);
  return {
    deps,
    signIn: createSignInService(deps),
    account,
    start() {
      // load (and on a fresh database create) the signing keys now rather than on the first sign-in
      keys.reload().catch((err: unknown) => parts.log.warn({ err: { message: (err as Error).message } }, 'issuer keys not loaded yet; retrying on use'));
      revocations.start();
      sync ??= startDirectorySync(deps, config.DIRECTORY_SYNC_INTERVAL_MS);
    },
    async close() {
      await sync?.stop();
      await revocations.stop();
      await account.idle();
      await keys.close();
      if (!parts.mailer) await mailer.close();
    },
  };
}
